r"""Operators for the estimators: matrix-free kernel Gram matrices and a wrapper for any matvec.

Every estimator accepts an object with ``dim`` and ``matmat_rows(V) -> V A`` (probes
stored as rows, ``A`` symmetric) and, optionally, ``trace()``.  Besides
:class:`sigma_jax.gram.GramOperator` (``A^T A + delta I`` / ``A A^T + delta I``):

* :class:`KernelOperator` -- the n x n sample-side kernel matrix ``scale * K + delta I``
  of a cosine or RBF kernel, never formed: rows of ``K`` are computed block by block
  (``block_rows`` at a time) inside each product, so memory is ``O(block_rows * n)``.
  With ``scale = 1/n`` and the cosine kernel its entropy is log of the Vendi score
  (Friedman & Dieng 2023): ``vendi = exp(H(K/n))``.
* :func:`linear_operator` -- wraps a user ``matvec`` (any symmetric linear map) via ``vmap``.

Example:
    >>> x = jax.random.normal(jax.random.key(0), (1000, 16))
    >>> kop = kernel_operator(x, kind="rbf", gamma=0.5, scale=1e-3)
    >>> kop.matmat_rows(jnp.ones((2, 1000))).shape
    (2, 1000)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from sigma_jax import _checks
from sigma_jax._linalg import HIGHEST
from sigma_jax.operators import OperatorMixin, _deprecated_ridge

__all__ = ["KernelOperator", "kernel_operator", "LinearOperator", "linear_operator"]


@functools.partial(jax.tree_util.register_dataclass, data_fields=["points", "gamma", "scale", "delta"],
                   meta_fields=["kind", "block_rows", "precision"])
@dataclasses.dataclass(frozen=True)
class KernelOperator(OperatorMixin):
    """Matrix-free ``scale * K + delta * I`` with ``K_ij = k(x_i, x_j)`` (n x n), a pytree.

    Attributes:
        points: (n, m) samples (row-normalised already for ``kind="cosine"``).
        gamma: RBF inverse width, ``k(x, y) = exp(-gamma ||x - y||^2)``.
        scale: multiplies K (e.g. 1/n for Vendi).
        delta: added to the diagonal.
        kind: ``"cosine"`` or ``"rbf"``.
        block_rows: rows of K formed at a time inside a product.
    """

    points: jax.Array
    gamma: jax.Array
    scale: jax.Array
    delta: jax.Array
    kind: str = "cosine"
    block_rows: int = 1024
    precision: Any = HIGHEST

    psd = True  # cosine and RBF kernels are positive semi-definite (delta >= 0)

    @property
    def dim(self) -> int:
        return self.points.shape[0]

    @property
    def dtype(self):
        return self.points.dtype

    def _kernel_block(self, xb, x, sqb, sq):
        g = jnp.matmul(xb, x.T, precision=self.precision)
        if self.kind == "cosine":
            return g
        return jnp.exp(-self.gamma.astype(g.dtype) * jnp.maximum(sqb[:, None] + sq[None, :] - 2.0 * g, 0.0))

    def matmat_rows(self, v):
        """``V (scale K + delta I)`` for (k, n) rows V."""
        x = self.points.astype(v.dtype)
        n = x.shape[0]
        b = min(self.block_rows, n)
        nb = -(-n // b)
        pad = nb * b - n
        xp = jnp.pad(x, ((0, pad), (0, 0)))
        sq = jnp.sum(x * x, axis=1)
        sqp = jnp.pad(sq, (0, pad))

        def block(i):
            xb = jax.lax.dynamic_slice_in_dim(xp, i * b, b)
            sqb = jax.lax.dynamic_slice_in_dim(sqp, i * b, b)
            kb = self._kernel_block(xb, x, sqb, sq)        # (b, n)
            return jnp.matmul(v, kb.T, precision=self.precision)   # (k, b)

        out = jax.lax.map(block, jnp.arange(nb))            # (nb, k, b)
        out = jnp.transpose(out, (1, 0, 2)).reshape(v.shape[0], nb * b)[:, :n]
        return self.scale.astype(v.dtype) * out + self.delta.astype(v.dtype) * v

    def diagonal(self):
        x = self.points
        d = jnp.sum(x * x, axis=1) if self.kind == "cosine" else jnp.ones((x.shape[0],), x.dtype)
        return self.scale * d + self.delta


def kernel_operator(points, *, kind: str = "cosine", gamma: float = 1.0, scale: float | None = None,
                    delta: float | None = None, normalize: bool = True, block_rows: int = 1024,
                    precision=HIGHEST, ridge: float | None = None) -> KernelOperator:
    """Build a :class:`KernelOperator`.

    Args:
        points: (n, m) samples.
        kind: ``"cosine"`` (``K = X_hat X_hat^T``, rows L2-normalised when ``normalize``) or ``"rbf"``.
        gamma: RBF ``exp(-gamma ||x - y||^2)``.
        scale: factor on K; default ``1/n`` (the Vendi normalisation, ``tr = 1``).
        delta: diagonal shift (``ridge`` is its deprecated name).
        precision: matmul precision of the kernel blocks and products.
        block_rows: rows of K per block inside products.

    Example:
        >>> kop = kernel_operator(jnp.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]]))   # cosine, scale 1/n
        >>> kop.shape, round(float(kop.trace()), 4)
        ((3, 3), 1.0)
        >>> np.round(3 * np.asarray(kop.matmat_rows(jnp.eye(3))), 4).tolist()      # n K / n = K
        [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    delta = _deprecated_ridge(delta, ridge, "kernel_operator")
    points = _checks.check_float_array(points, "points")
    if kind not in ("cosine", "rbf"):
        raise ValueError(f"`kind` must be 'cosine' or 'rbf', got {kind!r}.")
    if not isinstance(block_rows, int) or block_rows < 1:
        raise ValueError(f"`block_rows` must be a positive int, got {block_rows!r}.")
    points = jnp.asarray(points)
    if kind == "cosine" and normalize:
        nrm = jnp.linalg.norm(points.astype(jnp.float32), axis=1, keepdims=True)
        points = (points / jnp.where(nrm > 0, nrm, 1.0)).astype(points.dtype)
    n = points.shape[0]
    scale = 1.0 / n if scale is None else scale
    f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    return KernelOperator(points, f(gamma), f(scale), f(delta), kind, block_rows, precision)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["params"],
                   meta_fields=["fn", "dim", "trace_fn", "psd"])
