"""The SIGMA embedding view: each generation's Gaussian draws measured as if they were embeddings.

Only the public API is used: :func:`sigma_jax.sigma` for ``u_cov`` and :mod:`sigma_jax.spectral` for
log-determinants and effective ranks; the closed form to compare with comes from
:mod:`sigma_jax.collapse.toy.theory`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sigma_jax import sigma, spectral
from sigma_jax._x64 import x64
from sigma_jax.collapse.strategies import Strategy
from sigma_jax.collapse.toy.simulators import GaussianRun, gaussian_run
from sigma_jax.collapse.toy.theory import gaussian_logdet_theory, wishart_logdet_offset

__all__ = ["EmbeddingView", "embedding_view"]


class EmbeddingView(NamedTuple):
    """SIGMA and spectral metrics of each generation's Gaussian draws used as "embeddings".

    Shapes: (G + 1, C) NumPy float64 arrays unless stated (G generations, C chains).

    Attributes:
        u_cov: SIGMA's ``u_cov = logdet(G_A + delta I) - d log n_A`` of the (optionally centred) draws.
        drift: ``u_cov[t] - u_cov[0]`` (SIGMA's dU).
        logdet_model: ``log det Sigma_t`` of the model the draws came from.
        effective_rank: eigenvalue-entropy effective rank of the draws' Gram matrix.
        model_effective_rank: effective rank of ``Sigma_t``.
        theory_u_cov: (G + 1,) ``E[u_cov_t]`` for replace (``(t + 1)`` Bartlett drifts, centred draws),
            NaN for other strategies.
        offset: ``E[u_cov_t - log det Sigma_t]`` (the Wishart/Bartlett offset, any strategy, centred draws).
        run: the underlying :class:`~sigma_jax.collapse.toy.simulators.GaussianRun` (with samples).
    """

    u_cov: np.ndarray
    drift: np.ndarray
    logdet_model: np.ndarray
    effective_rank: np.ndarray
    model_effective_rank: np.ndarray
    theory_u_cov: np.ndarray
    offset: float
    run: GaussianRun


def embedding_view(key, *, n_generations: int, n_samples: int, n_chains: int, dim: int,
                   strategy="replace", estimator: str = "mle", temperature: float = 1.0,
                   center: bool = True, delta: float = 1e-3) -> EmbeddingView:
    """Run :func:`sigma_jax.sigma` and :mod:`sigma_jax.spectral` on each generation's Gaussian draws.

    The M draws from model t (rows, d columns) are treated as embeddings.  ``sigma`` is called with
    ``normalize=False`` (Gaussian draws are not unit vectors) and ``rho`` = the largest squared row norm
    over all chains and generations (so the norm bound holds; ``rho`` enters only ``g_kf`` and the
    bands, not ``u_cov``), with the whole set observed (``subset=None``).

    Mapping to the log-det law.  With ``center=True`` the draws are centred on their own mean, so
    ``G_A / M`` is the MLE covariance ``Sigma_hat`` of M draws from ``N(mu_t, Sigma_t)`` and
    ``u_cov = log det(Sigma_hat + delta/M I)``.  By Bartlett's decomposition
    ``E[u_cov_t] = E[log det Sigma_t] + sum_j psi((M - j)/2) + d log(2/M)``
    (:func:`~sigma_jax.collapse.toy.theory.wishart_logdet_offset`) for any strategy, up to the ridge
    (``sum_i log(1 + delta/(M lambda_i))``), so SIGMA's drift
    ``u_cov_t - u_cov_0`` estimates ``E[log det Sigma_t] - log det Sigma_0``, which under replace is
    ``t`` times the Bartlett drift.  Under replace the centred draws of model t are exactly model t+1's
    training set, so ``u_cov_t = log det Sigma_{t+1}`` (MLE) up to the ridge.  With ``center=False``
    ``u_cov`` measures the uncentred second moment and adds ``log(1 + xbar^T Sigma_hat^-1 xbar)`` (the
    wandering mean), which has no closed form here.

    Returns:
        :class:`EmbeddingView`.

    Example:
        >>> view = embedding_view(jax.random.key(0), n_generations=1, n_samples=40, n_chains=2, dim=3)
        >>> view.u_cov.shape
        (2, 2)
    """
    if delta <= 0:
        raise ValueError(f"`delta` must be > 0, got {delta}.")
    run = gaussian_run(key, n_generations=n_generations, n_samples=n_samples, n_chains=n_chains, dim=dim,
                       estimator=estimator, temperature=temperature, strategy=strategy, return_samples=True)
    x = run.samples  # (G + 1, C, M, d)
    if center:
        x = x - x.mean(axis=2, keepdims=True)
    flat = x.reshape(-1, n_samples, dim)
    rho = float(jnp.max(jnp.sum(flat ** 2, axis=-1))) * (1.0 + 1e-4)

    def one(e):
        rep = sigma(e, normalize=False, rho=rho, delta=float(delta))
        return rep.u_cov, spectral.effective_rank(e, normalize=False)

    def model_metrics(cov):
        lam = jnp.linalg.eigvalsh(cov)
        return spectral.logdet(lam), spectral.effective_rank(lam)

    with x64():  # float64 results survive (no jit boundary outside the context)
        u_cov, er = jax.vmap(one)(flat)
        covs = jnp.asarray(np.asarray(run.covariances, np.float64)).reshape(-1, dim, dim)
        logdet, model_er = jax.vmap(model_metrics)(covs)
        shape = (n_generations + 1, n_chains)
        u_cov, er, logdet, model_er = (a.reshape(shape) for a in (u_cov, er, logdet, model_er))
        u_cov, er, logdet, model_er = (np.asarray(a, np.float64) for a in (u_cov, er, logdet, model_er))
    drift = u_cov - u_cov[:1]
    offset = wishart_logdet_offset(n_samples, dim)
    if Strategy.parse(strategy).name == "replace" and center:
        theory = gaussian_logdet_theory(n_generations, n_samples, dim, estimator=estimator,
                                        temperature=temperature) + offset
        theory[1:] += dim * math.log(float(temperature) ** 2)
    else:
        theory = np.full(n_generations + 1, np.nan)
    return EmbeddingView(u_cov=u_cov, drift=drift, logdet_model=logdet, effective_rank=er,
                         model_effective_rank=model_er, theory_u_cov=theory, offset=offset, run=run)
