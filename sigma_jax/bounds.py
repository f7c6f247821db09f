r"""Cheap deterministic spectral inequalities (no eigendecomposition).

All take a symmetric positive semi-definite matrix ``M`` (m x m; typically
``G = A^T A`` from :func:`sigma_jax.gram.gram_f64`), work in float64 and return
NamedTuples.  Each states its assumptions.

* :func:`sigma_sandwich` -- SIGMA's bracket on ``logdet(G_full + delta I)`` from a subset.
* :func:`hadamard` -- ``logdet M <= sum_i log M_ii`` (PSD ``M``).
* :func:`trace_amgm` -- ``logdet M <= m log(tr M / m)`` (PSD ``M``; AM-GM on eigenvalues).
* :func:`wolkowicz_styan` -- brackets on ``lambda_max`` and ``lambda_min`` from ``tr M`` and ``tr M^2``
  (any symmetric ``M``).
* :func:`gershgorin` -- ``lambda`` lies in the union of discs ``[M_ii - R_i, M_ii + R_i]``
  (any symmetric ``M``).
* :func:`ky_fan` -- ``sum_{i<=k} lambda_i >= sum of the k largest diagonal entries`` and the
  mirror image for the k smallest (Schur-Horn / Ky Fan, symmetric ``M``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp

from sigma_jax import _checks
from sigma_jax._x64 import f64, x64

__all__ = [
    "Interval",
    "EigenBrackets",
    "sigma_sandwich",
    "hadamard",
    "trace_amgm",
    "wolkowicz_styan",
    "gershgorin",
    "ky_fan",
]


class Interval(NamedTuple):
    """A deterministic bracket ``lower <= value <= upper`` (either end may be +-inf)."""

    lower: object
    upper: object


class EigenBrackets(NamedTuple):
    """Guaranteed brackets on the extreme eigenvalues of a symmetric matrix."""

    lambda_max: Interval
    lambda_min: Interval


def _square(mat, name="mat"):
    mat = _checks.check_float_array(mat, name)
    if mat.shape[0] != mat.shape[1]:
        raise ValueError(f"`{name}` must be square (m, m), got {tuple(mat.shape)}.")
    return mat


def sigma_sandwich(gram_a, *, n_sub: int, n_total: int, delta: float = 1e-3, rho: float = 1.0) -> Interval:
    r"""SIGMA's bracket on ``logdet(G_full + delta I)`` from the observed subset's ``G_A``.

    Assumes the ``n_total - n_sub`` unseen rows have ``||v||^2 <= rho``, so their Gram
    ``G_B`` satisfies ``0 <= G_B <= beta I`` (``beta = (n_total - n_sub) rho``), and log det
    is monotone in the Loewner order:
    ``logdet(G_A + delta I) <= logdet(G_full + delta I) <= logdet(G_A + (beta + delta) I)``.

    Example:
        >>> br = sigma_sandwich(jnp.eye(3) * 5.0, n_sub=15, n_total=20)
        >>> bool(br.lower <= br.upper)
        True
    """
    from sigma_jax.core import sigma_from_gram

    rep = sigma_from_gram(_square(gram_a, "gram_a"), n_sub=n_sub, n_total=n_total, delta=delta, rho=rho)
    return Interval(rep.lower, rep.upper)


def hadamard(mat, *, delta: float = 0.0):
    """Hadamard's inequality: ``logdet(M + delta I) <= sum_i log(M_ii + delta)`` for PSD ``M``.

    Example:
        >>> m = jnp.array([[2.0, 1.0], [1.0, 2.0]])   # logdet = log 3
        >>> round(float(hadamard(m)), 6)             # log 4
        1.386294
    """
    mat = _square(mat)
    with x64():
        return jnp.sum(jnp.log(jnp.diagonal(f64(mat)) + delta))


def trace_amgm(mat, *, delta: float = 0.0):
    """AM-GM on the eigenvalues: ``logdet(M + delta I) <= m log(tr(M + delta I) / m)`` for PSD ``M``.

    Example:
        >>> round(float(trace_amgm(jnp.diag(jnp.array([1.0, 4.0])))), 6)  # 2 log 2.5 >= log 4
        1.832581
    """
    mat = _square(mat)
    m = mat.shape[0]
    with x64():
        return m * jnp.log((jnp.trace(f64(mat)) + m * delta) / m)


def wolkowicz_styan(mat=None, *, trace=None, trace_sq=None, dim: int | None = None) -> EigenBrackets:
    r"""Wolkowicz-Styan (1980) brackets from ``tr M`` and ``tr M^2`` (symmetric ``M``, k = dim >= 2).

    With ``mu = tr M / k`` and ``s^2 = tr(M^2)/k - mu^2``:
    ``mu + s/sqrt(k-1) <= lambda_max <= mu + s sqrt(k-1)`` and
    ``mu - s sqrt(k-1) <= lambda_min <= mu - s/sqrt(k-1)``.
    Pass the matrix (``s`` is then computed as ``||M - mu I||_F / sqrt(k)``, free of
    cancellation), or its exact traces (``s`` then carries an absolute rounding error up to
    ~``sqrt(eps tr(M^2)/k)``; stochastic trace estimates are *not* valid here).

    Example:
        >>> br = wolkowicz_styan(jnp.diag(jnp.array([1.0, 2.0, 3.0])))
        >>> bool(br.lambda_max.lower <= 3.0 <= br.lambda_max.upper)
        True
    """
    with x64():
        if mat is not None:
            mat = f64(_square(mat))
            k = mat.shape[0]
            if k < 2:
                raise ValueError(f"`mat` must be at least 2 x 2 for Wolkowicz-Styan, got {k} x {k}.")
            mu = jnp.trace(mat) / k
            # s^2 = ||M - mu I||_F^2 / k: no cancellation (tr M^2 / k - mu^2 loses ~half the digits)
            s = jnp.sqrt(jnp.sum(jnp.square(mat - mu * jnp.eye(k, dtype=jnp.float64))) / k)
        else:
            if trace is None or trace_sq is None or dim is None:
                raise ValueError("pass `mat`, or all of `trace`, `trace_sq` and `dim`.")
            k = int(dim)
            if k < 2:
                raise ValueError(f"`dim` must be >= 2 for Wolkowicz-Styan, got {k}.")
            mu = f64(trace) / k
            s = jnp.sqrt(jnp.maximum(f64(trace_sq) / k - mu**2, jnp.zeros((), jnp.float64)))
        r = math.sqrt(k - 1)
        return EigenBrackets(Interval(mu + s / r, mu + s * r), Interval(mu - s * r, mu - s / r))


def gershgorin(mat) -> EigenBrackets:
    """Gershgorin discs: every eigenvalue lies in ``[M_ii - R_i, M_ii + R_i]``, ``R_i = sum_{j != i} |M_ij|``.

    Gives ``lambda_max <= max_i (M_ii + R_i)`` and ``lambda_min >= min_i (M_ii - R_i)``;
    the other ends come from the Rayleigh quotient on basis vectors:
    ``lambda_max >= max_i M_ii`` and ``lambda_min <= min_i M_ii``.

    Example:
        >>> br = gershgorin(jnp.array([[2.0, 1.0], [1.0, 2.0]]))
        >>> float(br.lambda_max.upper), float(br.lambda_min.lower)
        (3.0, 1.0)
    """
    with x64():
        mat = f64(_square(mat))
        d = jnp.diagonal(mat)
        r = jnp.sum(jnp.abs(mat), axis=1) - jnp.abs(d)
        return EigenBrackets(Interval(jnp.max(d), jnp.max(d + r)), Interval(jnp.min(d - r), jnp.min(d)))


def ky_fan(mat, k: int) -> Interval:
    """Bracket on ``sum_{i<=k} lambda_i`` (the k largest eigenvalues) of a symmetric ``M``.

    Lower end (Ky Fan's maximum principle, restricted to coordinate frames):
    ``sum_{i<=k} lambda_i >= sum of the k largest diagonal entries``.
    Upper end: ``sum_{i<=k} lambda_i = tr M - sum_{i>k} lambda_i <= tr M - (m - k) lambda_min``
    and ``<= k lambda_max``, with Gershgorin's guaranteed ``lambda_min``/``lambda_max`` ends.

    Example:
        >>> kf = ky_fan(jnp.diag(jnp.array([3.0, 2.0, 1.0])), 2)
        >>> float(kf.lower)
        5.0
    """
    with x64():
        mat = f64(_square(mat))
        m = mat.shape[0]
        if not 1 <= k <= m:
            raise ValueError(f"`k` must lie in [1, {m}], got {k}.")
        d = jnp.sort(jnp.diagonal(mat))[::-1]
        lower = jnp.sum(d[:k])
        g = gershgorin(mat)
        upper = jnp.minimum(k * g.lambda_max.upper, jnp.trace(mat) - (m - k) * g.lambda_min.lower)
        return Interval(lower, upper)
