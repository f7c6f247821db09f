"""Shared pieces: the :class:`Estimate` result, probe samplers, t-quantiles, the delta method.

Every estimator in :mod:`sigma_jax.estimators` reduces to per-probe samples
``x_i in R^r`` (i = 1..k) of a few traces ``tr f_1(A) .. tr f_r(A)`` (plus
exactly known offsets) and a smooth ``combine: R^r -> R`` (e.g. the entropy
``log t - u / t``).  The value is ``combine(mean(x) + offsets)``; its standard
error comes from the delta method ``se^2 = g^T Cov(x) g / k`` with
``g = grad combine``; the interval is ``value +- t_{k-1, (1+level)/2} se``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from sigma_jax._linalg import mm as _mm, t_quantile
from sigma_jax.operators import as_operator

__all__ = ["Estimate", "sample_probes", "t_quantile", "estimate_from_samples", "operator_dim", "matmat_rows",
           "operator_trace", "SAMPLERS"]

SAMPLERS = ("rademacher", "normal")


class Estimate(NamedTuple):
    """A stochastic estimate with its uncertainty and its cost.

    Attributes:
        value: the point estimate (scalar array).
        stderr: estimated standard error of ``value`` (delta method over probes).
        ci: ``(low, high)`` confidence interval at the constructor's ``level``
            (Student-t with ``num_probes - 1`` degrees of freedom).
        num_probes: number of random probe vectors used (int32 array).
        num_matvecs: number of operator-vector products used, deflation included (int32 array).
        truncation: for Lanczos quadrature, ``|value(s steps) - value(s/2 steps)|``: a guard for the
            truncation bias that ``stderr`` leaves out; ``ci`` is widened by it (0 for other estimators).
    """

    value: jax.Array
    stderr: jax.Array
    ci: tuple[jax.Array, jax.Array]
    num_probes: jax.Array
    num_matvecs: jax.Array
    truncation: Any = 0.0

    @property
    def halfwidth(self):
        """Half-width of the confidence interval."""
        from sigma_jax._x64 import x64  # noqa: PLC0415

        with x64():
            return (self.ci[1] - self.ci[0]) / 2

    def covers(self, truth) -> jax.Array:
        """True where ``ci[0] <= truth <= ci[1]``."""
        from sigma_jax._x64 import x64  # noqa: PLC0415

        with x64():
            return (self.ci[0] <= truth) & (truth <= self.ci[1])


def sample_probes(key, num: int, dim: int, sampler: str = "rademacher", dtype=jnp.float32):
    """(num, dim) probes with ``E[z z^T] = I`` stored as rows: Rademacher (default) or Gaussian.

    Bits are always drawn in float32 with x64 disabled (PRNG lowering must not depend on the
    surrounding x64 context, which differs between eager, jit and while-loop tracing) and then cast.

    Example:
        >>> z = sample_probes(jax.random.key(0), 3, 4)
        >>> z.shape, sorted(set(np.asarray(z).ravel().tolist()))
        ((3, 4), [-1.0, 1.0])
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"`sampler` must be one of {SAMPLERS}, got {sampler!r}.")
    with jax.enable_x64(False):
        if sampler == "rademacher":
            z = jax.random.rademacher(key, (num, dim), dtype=jnp.float32)
        else:
            z = jax.random.normal(key, (num, dim), dtype=jnp.float32)
    return z.astype(dtype)


def estimate_from_samples(samples, offsets, combine: Callable, level: float, num_matvecs, *, total_probes=None,
                          aux: Any = None) -> Estimate:
    """Delta-method :class:`Estimate` from per-probe samples.

    Args:
        samples: (k, r) per-probe unbiased samples of ``r`` traces.
        offsets: (r,) exactly known additive parts (e.g. deflated Ritz contributions).
        combine: ``combine(means (r,), aux) -> scalar``.
        level: confidence level.
        num_matvecs: matvecs spent (int).

    Example:
        >>> x = jnp.array([[1.0], [2.0], [3.0], [4.0]])            # 4 probes, one trace
        >>> e = estimate_from_samples(x, jnp.zeros(1), lambda m, aux: m[0], 0.95, 4)
        >>> float(e.value), round(float(e.stderr), 4), int(e.num_probes)
        (2.5, 0.6455, 4)
    """
    k = samples.shape[0]
    mean = jnp.mean(samples, axis=0) + offsets
    value, grad = jax.value_and_grad(lambda m: combine(m, aux))(mean)
    centred = samples - jnp.mean(samples, axis=0)
    proj = _mm(centred, grad)                                   # (k,)
    var = jnp.sum(proj * proj) / max(k - 1, 1)
    stderr = jnp.sqrt(var / k)
    tq = t_quantile(0.5 + level / 2.0, k - 1)
    n_probes = k if total_probes is None else total_probes
    return Estimate(value, stderr, (value - tq * stderr, value + tq * stderr),
                    jnp.asarray(n_probes, jnp.int32), jnp.asarray(num_matvecs, jnp.int32))


# --------------------------------------------------------------------------- operator protocol


def operator_dim(op) -> int:
    """Size d of a square operator (:func:`sigma_jax.operators.as_operator` decides what is one).

    Example:
        >>> operator_dim(jnp.eye(5))
        5
    """
    return int(as_operator(op).dim)


def matmat_rows(op) -> Callable:
    """``V -> V A`` for probes stored as rows (``A`` symmetric): the operator's fast path.

    Example:
        >>> mm = matmat_rows(2.0 * jnp.eye(3))
        >>> mm(jnp.ones((2, 3))).tolist()
        [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]
    """
    return as_operator(op).matmat_rows


def operator_trace(op):
    """Exact ``tr A`` when the operator knows it (GramOperator: from its diagonal), else None.

    Example:
        >>> float(operator_trace(jnp.diag(jnp.array([1.0, 2.0, 3.0]))))
        6.0
        >>> from sigma_jax.estimators import linear_operator
        >>> operator_trace(linear_operator(lambda v: v, 3)) is None
        True
    """
    op = as_operator(op)
    return op.trace() if callable(getattr(op, "trace", None)) else None


def check_counts(**kw):
    for name, v in kw.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"`{name}` must be a positive Python int (it fixes array shapes), got {v!r}.")


def level_check(level: float):
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"`level` must lie in (0, 1), got {level}.")
    return float(level)


_ = math
