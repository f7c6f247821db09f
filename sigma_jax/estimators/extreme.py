r"""Extreme eigenvalues of a symmetric positive semi-definite operator with guaranteed brackets.

Lanczos from k start vectors (s steps each) gives Ritz values ``theta``.  By the
Cauchy interlacing / Courant-Fischer theorems every Ritz value lies in
``[lambda_min, lambda_max]``, so ``max theta`` is a **lower** bound on
``lambda_max`` and ``min theta`` an **upper** bound on ``lambda_min``.

Upper bound on ``lambda_max`` (guaranteed for PSD ``A`` with known trace).  In the
basis ``[Q, Q_perp]`` of one probe's Krylov space, ``A = [[T, E], [E^T, C]]`` with
``||E|| = beta_s`` (the last Lanczos coefficient) and ``C`` PSD with
``||C|| <= tr C = tr A - tr T``.  For a PSD block matrix
``||A|| <= || [[||T||, ||E||], [||E||, ||C||]] ||`` hence

    lambda_max <= (a + c)/2 + sqrt(((a - c)/2)^2 + beta_s^2),   a = theta_max(T), c = max(tr A - tr T, 0),

minimised over probes and capped by ``tr A``.  For a :class:`~sigma_jax.gram.GramOperator`
(``A = S^T S + delta I`` with ``S`` the scaled rows) a second guaranteed bound is the
Collatz-Wielandt bound on the nonnegative matrix ``|S|^T |S| >= |A - delta I|`` entrywise:
``lambda_max <= delta + max_i (|S|^T |S| x)_i / x_i`` for any positive ``x`` (``x`` from a few
power steps); the smaller bound is reported.

Lower bound on ``lambda_min``: the PSD floor (the operator's ``delta`` for a GramOperator, else 0),
raised by a Gershgorin bound where the operator exposes its entries: for a GramOperator
``lambda_min >= delta + min_i (2 G_ii - (|S|^T |S| 1)_i)`` (since ``|G_ij| <= (|S|^T|S|)_ij``), for a
dense operator the classical discs.  Matvec-only lower bounds need more than the operator offers;
``Brackets.min_low_is_floor`` says when the reported lower end is just the floor.

Breakdown.  When Lanczos finds an invariant subspace (``beta_j = 0``) the trailing steps are padding
(see :mod:`sigma_jax.estimators.krylov`): the bound then uses the trace of the live block only and
``E = 0`` (an invariant subspace has no coupling), so it stays guaranteed.

Floating point: Ritz values carry an error of about ``eps * ||A||``; brackets are widened by
``safety = 32 * eps * sqrt(s) * bound`` on each side.

Example:
    >>> from sigma_jax import gram
    >>> op = gram.gram_operator(jax.random.normal(jax.random.key(0), (400, 30)), delta=1e-3)
    >>> br = jax.jit(eigen_brackets(20))(jax.random.key(1), op)
    >>> bool(br.max_low <= br.max_high)
    True
"""

from __future__ import annotations

import contextlib

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from sigma_jax._linalg import mm as _mm
from sigma_jax._x64 import f64, x64
from sigma_jax.estimators import _base
from sigma_jax.estimators.krylov import lanczos, ritz

__all__ = ["Brackets", "eigen_brackets"]


class Brackets(NamedTuple):
    """Guaranteed intervals for the extreme eigenvalues (float64 scalars).

    Attributes:
        max_low, max_high: ``max_low <= lambda_max <= max_high``.
        min_low, min_high: ``min_low <= lambda_min <= min_high``.
        ritz_max, ritz_min: the best Ritz values (point estimates).
        num_matvecs: int32.
        min_low_is_floor: True where ``min_low`` is only the PSD floor (no better bound was available).
    """

    max_low: jax.Array
    max_high: jax.Array
    min_low: jax.Array
    min_high: jax.Array
    ritz_max: jax.Array
    ritz_min: jax.Array
    num_matvecs: jax.Array
    min_low_is_floor: jax.Array

    @property
    def lambda_max(self):
        return self.max_low, self.max_high

    @property
    def lambda_min(self):
        return self.min_low, self.min_high


def _collatz_wielandt(op, power_steps: int):
    """Guaranteed ``lambda_max(|S|^T|S|)`` upper bound for a GramOperator (``None`` otherwise)."""
    if not (hasattr(op, "embeddings") and hasattr(op, "side") and hasattr(op, "row_scale")):
        return None
    with x64():
        a = jnp.abs(f64(op.embeddings))
        if op.row_scale is not None:
            a = a * f64(op.row_scale)[:, None]
        if op.side == "feature":
            apply = lambda x: _mm(a.T, _mm(a, x))  # noqa: E731
            x = jnp.ones((a.shape[1],), jnp.float64)
        else:
            apply = lambda x: _mm(a, _mm(a.T, x))  # noqa: E731
            x = jnp.ones((a.shape[0],), jnp.float64)
        for _ in range(power_steps):
            y = apply(x)
            x = y / jnp.max(y) + 1e-12        # stays strictly positive
        y = apply(x)
        return jnp.max(y / x) + f64(op.delta)


