r"""``sigma_jax.sigma``: validate once, pick a producer, assemble the report once.

The report and its formulas live in :mod:`sigma_jax.report`; the producers of its sufficient
statistics in :mod:`sigma_jax.gram` (in memory, streamed from host arrays),
:mod:`sigma_jax.estimators.stochastic_sigma` (matrix-free) and :mod:`sigma_jax.sharding`
(on a mesh).  This module only dispatches.  Names that used to live here (``SigmaReport``,
``Drift``, ``drift``, ``resolve_subset``, ``q_moments``, ``logdet_spd``) are re-exported.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sigma_jax import _blas, gram
from sigma_jax._linalg import logdet_spd
from sigma_jax._x64 import x64
from sigma_jax.gram import q_moments
from sigma_jax.report import (Drift, SigmaReport, SigmaStats, check_finite, drift, report_from_stats, resolve_inputs,
                              resolve_subset, validate_rows)

__all__ = ["SigmaReport", "Drift", "sigma", "sigma_from_gram", "q_moments", "drift", "logdet_spd", "resolve_subset",
           "METHODS", "PRECISIONS"]

METHODS = ("exact", "stochastic", "auto")
PRECISIONS = ("float64", "split", "mixed")
_HOST_STREAM_BYTES = 1 << 28  # host (numpy / memmap) inputs above 256 MiB are streamed chunk by chunk


def sigma_from_gram(gram_a, *, n_sub: int, n_total: int | None = None, delta: float = 1e-3, rho: float = 1.0,
                    q_sums=None, level: float = 0.95) -> SigmaReport:
    """SIGMA report from a precomputed ``G_A`` (m x m), e.g. streamed or sharded.

    Args:
        gram_a: (m, m) Gram matrix of the ``n_sub`` observed rows (float64 preferred).
        n_sub, n_total: ``n_A`` and ``n_total`` (default ``n_sub``).
        q_sums: the moments from :func:`sigma_jax.gram.q_moments`; without them the band,
            ``bias`` and ``sd_q`` are NaN whenever ``n_sub < n_total`` (they need the rows).

    Example:
        >>> g = jnp.eye(4) * 10.0
        >>> rep = sigma_from_gram(g, n_sub=40, n_total=40)
        >>> round(float(rep.logdet), 4)  # 4 log(10.001)
        9.2107
    """
    n_total = n_sub if n_total is None else n_total
    stats = SigmaStats(gram_a, None, q_sums, n_sub, n_sub, n_total, gram_a.shape[-1])
    return report_from_stats(stats, delta=delta, rho=rho, level=level)


@functools.partial(jax.jit, static_argnames=("n_total", "delta", "rho", "normalize", "level", "chunk_rows",
                                             "precision"))
def _dense_report(rows, *, n_total, delta, rho, normalize, level, chunk_rows, precision):
    stats = gram.dense_stats(rows, n_total=n_total, delta=delta, normalize=normalize, chunk_rows=chunk_rows,
                             precision=precision)
    return report_from_stats(stats, delta=delta, rho=rho, level=level)


@functools.partial(jax.jit, static_argnames=("delta", "rho", "level"))
def _stats_report(stats, *, delta, rho, level):
    return report_from_stats(stats, delta=delta, rho=rho, level=level)


def _host_report(stats, *, delta, rho, level):
    """The one assembler, jitted, on the host CPU in float64 (statistics from the host and split producers)."""
    with x64(), gram.host_device():
        return _stats_report(stats, delta=float(delta), rho=float(rho), level=float(level))


def _on_host_cpu(emb) -> bool:
    """Concrete float32/float64 rows the CPU's BLAS can read in place (NumPy, memmap, a CPU JAX array)."""
    if isinstance(emb, np.ndarray):
        ok = jax.default_backend() == "cpu"
    elif isinstance(emb, jax.Array) and not isinstance(emb, jax.core.Tracer):
        ok = emb.is_fully_addressable and all(d.platform == "cpu" for d in emb.devices())
    else:
        return False
    return ok and np.dtype(emb.dtype) in (np.float32, np.float64)


