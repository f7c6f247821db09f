r"""Hutchinson and Hutch++ estimators of ``tr A`` and ``tr A^2`` with confidence intervals.

* Hutchinson (1989): ``tr A^p ~ mean_i z_i^T A^p z_i``; for ``p = 2`` each sample is ``||A z_i||^2``
  (one matvec).  Variance ``2 (||A^p||_F^2 - sum_i (A^p)_{ii}^2)`` for Rademacher probes.
* Hutch++ (Meyer, Musco, Musco & Woodruff 2021): a third of the matvecs sketch ``Q = orth(A S)``;
  ``tr(Q^T A^p Q)`` is exact and Hutchinson runs on ``(I - QQ^T) A^p (I - QQ^T)`` with the last third.
  The standard error and CI are conditional on ``Q`` (the sketch part has no variance given Q).

Example:
    >>> from sigma_jax import gram
    >>> op = gram.gram_operator(jax.random.normal(jax.random.key(0), (300, 50)))
    >>> e = jax.jit(hutchpp(30))(jax.random.key(1), op)
    >>> abs(float(e.value) - float(op.trace())) < 5 * float(e.stderr) + 1e-3
    True
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from sigma_jax._linalg import HIGHEST, mm as _mm
from sigma_jax._x64 import f64, x64
from sigma_jax.estimators import _base
from sigma_jax.estimators._base import Estimate

__all__ = ["hutchinson", "hutchpp"]


def _check_power(power):
    if power not in (1, 2):
        raise ValueError(f"`power` must be 1 (tr A) or 2 (tr A^2 = ||A||_F^2), got {power!r}.")


def _quad_samples(mm, z, power):
    az = mm(z)
    if power == 1:
        return jnp.einsum("kd,kd->k", z, az, precision=HIGHEST)
    return jnp.einsum("kd,kd->k", az, az, precision=HIGHEST)


def _ident(m, aux):
    return m[0]


def hutchinson(num_probes: int, *, power: int = 1, sampler: str = "rademacher", dtype=jnp.float32,
               level: float = 0.95) -> Callable:
    """Constructor: ``estimate(key, operator) -> Estimate`` of ``tr A^power`` with ``num_probes`` matvecs.

    Example:
        >>> A = jnp.diag(jnp.array([1.0, 2.0, 3.0, 4.0]))
        >>> e = hutchinson(8)(jax.random.key(0), A)
        >>> float(e.value), int(e.num_matvecs)        # exact for a diagonal A with +-1 probes
        (10.0, 8)
    """
    _base.check_counts(num_probes=num_probes)
    _check_power(power)
    level = _base.level_check(level)
    if num_probes < 2:
        raise ValueError("`num_probes` must be >= 2 to estimate a standard error.")

    def estimate(key, operator) -> Estimate:
        d = _base.operator_dim(operator)
        z = _base.sample_probes(key, num_probes, d, sampler, dtype)
        x = _quad_samples(_base.matmat_rows(operator), z, power)
        with x64():
            return _base.estimate_from_samples(f64(x)[:, None], jnp.zeros((1,)), _ident, level, num_probes)

    return estimate


def hutchpp(num_matvecs: int, *, power: int = 1, sampler: str = "rademacher", dtype=jnp.float32,
            level: float = 0.95) -> Callable:
    """Constructor: Hutch++ estimate of ``tr A^power`` using ``num_matvecs`` matvecs in total.

    ``power=1``: sketch ``k = num_matvecs // 3`` columns (k matvecs), ``tr(Q^T A Q)`` (k matvecs),
    Hutchinson with the remaining ``num_matvecs - 2k`` projected probes.
    ``power=2``: ``tr(Q^T A^2 Q) = ||A Q||_F^2`` reuses the same ``A Q`` block, so the split is the same.

    Example:
        >>> A = jnp.diag(jnp.array([1.0, 2.0, 3.0, 0.0, 0.0, 0.0]))   # rank 3 = num_matvecs // 3
        >>> e = hutchpp(9, power=2)(jax.random.key(0), A)              # the sketch captures all of tr A^2
        >>> round(float(e.value), 3), int(e.num_probes), int(e.num_matvecs)
        (14.0, 3, 9)
    """
    _base.check_counts(num_matvecs=num_matvecs)
    _check_power(power)
    level = _base.level_check(level)
    k = num_matvecs // 3
    r = num_matvecs - 2 * k
    if k < 1 or r < 2:
        raise ValueError(f"`num_matvecs` must be >= 4 for Hutch++ (got {num_matvecs}).")

    def estimate(key, operator) -> Estimate:
        d = _base.operator_dim(operator)
        if k >= d:
            raise ValueError(f"Hutch++ sketch size num_matvecs // 3 = {k} must be < d = {d}.")
        mm = _base.matmat_rows(operator)
        ks, kz = jax.random.split(key)
        s = _base.sample_probes(ks, k, d, sampler, dtype)
        q, _ = jnp.linalg.qr(mm(s).T)
        q = q.T                                                  # (k, d) orthonormal rows
        aq = mm(q)
        head = jnp.sum(q * aq) if power == 1 else jnp.sum(aq * aq)
        z = _base.sample_probes(kz, r, d, sampler, dtype)
        z = z - _mm(_mm(z, q.T), q)
        x = _quad_samples(mm, z, power)
        with x64():
            return _base.estimate_from_samples(f64(x)[:, None], f64(head)[None], _ident, level, num_matvecs,
                                               total_probes=r)

    return estimate
