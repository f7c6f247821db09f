r"""The SIGMA report, assembled in one place from a producer's sufficient statistics.

Every way of computing SIGMA (in memory, streamed from disk, sharded over a mesh, matrix-free
and stochastic, inside a training step) only *produces* a :class:`SigmaStats`; the single
assembler :func:`report_from_stats` turns it into a :class:`SigmaReport`.  A correction to the
report is therefore made once.

Notation.  ``A`` (n x m) holds the embeddings ``v_j`` as rows (L2-normalised when
``normalize=True``, so ``||v_j||^2 <= rho = 1``).  ``I_A`` is an observed subset of ``n_A``
rows out of ``n_total`` (``n_A > m``), ``G_A = sum_{j in I_A} v_j v_j^T`` and
``beta = (n_total - n_A) rho``.

* ``S = logdet(G_A + delta I)`` (Cholesky, or stochastic Lanczos quadrature);
* Track II ("sensitive", eq. 3.19): ``U_cov = S - m log n_A``;
* Track I ("conservative", eqs. 3.16-3.18): ``G_KF = logdet(G_A + (beta + delta) I) - m log(beta + delta)``;
* the deterministic sandwich (the unseen part satisfies ``0 <= G_B <= beta I``):
  ``S <= logdet(G_full + delta I) <= logdet(G_A + (beta + delta) I)``;
* the paper's Theorem-3 band ``z sd(q) sqrt(1/n_A - 1/n_total)``, ``q_i = v_i^T C^{-1} v_i``,
  ``C = (G_A + eps I)/n_A`` (``ci_halfwidth``; kept as the paper's first-order band);
* ``bias``: the second-order subsampling bias ``-1/2 (1/n_A - 1/n_total) mean(q^2 - 2q + m)``
  (an extension; ``u_cov_debiased = u_cov - bias``).

The estimand of the interval (stated once)
------------------------------------------
The report's calibrated interval ``[ci_low, ci_high]`` is for the **full-sample** Track II value

    U_full = logdet(G_full + delta I) - m log n_total = logdet(G_full / n_total + (delta / n_total) I),

the number SIGMA would report had it observed all ``n_total`` texts, with the same ``delta``.  It covers
the uncertainty of observing a uniformly random subset of ``n_A`` of the ``n_total`` rows (without
replacement), and nothing else: not the randomness of the model's own samples, which
:func:`empirical_null` measures from re-samples.

The ridge.  ``U_full`` ridges the second moment by ``delta / n_total``; the subset statistic matched
to it is ``T = logdet(G_A + eps I) - m log n_A`` with ``eps = delta n_A / n_total`` (:func:`band_ridge`),
so that both are ``logdet(second moment + (delta / n_total) I)``.  (The paper's ``U_cov`` uses
``delta`` on ``G_A``: for a collapsed spectrum that alone shifts it by up to ``log(n_total / n_A)`` per
direction below the ridge.)  The band's leverages ``h_i = v_i^T (G_A + eps I)^{-1} v_i`` use ``eps`` too.

The interval is ``estimate +- t_dof se`` with

* ``estimate = T - b2 - (bJ - bJ2)``: ``b2 = -1/2 f (mean q^2 - 2 mean q + m_eff)`` is the
  second-order subsampling bias from the observed ``q_i = n_A h_i`` (``f = 1/n_A - 1/n_total``), and
  ``bJ - bJ2`` the higher-order remainder of the Gaussian-exact bias ``bJ``: for Gaussian rows the
  subset's whitened Gram matrix is matrix-Beta, so
  ``E[T] - U_full = m log(n_total/n_A) + sum_j [psi((n_A-j+1)/2) - psi((n_total-j+1)/2)]`` exactly
  (``bJ2 = -f (m^2 + m)/2`` its first term).  ``m_eff = tr G_A (G_A + eps I)^{-1}`` replaces ``m``, so
  directions far below the ridge (which neither side sees) do not count.
* ``se^2 = vJ + (1 - n_A/n_total) (v_jk - v_jk,Gauss)``: the Gaussian-exact variance
  ``vJ = sum_j [psi'((n_A-j+1)/2) - psi'((n_total-j+1)/2)]`` corrected for non-Gaussian rows by the
  delete-one jackknife ``v_jk = (n_A-1)/n_A sum_i (l_i - mean l)^2`` (``S_(-i) = S + l_i``,
  ``l_i = log(1 - h_i)``: one pass, no refits) minus its Gaussian expectation
  ``(n_A - 1) [psi'((n_A - m_eff)/2) - psi'(n_A/2)]``.  For Gaussian rows this is exact; for rows on a
  sphere (no first-order variance) it removes the first-order part the Gaussian model assumed.
* ``dof`` (Welch-Satterthwaite) counts the jackknife's own sampling error (from the third and fourth
  moments of ``l_i``) and, for stochastic producers, the probes' (``num_probes - 1``); the Lanczos
  truncation guard ``|estimate(s) - estimate(s/2)|`` widens the interval.

Validity.  ``valid`` is False, with ``ci_low = ci_high = estimate = se = NaN``, a reason
(:meth:`SigmaReport.reasons`) and an :class:`IntervalWarning` naming the fix, when
``n_A < 3 m_eff`` or ``n_A <= m`` or ``n_A < 20`` or ``dof < 2`` (too few rows), when more than 10% of the
effective dimensions straddle the ridge (``sum r(1 - r) > 0.1 m_eff``, ``r = lambda/(lambda + eps)``), when the
band's statistics are missing, or when the truncation guard dominates a stochastic estimate.  With all
rows observed the interval is the exact value (zero width).  Coverage measured in
``experiments/coverage_sigma.py`` (README's table) over isotropic, power-law and clustered spectra,
m = 8..384, n_A/m = 1.2..50, n_total/n_A = 1.5 and 4.

The ridge ``delta`` is always called ``delta`` in SIGMA's functions (the diagonal shift of
``G``); see ``docs/architecture.md`` for the naming across modules.
"""

from sigma_jax.report.assemble import SigmaReport, report_from_stats
from sigma_jax.report.drift import Drift, NullSpread, drift, empirical_null
from sigma_jax.report.inputs import (IntervalWarning, SigmaInputs, check_finite, check_scalars, resolve_inputs,
                                     resolve_subset, validate_rows)
from sigma_jax.report.stats import (MAX_RIDGE_STRADDLE, MIN_ROWS, MIN_ROWS_PER_DIM, NEAR_RIDGE, NO_BAND_STATS,
                                    NOT_FINITE,
                                    NUM_MOMENTS, TOO_FEW_ROWS, TRUNCATION, LogdetEstimates, SigmaStats, band_ridge,
                                    report_shifts, row_moments)

__all__ = [
    "SigmaStats", "LogdetEstimates", "SigmaReport", "Drift", "NullSpread", "SigmaInputs", "IntervalWarning",
    "report_from_stats", "report_shifts", "row_moments", "band_ridge", "NUM_MOMENTS", "MIN_ROWS_PER_DIM", "MIN_ROWS",
    "MAX_RIDGE_STRADDLE", "TOO_FEW_ROWS", "NEAR_RIDGE", "NO_BAND_STATS", "TRUNCATION", "NOT_FINITE", "drift",
    "empirical_null", "resolve_subset", "resolve_inputs", "check_scalars", "check_finite", "validate_rows",
]