def _blas_report(inp, pos, *, delta, rho, normalize, level, validate):
    """``pos``: the subset's sorted positions (``resolve_subset`` has refused repeats), or None for all rows."""
    emb = np.asarray(inp.embeddings)
    emb = emb if inp.n == emb.shape[0] else emb[:inp.n]
    try:
        stats = gram.blas_stats(emb, pos, n_total=inp.n_total, delta=delta, normalize=normalize,
                                check_rho=float(rho) if validate else None)
    except _blas.BadRows:
        validate_rows(inp, normalize=normalize, rho=rho)  # raises the precise message (which rows, which fix)
        raise ValueError("`embeddings` has rows whose squared norm overflows float64; rescale the embeddings.")
    return _host_report(stats, delta=delta, rho=rho, level=level)


def _split_report(inp, *, delta, rho, normalize, level):
    emb, idx = inp.embeddings, inp.idx
    if isinstance(emb, jax.core.Tracer) or isinstance(idx, jax.core.Tracer):
        raise ValueError("precision='split' finishes on the host and cannot run under jit/vmap; call `sigma` "
                         "outside the transformation, or use precision='float64' inside it.")
    if idx is not None:
        emb = emb[np.asarray(idx)] if isinstance(emb, np.ndarray) else jnp.asarray(emb)[jnp.asarray(idx)]
    elif inp.n < emb.shape[0]:
        emb = emb[:inp.n]
    stats = gram.split_stats(emb, n_total=inp.n_total, delta=delta, normalize=normalize)
    return _host_report(stats, delta=delta, rho=rho, level=level)


def _auto_method(method: str, m: int, n_sub: int, n_total: int, key) -> str:
    if method != "auto":
        return method
    from sigma_jax.estimators.stochastic_sigma import AUTO_CROSSOVER_M

    return "stochastic" if (key is not None and n_sub == n_total and m >= AUTO_CROSSOVER_M) else "exact"


