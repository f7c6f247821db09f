"""SIGMA's sufficient statistics: what every producer hands to the one assembler."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sigma_jax._x64 import f64, x64  # noqa: F401 (x64: examples)

__all__ = ["SigmaStats", "LogdetEstimates", "NUM_MOMENTS", "MIN_ROWS_PER_DIM", "MIN_ROWS", "MAX_RIDGE_STRADDLE", "band_ridge",
           "row_moments", "report_shifts"]


class LogdetEstimates(NamedTuple):
    """A matrix-free producer's estimates of the spectral traces the report needs (see :func:`report_shifts`).

    Attributes:
        value: (5,) estimates of ``logdet(G_A + s I)`` at the three :func:`report_shifts` and of
            ``tr R``, ``tr R^2`` with ``R = G_A (G_A + eps I)^{-1}``, ``eps = band_ridge``.
        stderr: (5,) standard errors over probes.
        truncation: (5,) ``|estimate(s steps) - estimate(s/2 steps)|``: a guard for the Lanczos
            truncation bias that the probe standard error leaves out.
        num_matvecs: products with ``G_A`` spent (int32).
        cg_residual: largest relative residual of the band's solves (0 when not needed).
    """

    value: jax.Array
    stderr: jax.Array
    truncation: jax.Array
    num_matvecs: jax.Array
    cg_residual: jax.Array


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["gram", "logdets", "q_moments", "q_count", "n_sub", "n_total", "inv_chol"],
                   meta_fields=["dim", "dof"])
@dataclasses.dataclass(frozen=True)
class SigmaStats:
    """What a producer knows about one observed subset: everything the report needs.

    Attributes:
        gram: (m, m) float64 ``G_A`` (dense producers), or None.
        logdets: :class:`LogdetEstimates` (matrix-free producers), or None.
        q_moments: (NUM_MOMENTS,) sums over rows of :func:`row_moments`, or None when unknown.
        q_count: number of rows the moments are summed over (``n_A``, or a random sample of it).
        n_sub, n_total: ``n_A`` and ``n_total`` (Python ints or int arrays, e.g. a monitor's count).
        dim: ``m`` (static).
        dof: degrees of freedom of a stochastic producer's errors (static; the interval then uses a
            Student-t quantile), None for exact statistics.
        inv_chol: optional (m, m) ``L^{-1}`` with ``L L^T = G_A + eps I`` (``eps`` = :func:`band_ridge`): a
            dense producer that formed it for the Mahalanobis pass hands it on, so the report does not
            factor ``G_A`` at ``eps`` again.
    """

    gram: Any
    logdets: Any
    q_moments: Any
    q_count: Any
    n_sub: Any
    n_total: Any
    dim: int
    dof: int | None = None
    inv_chol: Any = None


#: Number of per-row moments a producer sums (see :func:`row_moments`).
NUM_MOMENTS = 6

#: The calibrated interval is reported as valid only when ``n_A >= MIN_ROWS_PER_DIM * m_eff``
#: (measured in ``experiments/coverage_sigma.py``: coverage 91-96% at n_A/m = 2, 82-95% at 1.2).
MIN_ROWS_PER_DIM = 3.0
#: ... and ``n_A >= MIN_ROWS`` whatever m_eff: with 10 observed rows (m = 8, a rank-2 collapsed set) the
#: interval covered 90-91% in ``experiments/coverage_sigma.py``; from 16 rows on it covered 94-98%.
MIN_ROWS = 20
#: ... and when at most this fraction of the effective dimensions straddles the ridge
#: (``tau = sum r(1 - r)``, ``r = lambda / (lambda + eps)``; collapsed spectra with eigenvalues near
#: ``eps`` undercovered in the same experiment).
MAX_RIDGE_STRADDLE = 0.1

# bits of SigmaReport.invalid_reason
TOO_FEW_ROWS, NEAR_RIDGE, NO_BAND_STATS, TRUNCATION, NOT_FINITE = 1, 2, 4, 8, 16
_REASONS = {
    TOO_FEW_ROWS: "too few observed rows for a calibrated interval (needs n_A >= 3 m_eff, n_A > m and n_A >= 20): "
                  "use more rows in the subset",
    NEAR_RIDGE: "eigenvalues of G_A sit near the ridge delta*n_A/n_total, where the subset and the full sample "
                "weigh them differently: use all rows (subset=None) or a larger delta",
    NO_BAND_STATS: "the band's per-row statistics are missing (statistics without the rows): pass the rows",
    TRUNCATION: "the Lanczos truncation error dominates the stochastic error: increase num_steps",
    NOT_FINITE: "a quantity of the interval is not finite",
}


def band_ridge(delta, n_sub, n_total):
    """The ridge of the band's Mahalanobis forms: ``delta n_A / n_total``, matched to the estimand.

    ``U_cov(full) = logdet(G_full/n_total + (delta/n_total) I)``; the subset's matching statistic is
    ``logdet(G_A/n_A + (delta/n_total) I)``, i.e. ``G_A`` ridged by ``delta n_A / n_total``.

    Example:
        >>> band_ridge(1e-3, 500, 1000)
        0.0005
    """
    return delta * n_sub / n_total


def row_moments(q, n_sub, mask=None):
    """Per-row sufficient statistics: ``(sum q, sum q^2, sum l, sum l^2, sum l^3, sum l^4)``.  Call inside ``x64()``.

    ``q_i = n_A h_i``, ``h_i = v_i^T (G_A + eps I)^{-1} v_i`` (``eps`` = :func:`band_ridge`) and
    ``l_i = log(1 - h_i)``: the delete-one change of the log-det, ``S_(-i) = S + l_i`` (its third and
    fourth moments give the uncertainty of the jackknife variance itself).  Every moment
    vanishes at ``q = 0``, so zero padding rows contribute nothing.  The one definition every
    producer uses.

    Example:
        >>> with x64():
        ...     s = row_moments(jnp.array([1.0, 2.0]), 4)
        >>> [round(float(v), 6) for v in s]
        [3.0, 5.0, -0.980829, 0.563214, -0.356834, 0.237684]
    """
    q = f64(q)
    if mask is not None:
        q = q * f64(mask)
    h = q / f64(n_sub)
    ell = jnp.log1p(-jnp.minimum(h, 1.0 - 1e-16))
    ell2 = ell * ell
    return jnp.stack([jnp.sum(q), jnp.sum(q * q), jnp.sum(ell), jnp.sum(ell2), jnp.sum(ell2 * ell), jnp.sum(ell2 * ell2)])


def report_shifts(delta, n_sub, n_total, rho):
    """The diagonal shifts at which the report needs ``logdet(G_A + s I)``: ``(delta, beta + delta, eps)``.

    ``eps`` = :func:`band_ridge`.  Dense producers factor ``G_A`` at each; matrix-free ones estimate
    all from one quadrature.

    Example:
        >>> report_shifts(1e-3, 10, 20, 1.0)
        (0.001, 10.001, 0.0005)
    """
    beta = (n_total - n_sub) * rho
    return (delta, beta + delta, band_ridge(delta, n_sub, n_total))