@dataclasses.dataclass(frozen=True)
class LinearOperator(OperatorMixin):
    """A symmetric operator given by ``fn(params, v) -> A v``; ``params`` stay traced (differentiable)."""

    params: object
    fn: Callable
    dim: int
    trace_fn: Callable | None = None
    psd: bool = False

    def matvec(self, v):
        return self.fn(self.params, v)

    def matmat_rows(self, v):
        return jax.vmap(lambda x: self.fn(self.params, x))(v)

    def trace(self):
        if self.trace_fn is None:
            return None
        return self.trace_fn(self.params)


def linear_operator(matvec: Callable, dim: int, *, params=None, trace: Callable | None = None,
                    psd: bool = False) -> LinearOperator:
    """Wrap a symmetric ``matvec`` for the estimators.

    Args:
        matvec: ``matvec(v) -> A v`` (``params is None``) or ``matvec(params, v) -> A v``.
        dim: d.
        params: pytree passed to ``matvec`` (traced: gradients flow into it).
        trace: optional exact ``trace(params) -> tr A`` (improves entropy / participation ratio).
        psd: declare the operator positive semi-definite (its eigenvalue brackets then floor
            ``lambda_min`` at 0).  The operator must be symmetric either way (Lanczos).

    Example:
        >>> op = linear_operator(lambda v: 2.0 * v, 10)
        >>> op.matmat_rows(jnp.ones((3, 10)))[0, 0]
        Array(2., dtype=float32)
    """
    if not callable(matvec):
        raise TypeError(f"`matvec` must be callable, got {type(matvec).__name__}.")
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"`dim` must be a positive int, got {dim!r}.")
    fn = (lambda p, v: matvec(v)) if params is None else matvec
    return LinearOperator(params, fn, dim, trace, bool(psd))