def _gershgorin_low(op):
    """Guaranteed Gershgorin lower bound on ``lambda_min`` (None when the operator hides its entries)."""
    from sigma_jax.operators import DenseOperator

    with x64():
        if isinstance(op, DenseOperator) or (hasattr(op, "shape") and hasattr(op, "ndim") and op.ndim == 2):
            a = f64(op.matrix if isinstance(op, DenseOperator) else op)
            d = jnp.diagonal(a)
            return jnp.min(2.0 * d - jnp.sum(jnp.abs(a), axis=1))
        if not (hasattr(op, "embeddings") and hasattr(op, "side") and hasattr(op, "row_scale")):
            return None
        s = f64(op.embeddings)
        if op.row_scale is not None:
            s = s * f64(op.row_scale)[:, None]
        a = jnp.abs(s)
        if op.side == "feature":
            diag, rows = jnp.sum(s * s, axis=0), _mm(a.T, _mm(a, jnp.ones((a.shape[1],), jnp.float64)))
        else:
            diag, rows = jnp.sum(s * s, axis=1), _mm(a, _mm(a.T, jnp.ones((a.shape[0],), jnp.float64)))
        return f64(op.delta) + jnp.min(2.0 * diag - rows)


def eigen_brackets(num_steps: int, num_probes: int = 4, *, psd: bool = True, power_steps: int = 8,
                   dtype=jnp.float32) -> Callable:
    """Constructor: ``brackets(key, operator) -> Brackets`` using ``num_probes * num_steps`` matvecs.

    Args:
        num_steps: Lanczos steps per probe (<= d).
        num_probes: independent start vectors (the best bound over them is reported).
        psd: the operator is positive semi-definite (needed for the upper bound and the floor;
            with ``psd=False`` the brackets use +-inf where nothing is guaranteed).
        power_steps: power steps for the Collatz-Wielandt bound (GramOperator only).
        dtype: probe / matvec dtype.

    Example:
        >>> A = jnp.diag(jnp.array([1.0, 2.0, 3.0, 4.0]))
        >>> br = jax.jit(eigen_brackets(4, num_probes=2))(jax.random.key(0), A)
        >>> float(br.max_low) <= 4.0 <= float(br.max_high), float(br.min_low) <= 1.0 <= float(br.min_high)
        (True, True)
        >>> round(float(br.ritz_max), 3), int(br.num_matvecs)
        (4.0, 8)
    """
    _base.check_counts(num_steps=num_steps, num_probes=num_probes)

    def brackets(key, operator) -> Brackets:
        d = _base.operator_dim(operator)
        if num_steps > d:
            raise ValueError(f"`num_steps`={num_steps} exceeds the operator size d={d}.")
        with x64() if jnp.dtype(dtype) == jnp.float64 else contextlib.nullcontext():
            z = _base.sample_probes(key, num_probes, d, "normal", dtype)
            tri = lanczos(_base.matmat_rows(operator), z, num_steps)
            tr = _base.operator_trace(operator)
        one = tri._replace(norms=jnp.ones_like(tri.norms))
        nodes, _ = ritz(one)
        with x64():
            eps = float(jnp.finfo(dtype).eps)
            theta_max = jnp.max(nodes[:, -1])
            theta_min = jnp.min(nodes[:, 0])
            # live steps: a breakdown (beta_j = 0) makes the following ones padding
            alive = jnp.cumprod(jnp.concatenate([jnp.ones((num_probes, 1), bool), tri.betas[:, :-1] > 0], axis=1),
                                axis=1).astype(bool)
            live = jnp.sum(alive, axis=1)
            beta_s = jnp.where(live < num_steps, 0.0, f64(tri.betas[:, -1]))   # invariant subspace: no coupling
            a = nodes[:, -1]
            inf = jnp.asarray(jnp.inf, jnp.float64)
            if psd and tr is not None:
                tr64 = f64(tr)
                c = jnp.maximum(tr64 - jnp.sum(jnp.where(alive, f64(tri.alphas), 0.0), axis=1), 0.0)
                block = 0.5 * (a + c) + jnp.sqrt((0.5 * (a - c)) ** 2 + beta_s**2)
                high = jnp.minimum(jnp.min(block), tr64)
                cw = _collatz_wielandt(operator, power_steps)
                if cw is not None:
                    high = jnp.minimum(high, cw)
            else:
                high = inf
            floor = f64(getattr(operator, "delta", 0.0)) if psd else -inf
            gersh = _gershgorin_low(operator)
            is_floor = jnp.asarray(True)
            if gersh is not None:
                is_floor = ~(gersh > floor)
                floor = jnp.maximum(floor, gersh)
            safety = 32 * eps * jnp.sqrt(float(num_steps)) * jnp.maximum(jnp.abs(theta_max), jnp.abs(theta_min))
            return Brackets(theta_max - safety, jnp.maximum(high, theta_max) + safety,
                            jnp.minimum(floor, theta_min) - (safety if psd else 0.0), theta_min + safety,
                            theta_max, theta_min, jnp.asarray(num_probes * num_steps, jnp.int32), is_floor)

    return brackets

