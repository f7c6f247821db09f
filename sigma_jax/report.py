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

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sigma_jax import _checks
from sigma_jax._linalg import logdet_spd, z_quantile
from sigma_jax._x64 import f64, x64

__all__ = [
    "SigmaStats",
    "LogdetEstimates",
    "SigmaReport",
    "Drift",
    "SigmaInputs",
    "report_from_stats",
    "report_shifts",
    "row_moments",
    "NUM_MOMENTS",
    "drift",
    "NullSpread",
    "empirical_null",
    "resolve_subset",
    "resolve_inputs",
    "check_scalars",
    "check_finite",
    "validate_rows",
]


# --------------------------------------------------------------------------- sufficient statistics


class LogdetEstimates(NamedTuple):
    """A stochastic producer's estimates of ``logdet(G_A + s I)`` at the shifts of :func:`report_shifts`.

    Attributes:
        value: (k,) estimates.
        stderr: (k,) standard errors (over probes).
        num_matvecs: products with ``G_A`` spent (int32).
        cg_residual: largest relative residual of the band's solves (0 when not needed).
    """

    value: jax.Array
    stderr: jax.Array
    num_matvecs: jax.Array
    cg_residual: jax.Array


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["gram", "logdets", "q_moments", "q_count", "n_sub", "n_total"],
                   meta_fields=["dim"])
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
    """

    gram: Any
    logdets: Any
    q_moments: Any
    q_count: Any
    n_sub: Any
    n_total: Any
    dim: int


#: Number of per-row moments a producer sums (see :func:`row_moments`).
NUM_MOMENTS = 2


def row_moments(q, mask=None):
    """Per-row sufficient statistics of the band: ``(sum q_i, sum q_i^2)``.  Call inside ``x64()``.

    ``q_i = n_A v_i^T (G_A + delta I)^{-1} v_i``.  Every moment vanishes at ``q = 0``, so zero
    padding rows contribute nothing.  The one definition every producer uses.

    Example:
        >>> with x64():
        ...     s = row_moments(jnp.array([1.0, 2.0, 3.0]))
        >>> s.tolist()
        [6.0, 14.0]
    """
    q = f64(q)
    if mask is not None:
        q = q * f64(mask)
    return jnp.stack([jnp.sum(q), jnp.sum(q * q)])


def report_shifts(delta, n_sub, n_total, rho):
    """The diagonal shifts at which the report needs ``logdet(G_A + s I)``: ``(delta, beta + delta)``.

    Dense producers factor ``G_A`` at each; matrix-free ones estimate all from one quadrature.

    Example:
        >>> report_shifts(1e-3, 10, 20, 1.0)
        (0.001, 10.001)
    """
    beta = (n_total - n_sub) * rho
    return (delta, beta + delta)


# --------------------------------------------------------------------------- the report


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

    _INT_FIELDS = ("n_sub", "n_total", "dim", "num_matvecs")
    _BOOL_FIELDS = ("exact",)

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

        Fields missing from older files get neutral values (exact, zero errors).

        Example:
            >>> rep = report_from_stats(SigmaStats(jnp.eye(3) * 10.0, None, None, 0, 30, 30, 3))
            >>> float(SigmaReport.from_dict(rep.to_dict()).u_cov) == float(rep.u_cov)
            True
        """
        defaults = {"exact": True, "logdet_stderr": 0.0, "upper_stderr": 0.0, "num_matvecs": 0, "cg_residual": 0.0}
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
        pm = "+/-"
        est = "" if d["exact"] else f" (stochastic: se {d['logdet_stderr']:.3g})"
        bracket = "in" if d["exact"] else "in (estimated, not guaranteed)"
        rows = [
            ("n_A / n_total / m", f"{d['n_sub']} / {d['n_total']} / {d['dim']}"),
            ("delta, rho, beta", f"{d['delta']:.3g}, {d['rho']:.3g}, {d['beta']:.6g}"),
            ("S = logdet(G_A + dI)", f"{d['logdet']:.6f}{est}"),
            ("U_cov (Track II)", f"{d['u_cov']:.6f} {pm} {d['ci_halfwidth']:.4f} (paper's {100 * d['level']:.0f}% band)"),
            ("  subsampling bias (est.)", f"{d['bias']:.4f}"),
            ("G_KF (Track I)", f"{d['g_kf']:.6f}"),
            (f"logdet(G_full + dI) {bracket}", f"[{d['lower']:.6f}, {d['upper']:.6f}]"),
        ]
        w = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(w)}  {v}" for k, v in rows)