def sigma(embeddings, *, n_total: int | None = None, subset=None, delta: float = 1e-3, rho: float = 1.0,
          normalize: bool = True, key=None, ridge_only: bool = False, level: float = 0.95,
          chunk_rows: int = gram.DEFAULT_CHUNK_ROWS, validate: bool = True, precision: str = "float64",
          method: str = "exact", estimator_options: dict | None = None) -> SigmaReport:
    r"""The SIGMA report of a set of embeddings.

    Args:
        embeddings: (n, m) float array (any float dtype; numpy, ``np.memmap``, JAX,
            or a path to a ``.npy``/``.npz`` file).  Host arrays above 256 MiB are
            streamed to the device in chunks; the result is the same.
        n_total: the number of texts the embeddings were drawn from (default n).
        subset: None (all n rows), an int ``n_A`` (random rows drawn with ``key``),
            or explicit row indices.
        delta: ridge ``delta`` (Python float > 0).
        rho: bound on ``||v||^2`` (1 for normalised rows).
        normalize: L2-normalise rows first.
        key: PRNG key, needed when ``subset`` is a count (keep it fixed across
            generations so the observed positions stay the same) and for the stochastic method.
        ridge_only: allow ``n_A <= m`` (``G_A`` is then singular and ``S`` is
            dominated by the ridge: only comparable across runs of equal ``n_A``).
        level: confidence level of the band (0.95 -> 1.96 sd).
        chunk_rows: rows per float64 block.
        validate: value checks on concrete inputs (NaN/Inf, zero rows, norms).
        precision: ``"float64"`` (default: products and sums in float64, accurate to
            ~1e-12 relative; on the CPU, concrete inputs go through the platform's float64 BLAS --
            :func:`sigma_jax.gram.blas_stats`, at the floor of one float64 ``A^T A`` -- and traced
            ones through XLA, :func:`sigma_jax.gram.dense_stats`), ``"split"`` (float64-accurate
            Gram from float32 arithmetic only, for TPUs and fast-float32 GPUs:
            :func:`sigma_jax.gram.split_stats`; ~13 float32 GEMMs of work, finished on the host,
            not under ``jit``) or ``"mixed"`` (float32 products per chunk, float64
            sums: faster, accurate on healthy spectra but not on collapsed ones --
            measured in ``experiments/bench_sigma.py``).  Cholesky and the band are
            always float64; host arrays streamed to an accelerator in chunks (> 256 MiB) use float64.
        method: ``"exact"`` (Cholesky of the m x m Gram, the paper's path), ``"stochastic"``
            (deflated stochastic Lanczos quadrature through the Gram operator, never forming G;
            needs ``key``; see :func:`sigma_jax.estimators.sigma_stochastic`), or ``"auto"``:
            stochastic when ``m >= estimators.AUTO_CROSSOVER_M`` (4096, the measured crossover
            on a 2-core CPU), all rows are observed and a ``key`` is given; exact otherwise.
            Every method returns a :class:`SigmaReport` (``exact`` says which produced it).
        estimator_options: keyword arguments of the stochastic producer (probes, Lanczos steps,
            deflation, ...).

    Returns:
        :class:`SigmaReport`.

    All computation is float64 inside a local ``jax.enable_x64`` context; JAX's
    global flag is untouched.  Works under ``jit`` (``n_total``/``subset`` count,
    ``delta``, ``rho`` static) and ``vmap`` over a batch of embedding sets; value
    checks run only on concrete inputs.

    Example:
        >>> emb = jax.random.normal(jax.random.key(0), (2000, 16))
        >>> rep = sigma(emb, subset=500, key=jax.random.key(1))
        >>> float(rep.u_cov) < float(rep.upper)
        True
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}, got {precision!r}.")
    inp = resolve_inputs(embeddings, n_total=n_total, subset=subset, key=key, delta=delta, rho=rho, level=level,
                         ridge_only=ridge_only)
    method = _auto_method(method, inp.dim, inp.n_sub, inp.n_total, key)
    emb, idx = inp.embeddings, inp.idx
    traced_idx = isinstance(idx, jax.core.Tracer)
    host_blas = method == "exact" and precision == "float64" and _on_host_cpu(emb) and not traced_idx
    if validate and not host_blas:  # the BLAS sweep checks the rows itself, in the same pass
        validate_rows(inp, normalize=normalize, rho=rho)
    if host_blas:
        pos = None if idx is None else np.sort(np.asarray(idx))
        report = _blas_report(inp, pos, delta=delta, rho=rho, normalize=normalize, level=level, validate=validate)
    elif method == "exact" and precision == "split":
        report = _split_report(inp, delta=delta, rho=rho, normalize=normalize, level=level)
    elif method == "stochastic":
        if key is None:
            raise ValueError("method='stochastic' needs `key` (e.g. `key=jax.random.key(0)`) for its probes.")
        from sigma_jax.estimators.stochastic_sigma import stochastic_report

        report = stochastic_report(key, inp, delta=delta, rho=rho, normalize=normalize, level=level,
                                   **(estimator_options or {}))
    elif isinstance(emb, np.ndarray) and emb.nbytes > _HOST_STREAM_BYTES:
        stats = gram.host_stats(emb, idx, n_total=inp.n_total, delta=delta, normalize=normalize,
                                chunk_rows=max(chunk_rows, 1 << 15))
        report = report_from_stats(stats, delta=delta, rho=rho, level=level)
    else:
        with x64():  # keeps float64 inputs float64; vmap batching of the inner jit re-traces it in the context
            rows = jnp.asarray(emb) if idx is None else jnp.asarray(emb)[jnp.asarray(idx)]
            report = _dense_report(rows, n_total=inp.n_total, delta=float(delta), rho=float(rho),
                                   normalize=normalize, level=float(level), chunk_rows=chunk_rows,
                                   precision=precision)
    return check_finite(report, delta) if validate else report
