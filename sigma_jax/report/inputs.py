"""The SIGMA entry, validated once: arguments, the observed subset, value checks, and the finished report."""

from __future__ import annotations

import os
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sigma_jax import _checks
from sigma_jax.report.assemble import SigmaReport, report_from_stats  # noqa: F401 (examples)
from sigma_jax.report.stats import SigmaStats  # noqa: F401 (examples)

__all__ = ["SigmaInputs", "check_scalars", "resolve_subset", "resolve_inputs", "validate_rows", "IntervalWarning",
           "check_finite"]


class SigmaInputs(NamedTuple):
    """Validated arguments of a SIGMA call (see :func:`resolve_inputs`)."""

    embeddings: Any
    idx: Any
    n: int
    dim: int
    n_sub: int
    n_total: int


def check_scalars(delta, rho, level) -> None:
    """Reject a non-positive / non-finite ``delta`` or ``rho`` and a ``level`` outside (0, 1).

    Example:
        >>> check_scalars(1e-3, 1.0, 1.5)
        Traceback (most recent call last):
        ...
        ValueError: `level` must lie in (0, 1), got 1.5.
    """
    for name, v in (("delta", delta), ("rho", rho)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not np.isfinite(v) \
                or v <= 0:
            raise ValueError(f"`{name}` must be a positive finite Python float, got {v!r}.")
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"`level` must lie in (0, 1), got {level}.")


def resolve_subset(subset, n: int, key=None):
    """Turn ``subset`` (None | int n_A | indices) into an index array (or None for all rows).

    The same ``key`` and ``n`` give the same indices: use one key per run so every
    generation is measured on the same subset positions, as SIGMA prescribes.

    Example:
        >>> idx = resolve_subset(3, 10, jax.random.key(0))
        >>> idx.shape
        (3,)
    """
    if subset is None:
        return None
    if isinstance(subset, (int, np.integer)) and not isinstance(subset, bool):
        n_a = int(subset)
        if n_a <= 0:
            raise ValueError(f"`subset` must be a positive number of rows, got {n_a}.")
        if n_a > n:
            raise ValueError(f"`subset`={n_a} exceeds the number of rows n={n}; choose subset <= n.")
        if key is None:
            raise ValueError("`subset` given as a count needs `key` (e.g. `key=jax.random.key(0)`) to draw the rows; "
                             "reuse the same key every generation so the subset stays fixed.")
        if n_a == n:
            return None
        return jnp.sort(jax.random.choice(key, n, (n_a,), replace=False))
    idx = subset if not isinstance(subset, (list, tuple)) else np.asarray(subset)
    if not hasattr(idx, "dtype") or not np.issubdtype(np.dtype(idx.dtype), np.integer):
        raise TypeError(f"`subset` must be None, an int n_A, or a 1-D integer index array; got {type(subset).__name__}"
                        f"{' of dtype ' + str(idx.dtype) if hasattr(idx, 'dtype') else ''}.")
    if idx.ndim != 1 or idx.shape[0] == 0:
        raise ValueError(f"`subset` indices must be a non-empty 1-D array, got shape {tuple(idx.shape)}.")
    if _checks.is_concrete(idx):
        host = np.asarray(idx)
        if host.min() < 0 or host.max() >= n:
            raise ValueError(f"`subset` indices must lie in [0, {n}); got range [{host.min()}, {host.max()}].")
        if np.unique(host).size != host.size:
            raise ValueError("`subset` indices contain duplicates; SIGMA samples rows without replacement.")
    return idx


