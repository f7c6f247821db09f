r"""Adaptive SLQ: add probe blocks inside ``lax.while_loop`` until the CI is narrow enough.

Each iteration runs Lanczos on a fresh block of ``block_probes`` probes
(``fold_in(key, iteration)``), accumulates the running sums ``sum x_i`` and
``sum x_i x_i^T`` of the per-probe samples, and stops as soon as

    num_probes >= min_probes  and  halfwidth <= max(atol, rtol * |value|)

or ``num_probes >= max_probes``.  The half-width uses the delta method and the
Student-t quantile with ``min_probes - 1`` degrees of freedom (conservative
for the larger counts reached).  Shapes are fixed (one block size), so the
whole loop is jit-compatible; the deflation subspace (if any) is computed once
before the loop and its matvecs are counted.  Sequential stopping makes the
final CI slightly anti-conservative in theory (optional stopping); the coverage
study in ``experiments/coverage_estimators.py`` measures it.

Example:
    >>> from sigma_jax.estimators.slq import logdet
    >>> est = adaptive_slq(logdet(), block_probes=8, num_steps=20, rtol=1e-3, max_probes=256)
    >>> # e = jax.jit(est)(key, op); int(e.num_probes) is the number actually used
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from sigma_jax._x64 import f64, x64
from sigma_jax.estimators import _base
from sigma_jax.estimators._base import Estimate
from sigma_jax.estimators.krylov import lanczos, ritz
from sigma_jax.estimators.slq import Quantity, _samples, top_eigenspace
from sigma_jax._linalg import mm as _mm

__all__ = ["adaptive_slq"]


def adaptive_slq(quantity: Quantity, block_probes: int, num_steps: int, *, rtol: float = 1e-2, atol: float = 0.0,
                 min_probes: int | None = None, max_probes: int = 1024, deflate: int = 0, oversample: int = 8,
                 power_iters: int = 3, sampler: str = "rademacher", dtype=jnp.float32, level: float = 0.95,
                 shift: float = 0.0, exact_trace: bool = True) -> Callable:
    """Constructor: ``estimate(key, operator) -> Estimate`` with a data-dependent number of probes.

    Args:
        quantity: what to estimate (:func:`~sigma_jax.estimators.slq.logdet`, ...).
        block_probes: probes added per iteration (static).
        num_steps: Lanczos steps per probe.
        rtol, atol: stop when the CI half-width <= max(atol, rtol * |value|).
        min_probes: at least this many probes (default ``2 * block_probes``, >= 2).
        max_probes: hard cap (rounded up to a whole block).
        deflate, oversample, power_iters, sampler, dtype, level, shift, exact_trace: as
            :func:`~sigma_jax.estimators.slq.slq_estimator`.

    Example:
        >>> from sigma_jax.estimators.slq import logdet
        >>> A = jnp.diag(jnp.array([1.0, 2.0, 3.0, 4.0]))
        >>> est = adaptive_slq(logdet(), block_probes=2, num_steps=4, rtol=1e-3, max_probes=16)
        >>> e = jax.jit(est)(jax.random.key(0), A)
        >>> round(float(e.value), 4), int(e.num_probes)   # zero variance here: stops at min_probes = 4
        (3.1781, 4)
    """
    _base.check_counts(block_probes=block_probes, num_steps=num_steps, max_probes=max_probes)
    level = _base.level_check(level)
    min_probes = max(2 * block_probes, 2) if min_probes is None else int(min_probes)
    if min_probes < 2 or min_probes > max_probes:
        raise ValueError(f"`min_probes` must lie in [2, max_probes={max_probes}], got {min_probes}.")
    if rtol < 0 or atol < 0 or (rtol == 0 and atol == 0):
        raise ValueError("`rtol` and `atol` must be >= 0 and not both 0.")
    tq = _base.t_quantile(0.5 + level / 2.0, min_probes - 1)
    tq_final = tq
    r = len(quantity.fns)

    def estimate(key, operator) -> Estimate:
        with x64():  # the loop carry holds float64 sums; probes/matvecs keep `dtype`
            d = _base.operator_dim(operator)
            if num_steps > d - deflate:
                raise ValueError(f"`num_steps`={num_steps} exceeds d - deflate = {d - deflate}.")
            mm = _base.matmat_rows(operator)
            k_defl, k_loop = jax.random.split(key)
            space = top_eigenspace(k_defl, operator, deflate, oversample=oversample, power_iters=power_iters,
                                   dtype=dtype) if deflate else None
            basis = None if space is None else space.vectors
            tr_op = _base.operator_trace(operator) if exact_trace else None
            with x64():
                rv = space.values if space is not None else jnp.zeros((0,), jnp.float64)
                offsets = jnp.stack([jnp.sum(f(rv + shift)) for f in quantity.fns])
                tr = None if tr_op is None else f64(tr_op) + shift * d

            def stats(n, s1, s2):
                with x64():
                    nf = jnp.maximum(n, 1).astype(jnp.float64)
                    mean = s1 / nf
                    cov = (s2 - nf * jnp.outer(mean, mean)) / jnp.maximum(nf - 1.0, 1.0)
                    value, g = jax.value_and_grad(lambda m: quantity.combine(m, tr))(mean + offsets)
                    se = jnp.sqrt(jnp.maximum(_mm(_mm(g, cov), g), 0.0) / nf)
                    return value, se

            def cond(carry):
                it, n, s1, s2 = carry
                value, se = stats(n, s1, s2)
                with x64():
                    tol = jnp.maximum(atol, rtol * jnp.abs(value))
                    wide = (tq * se > tol) | ~jnp.isfinite(se)
                return (n < min_probes) | ((n < max_probes) & wide)

            def body(carry):
                it, n, s1, s2 = carry
                z = _base.sample_probes(jax.random.fold_in(k_loop, it), block_probes, d, sampler, dtype)
                tri = lanczos(mm, z, num_steps, deflation=basis)
                nodes, weights = ritz(tri)
                with x64():
                    x = _samples(nodes, weights, quantity.fns, shift)
                    s1 = s1 + jnp.sum(x, axis=0)
                    s2 = s2 + _mm(x.T, x)
                return it + 1, n + block_probes, s1, s2

            with x64():
                init = (jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((r,), jnp.float64),
                        jnp.zeros((r, r), jnp.float64))
            it, n, s1, s2 = jax.lax.while_loop(cond, body, init)
            value, se = stats(n, s1, s2)
            mv = n * num_steps + (space.num_matvecs if space is not None else 0)
            with x64():
                return Estimate(value, se, (value - tq_final * se, value + tq_final * se), n.astype(jnp.int32),
                                jnp.asarray(mv, jnp.int32))

    return estimate

