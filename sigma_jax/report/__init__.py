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
  ``C = (G_A + delta I)/n_A``;
* ``bias``: the second-order subsampling bias ``-1/2 (1/n_A - 1/n_total) mean(q^2 - 2q + m)``
  (an extension; ``u_cov_debiased = u_cov - bias``).

The ridge ``delta`` is always called ``delta`` in SIGMA's functions (the diagonal shift of
``G``); see ``docs/architecture.md`` for the naming across modules.
"""

from sigma_jax.report.assemble import SigmaReport, report_from_stats
from sigma_jax.report.drift import Drift, NullSpread, drift, empirical_null
from sigma_jax.report.inputs import (IntervalWarning, SigmaInputs, check_finite, check_scalars, resolve_inputs,
                                     resolve_subset, validate_rows)
from sigma_jax.report.stats import (MAX_RIDGE_STRADDLE, MIN_ROWS_PER_DIM, NEAR_RIDGE, NO_BAND_STATS, NOT_FINITE,
                                    NUM_MOMENTS, TOO_FEW_ROWS, TRUNCATION, LogdetEstimates, SigmaStats, band_ridge,
                                    report_shifts, row_moments)

__all__ = [
    "SigmaStats", "LogdetEstimates", "SigmaReport", "Drift", "NullSpread", "SigmaInputs", "IntervalWarning",
    "report_from_stats", "report_shifts", "row_moments", "band_ridge", "NUM_MOMENTS", "MIN_ROWS_PER_DIM",
    "MAX_RIDGE_STRADDLE", "TOO_FEW_ROWS", "NEAR_RIDGE", "NO_BAND_STATS", "TRUNCATION", "NOT_FINITE", "drift", "empirical_null", "resolve_subset", "resolve_inputs", "check_scalars",
    "check_finite", "validate_rows",
]
