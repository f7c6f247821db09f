r"""Lanczos tridiagonalisation of a symmetric operator, many probes at once, probes stored as rows.

For a symmetric ``A`` (d x d) and start vectors ``v_1 .. v_k`` (rows of ``V``),
``num_steps`` = s steps build, per probe, an orthonormal basis ``Q`` (s x d) of
the Krylov space ``K_s(A, v)`` and the tridiagonal ``T = Q A Q^T`` (diagonal
``alphas``, off-diagonal ``betas``) with ``A Q^T = Q^T T + beta_s q_{s+1} e_s^T``.
All k probes advance together, so every step is one ``matmat_rows`` on a (k, d)
block (the fast path of :class:`sigma_jax.gram.GramOperator`).  Full
reorthogonalisation (classical Gram-Schmidt, twice) against all previous basis
vectors and an optional fixed deflation basis ``U`` (p x d, orthonormal rows)
keeps ``Q`` orthonormal in floating point; cost ``O(s^2 k d)`` next to the
``O(s k nnz)`` of the matvecs.

Breakdown (an invariant subspace found, ``beta_j ~ 0``) zeroes the following
basis vectors; the trailing diagonal entries are then set to ``alphas[0]`` (a
Rayleigh quotient, so inside the spectrum) with zero coupling, which leaves the
Gauss quadrature unchanged (those Ritz vectors have zero first component) and
keeps the Ritz values inside ``[lambda_min, lambda_max]``.

Gauss quadrature: with ``T = W diag(theta) W^T``, ``v^T f(A) v ~ ||v||^2 sum_j
W_{0j}^2 f(theta_j)``, exact for polynomials of degree ``<= 2s - 1`` (Golub &
Meurant 2010; Ubaru, Chen & Saad 2017).

Example:
    >>> A = jnp.diag(jnp.arange(1.0, 9.0))
    >>> res = lanczos(lambda v: v @ A, jnp.ones((1, 8)), 8)
    >>> nodes, weights = ritz(res)
    >>> bool(np.allclose(np.sort(np.asarray(nodes[0])), np.arange(1.0, 9.0), atol=1e-4))
    True
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from sigma_jax._linalg import HIGHEST, mm as _mm
from sigma_jax._x64 import f64, x64

__all__ = ["Tridiag", "lanczos", "ritz", "project_out"]


class Tridiag(NamedTuple):
    """Result of :func:`lanczos` for k probes and s steps.

    Attributes:
        alphas: (k, s) diagonal of T.
        betas: (k, s) off-diagonal; ``betas[:, j]`` couples steps j and j+1, the
            last column is the residual norm ``beta_s`` (not part of T).
        norms: (k,) ``||v||`` of the (projected) start vectors.
        basis: (k, s, d) Lanczos vectors (rows), or None when not kept.
        residual: (k, d) the next Lanczos vector ``q_{s+1}`` (unit or zero).
    """

    alphas: jax.Array
    betas: jax.Array
    norms: jax.Array
    basis: jax.Array | None
    residual: jax.Array


def project_out(w, basis):
    """``w - (w U^T) U`` for rows ``w`` (k, d) and orthonormal rows ``U`` (p, d).

    Example:
        >>> project_out(jnp.array([[3.0, 4.0, 5.0]]), jnp.array([[1.0, 0.0, 0.0]])).tolist()
        [[0.0, 4.0, 5.0]]
    """
    if basis is None or basis.shape[0] == 0:
        return w
    return w - _mm(_mm(w, basis.T), basis)


def lanczos(matmat_rows: Callable, v0, num_steps: int, *, deflation=None, keep_basis: bool = False) -> Tridiag:
    """Run ``num_steps`` Lanczos steps from each row of ``v0`` (k, d) with full reorthogonalisation.

    Args:
        matmat_rows: ``V -> V A`` for (k, d) row blocks, A symmetric.
        v0: (k, d) start vectors (any scaling; projected off ``deflation`` first).
        num_steps: s (static), 1 <= s <= d.
        deflation: optional (p, d) orthonormal rows ``U``; the iteration then
            runs on ``P A P`` restricted to the complement (``P = I - U^T U``).
        keep_basis: also return the (k, s, d) basis (for gradients / Ritz vectors).

    Returns:
        :class:`Tridiag`.  jit/vmap/grad compatible; the dtype is ``v0``'s.

    Example:
        >>> A = jnp.diag(jnp.array([1.0, 2.0, 3.0, 4.0]))
        >>> tri = lanczos(lambda v: v @ A, jnp.ones((2, 4)), 3)      # 2 probes, 3 steps
        >>> tri.alphas.shape, tri.betas.shape, tri.norms.tolist(), tri.basis
        ((2, 3), (2, 3), [2.0, 2.0], None)
        >>> round(float(tri.alphas[0, 0]), 4)                           # Rayleigh quotient of the start vector
        2.5
    """
    k, d = v0.shape
    s = int(num_steps)
    if s < 1 or s > d:
        raise ValueError(f"`num_steps` must lie in [1, d={d}], got {num_steps}.")
    dtype = v0.dtype
    eps = jnp.finfo(dtype).eps
    v0 = project_out(v0, deflation)
    norms = jnp.linalg.norm(v0, axis=1)
    q0 = v0 / jnp.where(norms > 0, norms, 1.0)[:, None]
    basis = jnp.zeros((k, s + 1, d), dtype).at[:, 0].set(q0)   # batch-leading: reorth is a batched GEMV

    def reorth(w, basis):
        for _ in range(2):
            coef = jnp.einsum("ksd,kd->ks", basis, w, precision=HIGHEST)
            w = w - jnp.einsum("ks,ksd->kd", coef, basis, precision=HIGHEST)
            w = project_out(w, deflation)
        return w

    def step(j, carry):
        basis, alphas, betas, scale = carry
        q = basis[:, j]
        w = project_out(matmat_rows(q), deflation)
        alpha = jnp.einsum("kd,kd->k", q, w, precision=HIGHEST)
        w = reorth(w, basis)
        beta = jnp.linalg.norm(w, axis=1)
        scale = jnp.maximum(scale, jnp.abs(alpha) + beta)
        ok = beta > 64 * eps * jnp.sqrt(float(d)) * scale
        qn = jnp.where(ok[:, None], w / jnp.where(ok, beta, 1.0)[:, None], 0.0)
        beta = jnp.where(ok, beta, 0.0)
        basis = basis.at[:, j + 1].set(qn)
        return basis, alphas.at[:, j].set(alpha), betas.at[:, j].set(beta), scale

    alphas = jnp.zeros((k, s), dtype)
    betas = jnp.zeros((k, s), dtype)
    basis, alphas, betas, _ = jax.lax.fori_loop(0, s, step, (basis, alphas, betas, jnp.zeros((k,), dtype)))
    # steps after a breakdown saw q = 0: mark them neutral (alpha_0, no coupling).
    alive = jnp.cumprod(jnp.concatenate([jnp.ones((k, 1), bool), betas[:, :-1] > 0], axis=1), axis=1).astype(bool)
    alphas = jnp.where(alive, alphas, alphas[:, :1])
    return Tridiag(alphas, betas, norms, basis[:, :s] if keep_basis else None, basis[:, s])


def ritz(tri: Tridiag, *, vectors: bool = False):
    """Ritz values and Gauss weights of each probe's T, in float64.

    Returns:
        nodes: (k, s) eigenvalues of T (float64, ascending).
        weights: (k, s) ``||v||^2 W_{0j}^2`` (so ``sum_j weights f(nodes) ~ v^T f(A) v``).
        eigvecs (only with ``vectors=True``): (k, s, s) eigenvectors of T (columns).

    Example:
        >>> A = jnp.diag(jnp.array([1.0, 2.0, 3.0, 4.0]))
        >>> nodes, weights = ritz(lanczos(lambda v: v @ A, jnp.ones((1, 4)), 4))
        >>> np.round(np.asarray(nodes), 4).tolist(), np.round(np.asarray(weights), 4).tolist()
        ([[1.0, 2.0, 3.0, 4.0]], [[1.0, 1.0, 1.0, 1.0]])
    """
    with x64():
        a = f64(tri.alphas)
        b = f64(tri.betas[:, :-1])
        s = a.shape[1]
        t = jax.vmap(jnp.diag)(a)
        if s > 1:
            t = t + jax.vmap(lambda x: jnp.diag(x, 1))(b) + jax.vmap(lambda x: jnp.diag(x, -1))(b)
        nodes, w = jnp.linalg.eigh(t)
        weights = f64(tri.norms)[:, None] ** 2 * w[:, 0, :] ** 2
        if vectors:
            return nodes, weights, w
        return nodes, weights