def report_from_stats(stats: SigmaStats, *, delta: float = 1e-3, rho: float = 1.0, level: float = 0.95) -> SigmaReport:
    """The one assembler: a :class:`SigmaReport` from a producer's :class:`SigmaStats`.

    Dense statistics (``gram``) are factored by Cholesky at :func:`report_shifts`; matrix-free
    ones carry their estimates.  Without ``q_moments`` the band, ``bias`` and ``sd_q`` are NaN
    whenever ``n_A < n_total`` (they need the rows).  jit / vmap / grad compatible.

    Example:
        >>> rep = report_from_stats(SigmaStats(jnp.eye(4) * 10.0, None, None, 0, 40, 40, 4))
        >>> round(float(rep.logdet), 4)  # 4 log(10.001)
        9.2107
    """
    m = stats.dim
    with x64():
        n_sub, n_total = f64(stats.n_sub), f64(stats.n_total)
        shifts = report_shifts(delta, n_sub, n_total, rho)
        beta = shifts[1] - delta
        if stats.gram is not None:
            g = f64(stats.gram)
            eye = jnp.eye(m, dtype=jnp.float64)
            s, upper = (logdet_spd(g + sh * eye) for sh in shifts)
            zero = jnp.zeros((), jnp.float64)
            s_se = up_se = cg_res = zero
            mv = jnp.zeros((), jnp.int32)
            exact = jnp.asarray(True)
        elif stats.logdets is not None:
            est = stats.logdets
            s, upper = f64(est.value[0]), f64(est.value[1])
            s_se, up_se = f64(est.stderr[0]), f64(est.stderr[1])
            mv, cg_res = jnp.asarray(est.num_matvecs, jnp.int32), f64(est.cg_residual)
            exact = jnp.asarray(False)
        else:
            raise ValueError("SigmaStats needs `gram` (dense producers) or `logdets` (matrix-free producers).")
        u_cov = s - m * jnp.log(n_sub)
        g_kf = upper - m * jnp.log(beta + delta)
        frac = 1.0 / n_sub - 1.0 / n_total
        full = n_sub >= n_total
        zero = jnp.zeros((), jnp.float64)
        if stats.q_moments is None:
            nan = jnp.full((), jnp.nan, jnp.float64)
            sd_q = hw = bias = jnp.where(full, zero, nan)
        else:
            qm = f64(stats.q_moments)
            k = f64(stats.q_count)
            mean_q = qm[0] / k
            var_q = jnp.maximum(qm[1] - k * mean_q**2, 0.0) / jnp.maximum(k - 1.0, 1.0)
            sd_q = jnp.where(full, zero, jnp.sqrt(var_q))
            hw = jnp.where(full, zero, z_quantile(level) * sd_q * jnp.sqrt(jnp.maximum(frac, 0.0)))
            bias = jnp.where(full, zero, -0.5 * frac * (qm[1] / k - 2.0 * mean_q + m))
        c = lambda v, dt=jnp.float64: jnp.asarray(v, dt)  # noqa: E731
        return SigmaReport(
            logdet=s, u_cov=u_cov, g_kf=g_kf, lower=s, upper=upper, ci_halfwidth=hw, bias=bias, sd_q=sd_q,
            beta=c(beta), n_sub=c(stats.n_sub, jnp.int32), n_total=c(stats.n_total, jnp.int32),
            dim=c(m, jnp.int32), delta=c(delta), rho=c(rho), level=c(level), exact=exact,
            logdet_stderr=s_se, upper_stderr=up_se, num_matvecs=mv, cg_residual=cg_res,
        )


# --------------------------------------------------------------------------- drift


class Drift(NamedTuple):
    """Drift of SIGMA's tracks relative to the first report (eq. 3.20).

    Attributes:
        dU: ``U_cov(g) - U_cov(0)``, shape (G,).
        dG: ``G_KF(g) - G_KF(0)``, shape (G,).
        band: half-width for ``dU``: ``sqrt(hw_g^2 + hw_0^2)`` (independent subsample
            errors), or the larger of that and ``null_spread`` when one is given.
        significant: ``dU < -band`` (collapse) or ``dU > band``.
    """

    dU: jax.Array
    dG: jax.Array
    band: jax.Array
    significant: jax.Array


def _stack(reports):
    if isinstance(reports, SigmaReport):
        return reports
    reports = list(reports)
    if not reports:
        raise ValueError("`reports` is empty; pass one SigmaReport per generation.")
    with x64():
        return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *reports)


def drift(reports: Sequence[SigmaReport] | SigmaReport, *, null_spread: float | None = None) -> Drift:
    """``dU`` and ``dG`` of each report relative to the first (eq. 3.20), with a band.

    Args:
        reports: a list of :class:`SigmaReport` (one per generation) or one stacked
            report with a leading generation axis (e.g. from ``jax.vmap``).
        null_spread: optional half-width of the re-sampling noise of generation 0
            (e.g. the spread of U_cov over re-samples with other keys).  The band is
            then the larger of it and the Theorem-3 band: the Theorem-3 band covers
            only the subsampling of n_A out of n_total rows.

    Example:
        >>> reps = [report_from_stats(SigmaStats(jnp.eye(2) * g, None, None, 0, 9, 9, 2)) for g in (9.0, 8.0)]
        >>> drift(reps).dU.shape
        (2,)
    """
    stacked = _stack(reports)
    with x64():
        u, gk, hw = f64(stacked.u_cov), f64(stacked.g_kf), f64(stacked.ci_halfwidth)
        if u.ndim != 1:
            raise ValueError(f"`reports` must stack to one generation axis, got u_cov of shape {u.shape}.")
        du, dg = u - u[0], gk - gk[0]
        band = jnp.sqrt(hw**2 + hw[0] ** 2)
        if null_spread is not None:
            band = jnp.maximum(band, float(null_spread))
        return Drift(du, dg, band, jnp.abs(du) > band)


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
        >>> rng = np.random.default_rng(0)
        >>> null = empirical_null(-100.0 + rng.normal(size=39), -100.0)
        >>> null.num_resamples, 1.5 < null.quantile < 3.0
        (39, True)
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


# --------------------------------------------------------------------------- the entry: validation, once


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


def check_finite(report: SigmaReport, delta: float) -> SigmaReport:
    """Raise when a concrete report's log-det is not finite (a failed Cholesky); return it otherwise.

    Example:
        >>> rep = report_from_stats(SigmaStats(-jnp.eye(2), None, None, 0, 5, 5, 2))
        >>> check_finite(rep, 1e-3)
        Traceback (most recent call last):
        ...
        FloatingPointError: the Cholesky factorisation of G_A + delta*I failed (delta=0.001); ...
    """
    if _checks.is_concrete(report.logdet) and np.ndim(report.logdet) == 0 and not np.isfinite(float(report.logdet)):
        raise FloatingPointError(f"the Cholesky factorisation of G_A + delta*I failed (delta={delta}); "
                                 "increase `delta` or check the embeddings' scale.")
    return report
