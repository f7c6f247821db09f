"""Drift between generations, with a calibrated threshold, and the empirical null from re-samples."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sigma_jax import _checks
from sigma_jax._linalg import z_quantile
from sigma_jax._x64 import f64, x64
from sigma_jax.report.assemble import SigmaReport, report_from_stats  # noqa: F401 (examples)
from sigma_jax.report.stats import SigmaStats  # noqa: F401 (examples)

__all__ = ["Drift", "drift", "NullSpread", "empirical_null"]


class Drift(NamedTuple):
    """Drift of SIGMA's tracks relative to the first report (eq. 3.20), with a calibrated threshold.

    Attributes:
        dU: ``U_cov(g) - U_cov(0)`` (the paper's drift), shape (G,).
        dG: ``G_KF(g) - G_KF(0)``.
        dU_estimate: difference of the bias-corrected full-sample estimates (NaN where either
            report's interval is invalid); what ``band`` refers to.
        band: ``z sqrt(se_g^2 + se_0^2)`` from the calibrated standard errors (subset sampling only;
            NaN where either report is invalid).
        null: the null threshold passed as ``null_spread`` (NaN when none): the re-sampling noise of
            the model's own samples, which the subset band does not cover.
        threshold: the larger of ``band`` and ``null`` among those defined.
        significant: ``|statistic| > threshold`` where ``defined``, else False (never True without a
            threshold).  The statistic is ``dU_estimate`` where the band is defined, else ``dU``.
        defined: whether a positive threshold exists for generation g (g = 0 is never significant).
    """

    dU: jax.Array
    dG: jax.Array
    dU_estimate: jax.Array
    band: jax.Array
    null: jax.Array
    threshold: jax.Array
    significant: jax.Array
    defined: jax.Array

    def reasons(self) -> list[str]:
        """Why significance is undefined, one entry per generation ('' where defined)."""
        out = []
        for g, (d, b) in enumerate(zip(np.asarray(self.defined), np.asarray(self.band))):
            if g == 0 or d:
                out.append("")
            elif np.isnan(b):
                out.append("no calibrated band (a report's interval is invalid) and no null_spread given")
            else:
                out.append("the subset band is 0 (all rows observed) and no null_spread was given: the model's "
                           "sampling noise is unknown; pass a null from re-samples (empirical_null)")
        return out


def _stack(reports):
    if isinstance(reports, SigmaReport):
        return reports
    reports = list(reports)
    if not reports:
        raise ValueError("`reports` is empty; pass one SigmaReport per generation.")
    with x64():
        return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *reports)


def drift(reports: Sequence[SigmaReport] | SigmaReport, *, null_spread: float | None = None) -> Drift:
    """``dU`` and ``dG`` of each report relative to the first (eq. 3.20), with a calibrated threshold.

    Args:
        reports: a list of :class:`SigmaReport` (one per generation) or one stacked
            report with a leading generation axis (e.g. from ``jax.vmap``).
        null_spread: optional threshold for the re-sampling noise of generation 0, e.g.
            ``empirical_null(...).quantile`` from re-samples with other sampling keys.  The calibrated
            band covers only the subsampling of n_A out of n_total rows, not the model's sampling
            noise; a generation counts as drifting only beyond both.

    With all rows observed (band 0) and no ``null_spread``, significance is undefined (False, with
    ``defined=False``), never True.

    Example:
        >>> reps = [report_from_stats(SigmaStats(jnp.eye(2) * g, None, None, 0, 9, 9, 2)) for g in (9.0, 8.0)]
        >>> d = drift(reps)
        >>> d.dU.shape, bool(d.significant[1]), bool(d.defined[1])
        ((2,), False, False)
    """
    stacked = _stack(reports)
    with x64():
        u, gk = f64(stacked.u_cov), f64(stacked.g_kf)
        if u.ndim != 1:
            raise ValueError(f"`reports` must stack to one generation axis, got u_cov of shape {u.shape}.")
        est, se = f64(stacked.estimate), f64(stacked.se)
        level = float(np.asarray(stacked.level).ravel()[0]) if _checks.is_concrete(stacked.level) else 0.95
        du, dg = u - u[0], gk - gk[0]
        d_est = est - est[0]
        band = z_quantile(level) * jnp.sqrt(se**2 + se[0] ** 2)
        null = jnp.full_like(du, jnp.nan if null_spread is None else float(null_spread))
        threshold = jnp.fmax(band, null)
        stat = jnp.where(jnp.isnan(band), du, d_est)
        first = jnp.arange(du.shape[0]) == 0
        defined = (threshold > 0) & ~first
        significant = defined & (jnp.abs(stat) > threshold)
        return Drift(du, dg, d_est, band, null, threshold, significant, defined)


class NullSpread(NamedTuple):
    """An empirical null for drift: how far ``U_cov`` moves when nothing but the sampling changes.

    Attributes:
        quantile: the ``level`` quantile of ``|U_cov(resample) - U_cov(reference)|`` (nats), taken as
            the ``ceil((k + 1) level)``-th smallest of the k deviations: for exchangeable re-samples a
            fresh one exceeds it with probability at most ``1 - level``.
        level: its level.
        num_resamples: k.
        deviations: (k,) the signed deviations ``U_cov(resample) - U_cov(reference)``.
    """

    quantile: float
    level: float
    num_resamples: int
    deviations: np.ndarray


def empirical_null(u_resamples, u_reference, *, level: float = 0.95) -> NullSpread:
    """The calibrated null of ``dU`` from re-samples of the reference generation with other sampling keys.

    Needs at least ``ceil(1 / (1 - level)) - 1`` re-samples (19 at 95%): with fewer, no order
    statistic of the deviations is a ``level`` quantile (the maximum of 2 re-samples is only a 67%
    level).  Use its ``quantile`` as ``drift(..., null_spread=)``.

    Example:
        >>> null = empirical_null(-100.0 - np.arange(1.0, 40.0), -100.0)   # |deviations| 1, 2, ..., 39
        >>> null.num_resamples, null.quantile                             # the ceil(40 * 0.95) = 38th smallest
        (39, 38.0)
    """
    u = np.asarray(u_resamples, np.float64).ravel()
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"`level` must lie in (0, 1), got {level}.")
    need = int(np.ceil(1.0 / (1.0 - level))) - 1
    if u.size < need:
        raise ValueError(f"an empirical {100 * level:g}% null needs at least {need} re-samples, got {u.size}; "
                         "re-sample the reference generation with more sampling keys.")
    if not np.isfinite(u).all() or not np.isfinite(u_reference):
        raise ValueError("`u_resamples` and `u_reference` must be finite.")
    dev = u - float(u_reference)
    k = u.size
    rank = min(int(np.ceil((k + 1) * level)), k)
    return NullSpread(float(np.sort(np.abs(dev))[rank - 1]), float(level), int(k), dev)


