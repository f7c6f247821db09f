r"""SIGMA's log-det quantities through the Gram operator only (never forming ``G``), with confidence intervals.

A *producer* of SIGMA's statistics (:class:`sigma_jax.report.SigmaStats`); the report is assembled by
:func:`sigma_jax.report.report_from_stats`, the same assembler as the exact path's, so the result is a
:class:`sigma_jax.report.SigmaReport` with ``exact=False``:

* ``S = logdet(G_A + delta I)`` and ``logdet(G_A + (beta + delta) I)`` from **one** (optionally
  deflated) SLQ run on ``G_A + delta I`` (Krylov spaces are shift-invariant: the second is the
  same quadrature with nodes shifted by ``beta``); ``u_cov = S - m log n_A``,
  ``g_kf = logdet(G_A + (beta+delta) I) - m log(beta + delta)``, ``lower = S``, ``upper``;
* the Theorem-3 band ``z sd(q) sqrt(1/n_A - 1/n_total)`` and the second-order ``bias`` from
  ``q_i = n_A v_i^T (G_A + delta I)^{-1} v_i`` on ``band_rows`` randomly chosen subset rows, each
  solved by block conjugate gradients (rows as probes, ``cg_iters`` iterations);
* the report's ``logdet_stderr`` (standard error of ``S``, hence of ``u_cov``), ``upper_stderr`` (of
  ``upper`` and ``g_kf``), ``num_matvecs`` and ``cg_residual`` (max relative CG residual).

Cost: ``num_probes * num_steps + (power_iters + 2)(deflate + oversample)`` products with ``G_A``
(each ``O(n_A m)``) plus up to ``cg_iters`` block products of ``band_rows`` rows for the band (conjugate gradients
preconditioned by the deflation subspace) (only when ``n_A < n_total``), against ``O(n_A m^2 + m^3)``
for the exact path.  The measured crossover is in ``experiments/bench_estimators.py``
(``AUTO_CROSSOVER_M`` below).

Subset: ``subset`` (None | int n_A | indices) is resolved exactly as in ``sigma_jax.sigma`` with
``key``, so the same key gives the same observed rows; probes use ``fold_in(key, 1)``.

Example:
    >>> emb = jax.random.normal(jax.random.key(0), (300, 24))
    >>> rep = sigma_stochastic(jax.random.key(1), emb, subset=200, num_steps=12, deflate=0, band_rows=16)
    >>> float(rep.stderr) > 0, float(rep.ci_halfwidth) > 0, int(rep.n_sub), int(rep.n_total)
    (True, True, 200, 300)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from sigma_jax._linalg import mm as _mm
from sigma_jax._x64 import f64, x64
from sigma_jax.estimators import _base
from sigma_jax.estimators.krylov import lanczos, ritz
from sigma_jax.estimators.slq import _samples, top_eigenspace
from sigma_jax.operators import GramOperator, gram_operator
from sigma_jax.report import (LogdetEstimates, SigmaInputs, SigmaReport, SigmaStats, band_ridge, check_finite,
                              report_from_stats, report_shifts, resolve_inputs, row_moments, validate_rows)

__all__ = ["StochasticSigmaReport", "sigma_stochastic", "stochastic_stats", "report_trace_fns", "quadrature_traces",
           "AUTO_CROSSOVER_M"]

#: ``sigma(..., method="auto")``: use the stochastic path for ``m >= AUTO_CROSSOVER_M`` when all rows are
#: observed (``n_A == n_total``, no Theorem-3 band to compute).  Measured on the shared 2-core CPU with
#: n = 2m (``experiments/bench_estimators.py --crossover``): exact / stochastic(f64) / stochastic(f32)
#: = 1.83 / 3.04 / 1.91 s at m = 2048 and 4.69 / 3.97 / 4.50 s at m = 4096.  With a band
#: (n_A < n_total) the block-CG solves dominate and the stochastic path was slower at every measured m
#: (m = 4096: 14.0 s exact vs 27.6 s f32 / 78.5 s f64), so "auto" should stay exact there.
AUTO_CROSSOVER_M = 4096

#: Former name of the stochastic report: every SIGMA path now returns :class:`SigmaReport`.
StochasticSigmaReport = SigmaReport


def _block_cg(mm, b, iters: int, tol: float, precond=None):
    """Solve ``X A = B`` for rows (A SPD) by (preconditioned) CG until every relative residual <= tol
    or ``iters`` steps.  ``precond(R) ~ R A^{-1}`` (SPD).  Returns (X, max relative residual, iterations)."""
    apply_m = (lambda r: r) if precond is None else precond
    x = jnp.zeros_like(b)
    b2 = jnp.maximum(jnp.sum(b * b, axis=1), jnp.finfo(b.dtype).tiny)
    z = apply_m(b)
    rz = jnp.sum(b * z, axis=1)

    def cond(c):
        i, x, r, p, rz = c
        return (i < iters) & (jnp.max(jnp.sum(r * r, axis=1) / b2) > tol * tol)

    def body(c):
        i, x, r, p, rz = c
        ap = mm(p)
        pap = jnp.sum(p * ap, axis=1)
        alpha = jnp.where(pap > 0, rz / jnp.where(pap > 0, pap, 1.0), 0.0)
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * ap
        z = apply_m(r)
        rz_new = jnp.sum(r * z, axis=1)
        beta = jnp.where(rz > 0, rz_new / jnp.where(rz > 0, rz, 1.0), 0.0)
        return i + 1, x, r, z + beta[:, None] * p, rz_new

    i, x, r, p, rz = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), x, b, z, rz))
    return x, jnp.sqrt(jnp.max(jnp.sum(r * r, axis=1) / b2)), i


def _deflation_preconditioner(space):
    """``R -> R/sigma + (R U^T)(1/theta - 1/sigma) U``, sigma = smallest deflated Ritz value:
    the top of the spectrum is inverted exactly, the rest scaled (Frank & Vuik 2001 style)."""
    u = space.vectors
    theta = space.values.astype(u.dtype)
    sigma = theta[-1]
    coef = 1.0 / theta - 1.0 / sigma
    return lambda r: r / sigma + _mm(_mm(r, u.T) * coef, u)


_OPTIONS = ("num_probes", "num_steps", "deflate", "oversample", "power_iters", "band_rows", "cg_iters", "cg_tol",
            "dtype")


def sigma_stochastic(key, embeddings, *, n_total: int | None = None, subset=None, delta: float = 1e-3,
                     rho: float = 1.0, normalize: bool = True, level: float = 0.95, num_probes: int = 32,
                     num_steps: int = 40, deflate: int = 16, oversample: int = 8, power_iters: int = 2,
                     band_rows: int = 64, cg_iters: int = 300, cg_tol: float = 1e-4, dtype=jnp.float64,
                     ridge_only: bool = False, validate: bool = True) -> SigmaReport:
    r"""Stochastic (matrix-free) SIGMA report; the same as ``sigma_jax.sigma(..., method="stochastic")``.

    Args:
        key: PRNG key (subset draw as in ``sigma_jax.sigma``; probes from ``fold_in(key, 1)``).
        embeddings: (n, m) float array.
        n_total, subset, delta, rho, normalize, level, ridge_only, validate: as ``sigma_jax.sigma``.
        num_probes, num_steps: SLQ probes and Lanczos steps.
        deflate, oversample, power_iters: top-eigenspace deflation (0 disables).
        band_rows: subset rows whose ``q_i`` are solved for the band (``min(band_rows, n_A)``).
        cg_iters, cg_tol: block-CG cap and relative-residual tolerance for those solves.
        dtype: probe / matvec dtype (float64 default: ``G_A + delta I`` is badly conditioned for
            collapsed embeddings; float32 halves the cost and is fine for healthy ones).

    Returns:
        :class:`sigma_jax.report.SigmaReport` with ``exact=False``.

    Example:
        >>> from sigma_jax.core import sigma
        >>> emb = jax.random.normal(jax.random.key(0), (300, 24))
        >>> rep = sigma_stochastic(jax.random.key(1), emb, subset=200, num_steps=12, deflate=0, band_rows=16)
        >>> exact = sigma(emb, subset=200, key=jax.random.key(1))      # same key: same 200 rows
        >>> bool(abs(float(rep.u_cov) - float(exact.u_cov)) < 4 * float(rep.logdet_stderr) + 1e-2)
        True
    """
    inp = resolve_inputs(embeddings, n_total=n_total, subset=subset, key=key, delta=delta, rho=rho, level=level,
                         ridge_only=ridge_only)
    if validate:
        validate_rows(inp, normalize=normalize, rho=rho)
    report = stochastic_report(key, inp, delta=delta, rho=rho, normalize=normalize, level=level,
                               num_probes=num_probes, num_steps=num_steps, deflate=deflate, oversample=oversample,
                               power_iters=power_iters, band_rows=band_rows, cg_iters=cg_iters, cg_tol=cg_tol,
                               dtype=dtype)
    return check_finite(report, delta) if validate else report


def stochastic_report(key, inp: SigmaInputs, *, delta: float, rho: float, normalize: bool, level: float,
                      **options: Any) -> SigmaReport:
    """The stochastic producer plus the one assembler, on validated inputs (used by ``sigma_jax.sigma``).

    Example:
        >>> inp = resolve_inputs(jax.random.normal(jax.random.key(0), (300, 24)))
        >>> rep = stochastic_report(jax.random.key(1), inp, delta=1e-3, rho=1.0, normalize=True, level=0.95,
        ...                         num_steps=12, deflate=0)
        >>> bool(rep.exact)
        False
    """
    unknown = set(options) - set(_OPTIONS)
    if unknown:
        raise TypeError(f"unknown stochastic option(s) {sorted(unknown)}; choose from {_OPTIONS}.")
    rows = jnp.asarray(inp.embeddings) if inp.idx is None else jnp.asarray(inp.embeddings)[jnp.asarray(inp.idx)]
    stats = stochastic_stats(jax.random.fold_in(key, 1), rows, n_total=inp.n_total, delta=delta, rho=rho,
                             normalize=normalize, **options)
    return report_from_stats(stats, delta=delta, rho=rho, level=level)


def stochastic_stats(key, rows, *, n_total: int | None = None, delta: float = 1e-3, rho: float = 1.0,
                     normalize: bool = True, num_probes: int = 32, num_steps: int = 40, deflate: int = 16,
                     oversample: int = 8, power_iters: int = 2, band_rows: int = 64, cg_iters: int = 300,
                     cg_tol: float = 1e-4, dtype=jnp.float64) -> SigmaStats:
    """The matrix-free producer: SLQ estimates of the report's log-dets and CG-solved q-moments of a row sample.

    ``rows`` are the observed subset rows (n_A, m); ``key`` draws deflation, probes and the band's rows.

    Example:
        >>> s = stochastic_stats(jax.random.key(0), jax.random.normal(jax.random.key(1), (300, 24)), n_total=600,
        ...                      num_steps=12, deflate=0, band_rows=16)
        >>> s.logdets.value.shape, int(s.q_count)
        ((5,), 16)
    """
    n_sub, m = rows.shape
    n_total = n_sub if n_total is None else int(n_total)
    _base.check_counts(num_probes=num_probes, num_steps=num_steps, band_rows=band_rows, cg_iters=cg_iters)
    if num_steps > m - deflate:
        raise ValueError(f"`num_steps`={num_steps} must be <= m - deflate = {m - deflate}.")
    with x64():
        return _stochastic_stats(key, rows, n_total=n_total, delta=float(delta), rho=float(rho),
                                 normalize=normalize, num_probes=num_probes, num_steps=num_steps, deflate=deflate,
                                 oversample=oversample, power_iters=power_iters, band_rows=min(band_rows, n_sub),
                                 cg_iters=cg_iters, cg_tol=float(cg_tol), dtype=jnp.dtype(dtype))


def report_trace_fns(delta: float, shifts):
    """Functions of a node ``t = lambda + delta`` of ``G_A + delta I`` whose traces the report needs.

    The log-dets at :func:`sigma_jax.report.report_shifts` and ``tr R``, ``tr R^2`` with
    ``R = G_A (G_A + eps I)^{-1}``, in the order of :class:`sigma_jax.report.LogdetEstimates`.

    Example:
        >>> len(report_trace_fns(1e-3, (1e-3, 5.0, 5e-4)))
        5
    """
    log = lambda x: jnp.log(jnp.maximum(x, jnp.finfo(jnp.float64).tiny))  # noqa: E731
    eps = shifts[2]
    lam = lambda t: jnp.maximum(t - delta, 0.0)  # noqa: E731
    fns = tuple((lambda t, e=sh - delta: log(t + e)) for sh in shifts)
    return fns + (lambda t: lam(t) / (lam(t) + eps), lambda t: (lam(t) / (lam(t) + eps)) ** 2)


def quadrature_traces(tri, fns, offsets):
    """Per-function estimates and standard errors of ``tr f(A)`` from a Lanczos run (plus exact offsets).

    Example:
        >>> A = jnp.diag(jnp.arange(1.0, 5.0))
        >>> tri = lanczos(lambda v: v @ A, jnp.ones((2, 4)), 4)
        >>> value, stderr = quadrature_traces(tri, (lambda t: t,), jnp.zeros(1))
        >>> round(float(value[0]), 6)     # tr A
        10.0
    """
    nodes, weights = ritz(tri)
    x = _samples(nodes, weights, fns)
    ests = [_base.estimate_from_samples(x[:, i:i + 1], offsets[i:i + 1], lambda mu, a: mu[0], 0.95, 0)
            for i in range(len(fns))]
    return jnp.stack([e.value for e in ests]), jnp.stack([e.stderr for e in ests])


def _stochastic_stats_impl(key, rows, *, n_total, delta, rho, normalize, num_probes, num_steps, deflate,
                           oversample, power_iters, band_rows, cg_iters, cg_tol, dtype):
    n_sub, m = rows.shape
    shifts = report_shifts(delta, n_sub, n_total, rho)
    op = gram_operator(rows.astype(dtype), normalize=normalize)
    op = GramOperator(op.embeddings, op.row_scale, jnp.asarray(delta, dtype), op.side, op.precision)
    mm = op.matmat_rows
    k_defl, k_probe, k_band = jax.random.split(key, 3)
    space = top_eigenspace(k_defl, op, deflate, oversample=oversample, power_iters=power_iters,
                           dtype=dtype) if deflate else None
    z = _base.sample_probes(k_probe, num_probes, m, "rademacher", dtype)
    tri = lanczos(mm, z, num_steps, deflation=None if space is None else space.vectors)
    fns = report_trace_fns(delta, shifts)
    rv = space.values if space is not None else jnp.zeros((0,), jnp.float64)
    offsets = jnp.stack([jnp.sum(f(f64(rv))) for f in fns])
    value, stderr = quadrature_traces(tri, fns, offsets)
    # truncation guard: the same probes' quadrature after s/2 steps (the leading block of the same run)
    h = max(num_steps // 2, 1)
    half = type(tri)(tri.alphas[:, :h], tri.betas[:, :h], tri.norms, None, tri.residual)
    value_half, _ = quadrature_traces(half, fns, offsets)
    q_sums, cg_res, mv_band = None, jnp.zeros((), jnp.float64), jnp.zeros((), jnp.int32)
    if n_sub < n_total:
        pick = jax.random.choice(k_band, n_sub, (band_rows,), replace=False)
        v = f64(rows[pick])
        if normalize:
            v = v / jnp.linalg.norm(v, axis=1, keepdims=True)
        v = v.astype(dtype)
        eps = band_ridge(delta, n_sub, n_total)   # the band's forms use the matched ridge
        mm_eps = lambda x: mm(x) + jnp.asarray(eps - delta, dtype) * x  # noqa: E731
        sol, cg_res, used = _block_cg(mm_eps, v, cg_iters, cg_tol,
                                       None if space is None else _deflation_preconditioner(space))
        q_sums = row_moments(n_sub * jnp.sum(f64(sol) * f64(v), axis=1), n_sub)
        mv_band = used * band_rows
    mv = num_probes * num_steps + (space.num_matvecs if space is not None else 0) + mv_band
    logdets = LogdetEstimates(value, stderr, jnp.abs(value - value_half), jnp.asarray(mv, jnp.int32), f64(cg_res))
    return SigmaStats(None, logdets, q_sums, band_rows, n_sub, n_total, m, num_probes - 1)


_stochastic_stats = jax.jit(_stochastic_stats_impl, static_argnames=(
    "n_total", "delta", "rho", "normalize", "num_probes", "num_steps", "deflate", "oversample",
    "power_iters", "band_rows", "cg_iters", "cg_tol", "dtype"))
