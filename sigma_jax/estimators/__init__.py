"""Matrix-free stochastic spectral estimators (SLQ, deflated SLQ, Hutchinson, Hutch++, eigenvalue brackets).

Constructors fix every static size and return pure functions ``estimate(key, operator) -> Estimate``
(jit / vmap compatible; ``differentiable=True`` SLQ estimators also support ``jax.grad``).
Operators: :class:`sigma_jax.gram.GramOperator`, :class:`KernelOperator`, :func:`linear_operator`,
or a dense symmetric array.  See ``docs`` in each submodule for the maths.

Example:
    >>> from sigma_jax import gram, estimators as est
    >>> op = gram.gram_operator(jax.random.normal(jax.random.key(0), (2000, 256)), delta=1e-3)
    >>> e = jax.jit(est.slq_estimator(est.spectral_entropy(), 32, 30, deflate=32, shift=-1e-3))(jax.random.key(1), op)
    >>> lo, hi = e.ci
"""

from sigma_jax.estimators._base import Estimate, sample_probes, t_quantile
from sigma_jax.estimators.adaptive import adaptive_slq
from sigma_jax.estimators.extreme import Brackets, eigen_brackets
from sigma_jax.estimators.krylov import Tridiag, lanczos, ritz
from sigma_jax.estimators.operators import KernelOperator, LinearOperator, kernel_operator, linear_operator
from sigma_jax.estimators.stochastic_sigma import AUTO_CROSSOVER_M, StochasticSigmaReport, sigma_stochastic
from sigma_jax.estimators.slq import (
    Eigenspace,
    Quadrature,
    Quantity,
    effective_rank,
    eigencount,
    logdet,
    participation_ratio,
    quadrature_estimate,
    slq_estimator,
    slq_quadrature,
    spectral_density,
    spectral_entropy,
    top_eigenspace,
    trace_function,
)
from sigma_jax.estimators.trace import hutchinson, hutchpp

__all__ = [
    "Estimate", "sample_probes", "t_quantile",
    "adaptive_slq",
    "Brackets", "eigen_brackets",
    "Tridiag", "lanczos", "ritz",
    "KernelOperator", "LinearOperator", "kernel_operator", "linear_operator",
    "AUTO_CROSSOVER_M", "StochasticSigmaReport", "sigma_stochastic",
    "Eigenspace", "Quadrature", "Quantity", "effective_rank", "eigencount", "logdet", "participation_ratio",
    "quadrature_estimate", "slq_estimator", "slq_quadrature", "spectral_density", "spectral_entropy",
    "top_eigenspace", "trace_function",
    "hutchinson", "hutchpp",
]