def resolve_inputs(embeddings, *, n_total=None, subset=None, key=None, delta=1e-3, rho=1.0, level=0.95,
                   ridge_only: bool = False, n_rows: int | None = None) -> SigmaInputs:
    """Validate a SIGMA call's arguments once: array, scalars, ``n_total``, the subset, ``n_A > m``.

    ``embeddings`` may be a ``.npy``/``.npz`` path (opened memory-mapped).  ``n_rows`` is the
    true row count of an array already zero-padded (sharded inputs).

    Example:
        >>> inp = resolve_inputs(np.ones((10, 3), np.float32), subset=5, key=jax.random.key(0), n_total=20)
        >>> inp.n_sub, inp.n_total, inp.dim
        (5, 20, 3)
    """
    if isinstance(embeddings, (str, os.PathLike)):
        from sigma_jax._io import load_embeddings

        embeddings = load_embeddings(embeddings)
    embeddings = _checks.check_float_array(embeddings, "embeddings")
    check_scalars(delta, rho, level)
    n_in, m = embeddings.shape
    n = n_in if n_rows is None else int(n_rows)
    if not 0 < n <= n_in:
        raise ValueError(f"`n_rows`={n_rows} must lie in [1, {n_in}] (the true number of rows before zero padding).")
    n_total = n if n_total is None else int(n_total)
    if n_total < n:
        raise ValueError(f"`n_total`={n_total} is smaller than the number of rows n={n}; n_total counts all texts "
                         "the embeddings were drawn from (default n).")
    idx = resolve_subset(subset, n, key)
    n_sub = n if idx is None else int(idx.shape[0])
    if n_sub <= m and not ridge_only:
        raise ValueError(f"SIGMA needs more observed rows than dimensions (n_A={n_sub} <= m={m}): pass more rows or "
                         f"a larger `subset`, or opt in to the ridge-only regime with `ridge_only=True`.")
    return SigmaInputs(embeddings, idx, n, m, n_sub, n_total)


def validate_rows(inputs: SigmaInputs, *, normalize: bool, rho: float) -> None:
    """Value checks (finite, nonzero rows, norm bound) on the observed rows of concrete inputs.

    A no-op under ``jit``/``vmap`` tracing (only shapes are known there).

    Example:
        >>> validate_rows(resolve_inputs(np.zeros((5, 2), np.float32)), normalize=True, rho=1.0)
        Traceback (most recent call last):
        ...
        ValueError: `embeddings` has zero-norm row(s) 0, 1, 2, 3, 4, which cannot be L2-normalised. ...
    """
    emb, idx = inputs.embeddings, inputs.idx
    if not _checks.is_concrete(emb) or (isinstance(emb, jax.Array) and not emb.is_fully_addressable):
        return
    rows = emb
    if idx is not None and _checks.is_concrete(idx):  # only the observed subset matters
        rows = emb[np.sort(np.asarray(idx))] if isinstance(emb, np.ndarray) else emb[jnp.asarray(idx)]
    elif inputs.n < emb.shape[0]:
        rows = emb[: inputs.n]
    _checks.check_embeddings(rows, "embeddings", normalize=normalize, rho=rho)


class IntervalWarning(UserWarning):
    """A SIGMA report whose calibrated interval is not valid (the warning names the fix)."""


def check_finite(report: SigmaReport, delta: float) -> SigmaReport:
    """Raise when a concrete report's log-det is not finite (a failed Cholesky); warn when its interval is invalid.

    The warning (:class:`IntervalWarning`) names the fix (e.g. more rows in the subset).  Returns the report.

    Example:
        >>> rep = report_from_stats(SigmaStats(-jnp.eye(2), None, None, 0, 5, 5, 2))
        >>> check_finite(rep, 1e-3)
        Traceback (most recent call last):
        ...
        FloatingPointError: the Cholesky factorisation of G_A + delta*I failed (delta=0.001); ...
    """
    if not (_checks.is_concrete(report.logdet) and np.ndim(report.logdet) == 0):
        return report
    if not np.isfinite(float(report.logdet)):
        raise FloatingPointError(f"the Cholesky factorisation of G_A + delta*I failed (delta={delta}); "
                                 "increase `delta` or check the embeddings' scale.")
    if not bool(report.valid):
        warnings.warn(f"SIGMA (n_A={int(report.n_sub)} of {int(report.n_total)}, m={int(report.dim)}): no calibrated "
                      "interval for the full-sample U_cov: " + "; ".join(report.reasons()) + ".", IntervalWarning,
                      stacklevel=3)
    return report

