"""The SIGMA report and its one assembler, :func:`report_from_stats` (the formulas are in the package docstring)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sigma_jax._linalg import logdet_spd, t_quantile_traced, z_quantile
from sigma_jax._x64 import f64, x64
from sigma_jax.report.stats import (MAX_RIDGE_STRADDLE, MIN_ROWS, MIN_ROWS_PER_DIM, NEAR_RIDGE, NO_BAND_STATS,
                                    NOT_FINITE, TOO_FEW_ROWS, TRUNCATION, _REASONS, SigmaStats, report_shifts)

__all__ = ["SigmaReport", "report_from_stats"]

#: Below this many (Welch-Satterthwaite) degrees of freedom the variance estimate is too noisy to
#: calibrate an interval: the report is flagged invalid (too few rows).
MIN_DOF = 2.0


def _jacobi_terms(m_eff, m: int, n, n_total):
    """Gaussian-exact (matrix-Beta) subsampling bias and variance of ``logdet`` of a sample second moment.

    For n of N rows drawn without replacement from a population whose whitened rows are Gaussian,
    ``U_A^T U_A ~ Beta_m(n/2, (N - n)/2)`` and
    ``E[T] - U_full = m log(N/n) + sum_j [psi((n-j+1)/2) - psi((N-j+1)/2)]``,
    ``Var[T] = sum_j [psi'((n-j+1)/2) - psi'((N-j+1)/2)]``, j = 1..m (a fractional ``m_eff`` weighs
    the last term).  Returns ``(bias, var, bias2, var2)`` with ``bias2 = -f (m^2 + m)/2`` and
    ``var2 = 2 m f`` their first terms in ``f = 1/n - 1/N``.
    """
    from jax.scipy.special import digamma, polygamma

    j = jnp.arange(1, m + 1, dtype=jnp.float64)
    w = jnp.clip(m_eff - j + 1.0, 0.0, 1.0)
    a = jnp.maximum((n - j + 1.0) / 2.0, 0.5)
    c = (n_total - j + 1.0) / 2.0
    bias = jnp.sum(w * (digamma(a) - digamma(c))) + m_eff * jnp.log(n_total / n)
    var = jnp.sum(w * (polygamma(1, a) - polygamma(1, c)))
    f = 1.0 / n - 1.0 / n_total
    return bias, var, -0.5 * f * (m_eff**2 + m_eff), 2.0 * m_eff * f



class SigmaReport(NamedTuple):
    """SIGMA quantities of one embedding set.  A pytree of arrays (float64 where computed).

    Attributes:
        logdet: ``S = logdet(G_A + delta I)``; also the lower end of the sandwich.
        u_cov: ``S - m log n_A`` (Track II, sensitive).
        g_kf: ``logdet(G_A + (beta+delta) I) - m log(beta+delta)`` (Track I, conservative).
        lower, upper: bounds on ``logdet(G_full + delta I)`` -- deterministic when ``exact``;
            stochastic *estimates* of those bounds otherwise.
        ci_halfwidth: the paper's Theorem-3 half-width of the band on ``u_cov`` (0 when ``n_A = n_total``).
        bias: second-order estimate of the subsampling bias of ``u_cov`` (<= 0; 0 when ``n_A = n_total``).
        sd_q: standard deviation of the Mahalanobis forms ``q_i`` over the subset (0 if not needed).
        beta: ``(n_total - n_A) rho``.
        n_sub, n_total, dim: ``n_A``, ``n_total``, ``m``.
        delta, rho, level: ridge, squared-norm bound, confidence level.
        exact: True when the log-dets were computed exactly (Cholesky), False for stochastic estimates.
        logdet_stderr, upper_stderr: standard errors of ``logdet`` and ``upper`` (0 when exact).
        num_matvecs: operator products spent by a stochastic producer (0 when exact).
        cg_residual: largest relative residual of the stochastic band's solves (0 otherwise).
        estimate: bias-corrected estimate of the full-sample ``U_cov`` (the estimand; see the module
            docstring); NaN where ``valid`` is False.
        se: its standard error (subsampling, plus the stochastic estimator's error); NaN when invalid.
        ci_low, ci_high: the calibrated ``level`` interval for the full-sample ``U_cov``; NaN when invalid.
        valid: whether the interval is calibrated here (see ``invalid_reason`` and :meth:`reasons`).
        invalid_reason: bit mask of the reasons it is not (0 when valid).
        m_eff: effective dimension ``tr G_A (G_A + eps I)^{-1}`` (``m`` unless eigenvalues sit near the ridge).
    """

    logdet: jax.Array
    u_cov: jax.Array
    g_kf: jax.Array
    lower: jax.Array
    upper: jax.Array
    ci_halfwidth: jax.Array
    bias: jax.Array
    sd_q: jax.Array
    beta: jax.Array
    n_sub: jax.Array
    n_total: jax.Array
    dim: jax.Array
    delta: jax.Array
    rho: jax.Array
    level: jax.Array
    exact: jax.Array
    logdet_stderr: jax.Array
    upper_stderr: jax.Array
    num_matvecs: jax.Array
    cg_residual: jax.Array
    estimate: jax.Array
    se: jax.Array
    ci_low: jax.Array
    ci_high: jax.Array
    valid: jax.Array
    invalid_reason: jax.Array
    m_eff: jax.Array

    @property
    def interval(self):
        """``(ci_low, ci_high)``: the calibrated interval for the full-sample ``U_cov``."""
        return self.ci_low, self.ci_high

    def reasons(self) -> list[str]:
        """Plain-language reasons why the interval is not valid (empty when it is).  Unbatched report."""
        code = int(np.asarray(self.invalid_reason))
        return [text for bit, text in _REASONS.items() if code & bit]

    @property
    def u_cov_interval(self):
        """``(u_cov - ci_halfwidth, u_cov + ci_halfwidth)`` (the paper's band)."""
        return self.u_cov - self.ci_halfwidth, self.u_cov + self.ci_halfwidth

    @property
    def u_cov_debiased(self):
        """``u_cov - bias``: Track II corrected for the second-order subsampling bias (extension)."""
        return self.u_cov - self.bias

    @property
    def stderr(self):
        """Alias of ``logdet_stderr`` (the stochastic report's former field name)."""
        return self.logdet_stderr

    @property
    def stderr_upper(self):
        """Alias of ``upper_stderr``."""
        return self.upper_stderr

    @property
    def logdet_ci(self):
        """Interval for ``S`` from the stochastic estimator's own error alone (normal quantile)."""
        z = z_quantile(float(self.level))
        return self.logdet - z * self.logdet_stderr, self.logdet + z * self.logdet_stderr

    _INT_FIELDS = ("n_sub", "n_total", "dim", "num_matvecs", "invalid_reason")
    _BOOL_FIELDS = ("exact", "valid")

    def to_dict(self) -> dict[str, float | int | bool]:
        """Plain Python numbers (for JSON).  Only for an unbatched report."""
        out: dict[str, float | int | bool] = {}
        for name, value in self._asdict().items():
            v = np.asarray(value)
            if v.ndim:
                raise ValueError("to_dict() needs an unbatched report; index the batch first (e.g. via jax.tree.map).")
            if name in self._INT_FIELDS:
                out[name] = int(v)
            elif name in self._BOOL_FIELDS:
                out[name] = bool(v)
            else:
                out[name] = float(v)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "SigmaReport":
        """Inverse of :meth:`to_dict` (numpy scalars; float fields stay float64).

        Fields missing from older files get neutral values (exact, zero errors, no calibrated interval).

        Example:
            >>> rep = report_from_stats(SigmaStats(jnp.eye(3) * 10.0, None, None, 0, 30, 30, 3))
            >>> float(SigmaReport.from_dict(rep.to_dict()).u_cov) == float(rep.u_cov)
            True
        """
        nan = float("nan")
        defaults = {"exact": True, "logdet_stderr": 0.0, "upper_stderr": 0.0, "num_matvecs": 0, "cg_residual": 0.0,
                    "estimate": nan, "se": nan, "ci_low": nan, "ci_high": nan, "valid": False,
                    "invalid_reason": NO_BAND_STATS, "m_eff": d.get("dim", nan)}
        vals = {}
        for name in cls._fields:
            v = d.get(name, defaults.get(name))
            if v is None:
                raise KeyError(f"report dict lacks {name!r}; it holds {sorted(d)}.")
            dtype = np.int64 if name in cls._INT_FIELDS else (np.bool_ if name in cls._BOOL_FIELDS else np.float64)
            vals[name] = np.asarray(v, dtype)
        return cls(**vals)

    def summary(self) -> str:
        """A readable table (unbatched report)."""
        d = self.to_dict()
        est = "" if d["exact"] else f" (stochastic estimate, se {d['logdet_stderr']:.3g})"
        bracket = "in" if d["exact"] else "in (estimated, not guaranteed)"
        pct = f"{100 * d['level']:.0f}%"
        if d["valid"]:
            ci = f"{d['estimate']:.4f}, {pct} CI [{d['ci_low']:.4f}, {d['ci_high']:.4f}] (se {d['se']:.3g})"
        else:
            ci = "no calibrated interval: " + "; ".join(self.reasons())
        rows = [
            ("n_A / n_total / m (m_eff)", f"{d['n_sub']} / {d['n_total']} / {d['dim']} ({d['m_eff']:.1f})"),
            ("delta, rho, beta", f"{d['delta']:.3g}, {d['rho']:.3g}, {d['beta']:.6g}"),
            ("S = logdet(G_A + dI)", f"{d['logdet']:.6f}{est}"),
            ("U_cov (Track II)", f"{d['u_cov']:.6f} +/- {d['ci_halfwidth']:.4f} (paper's first-order band)"),
            ("full-sample U_cov", ci),
            ("G_KF (Track I)", f"{d['g_kf']:.6f}"),
            (f"logdet(G_full + dI) {bracket}", f"[{d['lower']:.6f}, {d['upper']:.6f}]"),
        ]
        w = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(w)}  {v}" for k, v in rows)


def _bit(cond, bit: int):
    """``bit`` where ``cond`` else 0, as int32 (typed: weak literals misbehave under eager vmap)."""
    return jnp.where(cond, jnp.int32(bit), jnp.int32(0))


def _dense_traces(g, m: int, shifts, inv_l=None):
    """Exact log-dets at the shifts and ``tr R``, ``tr R^2`` (``R = G (G + eps I)^{-1}``) of a dense ``G``.

    ``inv_l``: the producer's ``L^{-1}`` at ``eps`` (shared with its Mahalanobis pass), else computed here.
    """
    from sigma_jax._linalg import inv_chol, lower_gram

    eye = jnp.eye(m, dtype=jnp.float64)
    eps = shifts[2]
    li = inv_chol(g, eps) if inv_l is None else f64(inv_l)    # L^{-1}, K = (G + eps I)^{-1} = L^{-T} L^{-1}
    ld_eps = -2.0 * jnp.sum(jnp.log(jnp.diagonal(li, axis1=-2, axis2=-1)), axis=-1)
    # The Cholesky factorisations run one after another (barriers), each unbatched even under vmap
    # (``_linalg.cholesky``): XLA:CPU runs independent LAPACK kernels concurrently, and batched ones
    # wait on the intra-op pool for their pieces -- two at once hang a 2-thread pool forever
    # (measured: a vmapped sigma at m = 128 on a 2-core machine).
    g, li = jax.lax.optimization_barrier((g, li))
    ld0 = logdet_spd(g + shifts[0] * eye)
    g, ld0 = jax.lax.optimization_barrier((g, ld0))
    lds = [ld0, logdet_spd(g + shifts[1] * eye), ld_eps]
    k = lower_gram(li)  # K = L^{-T} L^{-1}, only for tr K^2 = sum(K * K)
    tr_k = jnp.sum(li * li)
    tr_r = m - eps * tr_k
    tr_r2 = m - 2.0 * eps * tr_k + eps**2 * jnp.sum(k * k)
    return jnp.stack(lds + [tr_r, tr_r2])


def report_from_stats(stats: SigmaStats, *, delta: float = 1e-3, rho: float = 1.0, level: float = 0.95) -> SigmaReport:
    """The one assembler: a :class:`SigmaReport` from a producer's :class:`SigmaStats`.

    Dense statistics (``gram``) are factored by Cholesky at :func:`report_shifts`; matrix-free
    ones carry their estimates.  Without ``q_moments`` the paper's band, ``bias`` and ``sd_q`` are
    NaN whenever ``n_A < n_total`` (they need the rows) and the calibrated interval is invalid.
    jit / vmap / grad compatible.

    The calibrated interval (see the module docstring) is
    ``estimate +- z se`` with ``estimate = T - b2 - (bJ - bJ2)`` and
    ``se^2 = vJ + (1 - n_A/n_total) (v_jk - v_jk,Gauss)`` (+ the stochastic error), where ``T`` is
    the subset's log-det at the matched ridge, ``b2`` the second-order bias from the observed
    ``q_i``, ``bJ``/``vJ`` the Gaussian-exact (matrix-Beta) bias and variance with ``bJ2`` their
    second-order part, and ``v_jk`` the delete-one jackknife variance from ``l_i = log(1 - h_i)``
    with ``v_jk,Gauss`` its value for Gaussian rows.

    Example:
        >>> rep = report_from_stats(SigmaStats(jnp.eye(4) * 10.0, None, None, 0, 40, 40, 4))
        >>> round(float(rep.logdet), 4), bool(rep.valid)  # 4 log(10.001); all rows observed
        (9.2107, True)
    """
    from jax.scipy.special import polygamma

    m = stats.dim
    with x64():
        n, big_n = f64(stats.n_sub), f64(stats.n_total)
        shifts = report_shifts(delta, n, big_n, rho)
        beta = shifts[1] - delta
        zero = jnp.zeros((), jnp.float64)
        reason = jnp.zeros((), jnp.int32)
        if stats.gram is not None:
            tr = _dense_traces(f64(stats.gram), m, shifts, stats.inv_chol)
            tr_se = tr_trunc = jnp.zeros((5,), jnp.float64)
            mv, cg_res = jnp.zeros((), jnp.int32), zero
            exact = jnp.asarray(True)
        elif stats.logdets is not None:
            est = stats.logdets
            tr, tr_se, tr_trunc = f64(est.value), f64(est.stderr), f64(est.truncation)
            mv, cg_res = jnp.asarray(est.num_matvecs, jnp.int32), f64(est.cg_residual)
            exact = jnp.asarray(False)
        else:
            raise ValueError("SigmaStats needs `gram` (dense producers) or `logdets` (matrix-free producers).")
        s, upper, t_ld = tr[0], tr[1], tr[2]
        m_eff = jnp.clip(tr[3], 0.0, float(m))
        tau = jnp.maximum(tr[3] - tr[4], 0.0)
        u_cov = s - m * jnp.log(n)
        g_kf = upper - m * jnp.log(beta + delta)
        t_stat = t_ld - m * jnp.log(n)
        f = jnp.maximum(1.0 / n - 1.0 / big_n, 0.0)
        fpc = jnp.maximum(1.0 - n / big_n, 0.0)
        full = n >= big_n
        z = z_quantile(level)
        if stats.q_moments is None:
            nan = jnp.full((), jnp.nan, jnp.float64)
            sd_q = hw = bias = jnp.where(full, zero, nan)
            b2 = zero
            v_jk = jnp.where(full, zero, nan)
            var_vjk = zero
            reason = reason + _bit(~full, NO_BAND_STATS)
        else:
            qm = f64(stats.q_moments)
            k = f64(stats.q_count)
            mean_q, mean_q2, mean_l = qm[0] / k, qm[1] / k, qm[2] / k
            var_q = jnp.maximum(qm[1] - k * mean_q**2, 0.0) / jnp.maximum(k - 1.0, 1.0)
            var_l = jnp.maximum(qm[3] - k * mean_l**2, 0.0) / jnp.maximum(k - 1.0, 1.0)
            sd_q = jnp.where(full, zero, jnp.sqrt(var_q))
            hw = jnp.where(full, zero, z * sd_q * jnp.sqrt(f))
            bias = jnp.where(full, zero, -0.5 * f * (mean_q2 - 2.0 * mean_q + m))
            b2 = -0.5 * f * (mean_q2 - 2.0 * mean_q + m_eff)
            v_jk = (n - 1.0) ** 2 / n * var_l                 # (n-1)/n sum_i (l_i - mean l)^2
            # uncertainty of v_jk itself: Var(S^2) ~ (mu4 - sigma^4)/k (k rows summed)
            m2, m3, m4 = qm[3] / k, qm[4] / k, qm[5] / k
            mu4 = m4 - 4.0 * m3 * mean_l + 6.0 * m2 * mean_l**2 - 3.0 * mean_l**4
            s2 = jnp.maximum(m2 - mean_l**2, 0.0)
            var_vjk = (n - 1.0) ** 4 / n**2 * jnp.maximum(mu4 - s2**2, 0.0) / k
        # the calibrated interval for the full-sample U_cov
        bj, vj, bj2, vj2 = _jacobi_terms(m_eff, m, n, big_n)
        v_jk_gauss = (n - 1.0) * (polygamma(1, jnp.maximum((n - m_eff) / 2.0, 0.5)) - polygamma(1, n / 2.0))
        var = vj + fpc * (v_jk - v_jk_gauss)
        var = jnp.maximum(var, 0.5 * (vj - vj2))
        estimate = jnp.where(full, t_stat, t_stat - b2 - (bj - bj2))
        var_sub = jnp.where(full, zero, var)
        var = var_sub + tr_se[2] ** 2
        se = jnp.sqrt(var)
        # Welch-Satterthwaite degrees of freedom of var: the jackknife part (its own sampling error) and,
        # for stochastic producers, the probes' part (num_probes - 1)
        terms = 0.5 * fpc**2 * var_vjk                       # V^2 / dof of the jackknife part
        if stats.dof is not None:
            terms = terms + tr_se[2] ** 4 / max(int(stats.dof), 1)
        dof = jnp.where(var > 0, var**2 / jnp.maximum(terms, 1e-300), jnp.inf)
        z = jnp.where(dof > 1e6, z, t_quantile_traced(0.5 + level / 2.0, jnp.maximum(dof, MIN_DOF)))
        half = z * se + tr_trunc[2]
        few = (n < MIN_ROWS_PER_DIM * m_eff) | (n <= m) | (n < MIN_ROWS) | (dof < MIN_DOF)
        reason = reason + _bit(~full & few, TOO_FEW_ROWS)
        reason = reason + _bit(~full & (tau > MAX_RIDGE_STRADDLE * m_eff), NEAR_RIDGE)
        reason = reason + _bit(tr_trunc[2] > jnp.maximum(z * se, 1e-9 * jnp.abs(t_stat)), TRUNCATION)
        reason = reason + _bit(~(jnp.isfinite(estimate) & jnp.isfinite(half)), NOT_FINITE)
        valid = reason == 0
        nan = jnp.full((), jnp.nan, jnp.float64)
        estimate = jnp.where(valid, estimate, nan)
        se = jnp.where(valid, se, nan)
        c = lambda v, dt=jnp.float64: jnp.asarray(v, dt)  # noqa: E731
        return SigmaReport(
            logdet=s, u_cov=u_cov, g_kf=g_kf, lower=s, upper=upper, ci_halfwidth=hw, bias=bias, sd_q=sd_q,
            beta=c(beta), n_sub=c(stats.n_sub, jnp.int32), n_total=c(stats.n_total, jnp.int32),
            dim=c(m, jnp.int32), delta=c(delta), rho=c(rho), level=c(level), exact=exact,
            logdet_stderr=tr_se[0], upper_stderr=tr_se[1], num_matvecs=mv, cg_residual=cg_res,
            estimate=estimate, se=se, ci_low=jnp.where(valid, estimate - half, nan),
            ci_high=jnp.where(valid, estimate + half, nan), valid=valid, invalid_reason=c(reason, jnp.int32),
            m_eff=m_eff,
        )


