"""Built-in synthetic embeddings: healthy vs progressively collapsed, with a known mechanism.

The collapse mechanism is the d-dimensional Gaussian refit chain of the
model-collapse literature (see ``docs/collapse-references.md``, "Exact oracles"):
generation 0 draws from ``N(0, Sigma_0)``; generation g+1 refits the covariance
by maximum likelihood on ``fit_samples`` draws of generation g and samples from
it.  The eigenvalues of ``Sigma_g`` spread apart and ``E[log det Sigma_g]``
falls by ``sum_j psi((M-j)/2) + d log(2/M)`` per generation -- the contraction
SIGMA is designed to see.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sigma_jax._linalg import mm as _mm

__all__ = ["power_law_covariance", "collapsing_generations"]


def power_law_covariance(dim: int, alpha: float = 0.5):
    """Diagonal covariance with eigenvalues ``i^{-alpha}`` (i = 1..dim), normalised to trace dim.

    Example:
        >>> jnp.trace(power_law_covariance(4)).round(4)
        Array(4., dtype=float32)
    """
    lam = jnp.arange(1, dim + 1, dtype=jnp.float32) ** (-alpha)
    return jnp.diag(lam * dim / jnp.sum(lam))


def collapsing_generations(key, *, n_generations: int = 5, n_samples: int = 1200, dim: int = 384,
                           fit_samples: int = 2000, alpha: float = 0.5):
    """Embeddings of ``n_generations + 1`` generations of a Gaussian refit chain.

    Args:
        key: PRNG key.
        n_generations: number of refits after generation 0.
        n_samples: embeddings per generation (rows returned).
        dim: embedding dimension m.
        fit_samples: M, the samples each refit sees (M > dim; smaller M collapses faster).
        alpha: power-law exponent of generation 0's spectrum.

    Returns:
        (n_generations + 1, n_samples, dim) float32 array (not normalised; SIGMA
        normalises rows by default).

    Example:
        >>> gens = collapsing_generations(jax.random.key(0), n_generations=2, n_samples=50, dim=8, fit_samples=20)
        >>> gens.shape
        (3, 50, 8)
    """
    if fit_samples <= dim:
        raise ValueError(f"`fit_samples` ({fit_samples}) must exceed `dim` ({dim}) for a full-rank refit.")
    chol = jnp.linalg.cholesky(power_law_covariance(dim, alpha))
    out = []
    for g in range(n_generations + 1):
        k_fit, k_out = jax.random.split(jax.random.fold_in(key, g))
        out.append(_mm(jax.random.normal(k_out, (n_samples, dim)), chol.T))
        x = _mm(jax.random.normal(k_fit, (fit_samples, dim)), chol.T)
        cov = _mm(x.T, x) / fit_samples
        chol = jnp.linalg.cholesky(cov + 1e-7 * jnp.eye(dim))
    return jnp.stack(out)
