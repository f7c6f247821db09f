r"""The operator interface of the matrix-free estimators, and the Gram operator.

An *operator* is a small pytree holding data plus pure products (style guide, rule 3).  Every
estimator in :mod:`sigma_jax.estimators` accepts any object with

* ``dim`` -- the size d of the (d x d) operator;
* ``matmat_rows(V) -> V A`` for a block of k probes stored as rows (k, d) (the fast path);
* ``symmetric`` and ``psd`` flags (Lanczos needs ``symmetric``; log-dets, entropies and the
  ``lambda_min >= 0`` floor of eigenvalue brackets use ``psd``);
* optionally ``trace()`` (exact trace; ``None`` when unknown).

Built in: :class:`GramOperator` (``A^T A + delta I`` or ``A A^T + delta I`` from embeddings),
:class:`DenseOperator` (a dense symmetric matrix, wrapped on purpose with
:func:`dense_operator`), and in :mod:`sigma_jax.estimators.operators` the kernel operator and
:func:`~sigma_jax.estimators.linear_operator` for any matvec.  :func:`as_operator` is the one
place that turns an argument into an operator.

Naming.  ``delta`` is, everywhere in sigma_jax, the constant added to an operator's diagonal
(SIGMA's ridge: ``G + delta I``).  ``shift`` (in :mod:`sigma_jax.estimators`) is something else:
evaluating ``tr f(A + shift I)`` from a quadrature of ``A`` without new products.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from sigma_jax import _checks
from sigma_jax._linalg import HIGHEST
from sigma_jax._x64 import x64

__all__ = ["Operator", "OperatorMixin", "GramOperator", "gram_operator", "DenseOperator", "dense_operator", "as_operator"]


@runtime_checkable
class Operator(Protocol):
    """What the estimators need of a symmetric linear operator (see the module docstring)."""

    symmetric: bool
    psd: bool

    @property
    def dim(self) -> int: ...

    def matmat_rows(self, v): ...


def _deprecated_ridge(delta, ridge, where: str):
    if ridge is not None:
        warnings.warn(f"{where}(ridge=...) is deprecated; the diagonal shift is called `delta` everywhere in "
                      "sigma_jax.", DeprecationWarning, stacklevel=3)
        return ridge if delta in (None, 0.0) else delta
    return 0.0 if delta is None else delta


class OperatorMixin:
    """Products and properties every symmetric operator derives from ``dim`` and ``matmat_rows``."""

    symmetric = True

    @property
    def shape(self) -> tuple[int, int]:
        return (self.dim, self.dim)

    @property
    def ridge(self):
        """Former name of ``delta``."""
        return self.delta

    def matvec(self, v):
        """``A v`` for v: (d,)."""
        return self.matmat_rows(v[None, :])[0]

    def matmat(self, v):
        """``A V`` for V: (d, k) (columns); A is symmetric."""
        return self.matmat_rows(v.T).T

    def __matmul__(self, v):
        return self.matvec(v)

    def trace(self):
        """Exact trace from the diagonal."""
        return jnp.sum(self.diagonal())


# --------------------------------------------------------------------------- the Gram operator


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["embeddings", "row_scale", "delta"], meta_fields=["side", "precision"])
@dataclasses.dataclass(frozen=True)
class GramOperator(OperatorMixin):
    """Matrix-free ``G + delta I`` built from embeddings: data plus a pure matvec.

    A pytree (pass it as an argument to jitted functions; it stays traced, shardable and
    differentiable).  Build it with :func:`gram_operator`.

    Attributes:
        embeddings: (n, m) raw rows ``a_j`` (any float dtype; kept as given).
        row_scale: (n,) ``1/||a_j||`` when normalising, else None.
        delta: scalar added to the diagonal.
        side: ``"feature"`` for ``A^T A + delta I`` (m x m) or ``"sample"`` for ``A A^T + delta I`` (n x n).
        precision: matmul precision of the products (``HIGHEST`` by default: on TPUs / TF32 GPUs
            the default precision rounds operands to bfloat16 / TF32).
    """

    embeddings: jax.Array
    row_scale: jax.Array | None
    delta: jax.Array
    side: str = "feature"
    precision: Any = HIGHEST

    psd = True

    @property
    def dim(self) -> int:
        """Size of the operator (m for the feature side, n for the sample side)."""
        n, m = self.embeddings.shape
        return m if self.side == "feature" else n

    @property
    def dtype(self):
        return self.embeddings.dtype

    def _scaled(self, w):
        return w if self.row_scale is None else w * self.row_scale.astype(w.dtype)

    def matmat_rows(self, v):
        """``V (G + delta I)`` for a block of k probes stored as rows, V: (k, d) -> (k, d).

        Rows-major probes run fastest on CPU: ``((V A^T) S^2) A`` for the feature side.
        """
        a = self.embeddings.astype(v.dtype)
        p = self.precision
        if self.side == "feature":
            w = self._scaled(self._scaled(jnp.matmul(v, a.T, precision=p)))   # (k, n)
            out = jnp.matmul(w, a, precision=p)                               # (k, m)
        else:
            w = jnp.matmul(self._scaled(v), a, precision=p)                   # (k, m)
            out = self._scaled(jnp.matmul(w, a.T, precision=p))               # (k, n)
        return out + self.delta.astype(v.dtype) * v

    def diagonal(self):
        """diag(G + delta I), (d,)."""
        a = self.embeddings
        if self.side == "feature":
            s = 1.0 if self.row_scale is None else self.row_scale[:, None] ** 2
            return jnp.sum(s * a * a, axis=0) + self.delta
        d = jnp.sum(a * a, axis=1)
        if self.row_scale is not None:
            d = d * self.row_scale ** 2
        return d + self.delta

    def dense(self, dtype=jnp.float64):
        """Materialise the operator (on purpose only).  float64 by default (local x64 context)."""
        with x64():
            a = self.embeddings.astype(dtype)
            if self.row_scale is not None:
                a = a * self.row_scale.astype(dtype)[:, None]
            g = jnp.matmul(a.T, a, precision=HIGHEST) if self.side == "feature" else jnp.matmul(a, a.T,
                                                                                                 precision=HIGHEST)
            return g + jnp.asarray(self.delta, dtype) * jnp.eye(self.dim, dtype=dtype)


def gram_operator(embeddings, *, delta: float | None = None, side: str = "feature", normalize: bool = True,
                  precision=HIGHEST, ridge: float | None = None) -> GramOperator:
    """Build a :class:`GramOperator` for ``A^T A + delta I`` (feature) or ``A A^T + delta I`` (sample).

    ``ridge=`` is the deprecated name of ``delta``.

    Example:
        >>> op = gram_operator(jnp.ones((4, 3)), delta=1e-3)
        >>> op.matvec(jnp.ones(3)).shape
        (3,)
    """
    delta = _deprecated_ridge(delta, ridge, "gram_operator")
    if side not in ("feature", "sample"):
        raise ValueError(f"`side` must be 'feature' (A^T A, m x m) or 'sample' (A A^T, n x n), got {side!r}.")
    embeddings = _checks.check_float_array(embeddings, "embeddings")
    if _checks.is_concrete(embeddings) and not isinstance(embeddings, jax.Array):
        embeddings = jnp.asarray(embeddings)
    scale = None
    if normalize:
        sq = jnp.sum(jnp.square(embeddings.astype(jnp.float32)), axis=1)
        scale = jnp.where(sq > 0, jax.lax.rsqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
    return GramOperator(embeddings, scale, jnp.asarray(delta, jnp.float32), side, precision)


# --------------------------------------------------------------------------- dense matrices


@functools.partial(jax.tree_util.register_dataclass, data_fields=["matrix"],
                   meta_fields=["symmetric", "psd", "precision"])
@dataclasses.dataclass(frozen=True)
class DenseOperator(OperatorMixin):
    """A dense (d x d) symmetric matrix as an operator (build it with :func:`dense_operator`)."""

    matrix: jax.Array
    symmetric: bool = True
    psd: bool = False
    precision: Any = HIGHEST

    @property
    def dim(self) -> int:
        return self.matrix.shape[0]

    @property
    def dtype(self):
        return self.matrix.dtype

    def matmat_rows(self, v):
        """``V A`` for (k, d) probes stored as rows."""
        return jnp.matmul(v, self.matrix.astype(v.dtype), precision=self.precision)

    def diagonal(self):
        return jnp.diagonal(self.matrix)

    def dense(self, dtype=jnp.float64):
        with x64():
            return jnp.asarray(self.matrix, dtype)


def dense_operator(matrix, *, psd: bool = False, precision=HIGHEST) -> DenseOperator:
    """Wrap a dense symmetric (d x d) matrix for the estimators.

    Args:
        matrix: (d, d) symmetric float array (only symmetric matrices are supported: Lanczos).
        psd: declare it positive semi-definite (enables the ``lambda_min >= 0`` floor of brackets).

    Example:
        >>> op = dense_operator(jnp.diag(jnp.array([1.0, 2.0])), psd=True)
        >>> op.dim, op.psd, op.matvec(jnp.ones(2)).tolist()
        (2, True, [1.0, 2.0])
    """
    matrix = _checks.check_float_array(matrix, "matrix")
    if matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"`matrix` must be square (d, d), got shape {tuple(matrix.shape)}.")
    if _checks.is_concrete(matrix):
        host = np.asarray(matrix, np.float64)
        scale = max(float(np.abs(host).max()), 1e-300)
        if float(np.abs(host - host.T).max()) > 1e-6 * scale:
            raise ValueError("`matrix` is not symmetric (max |A - A^T| > 1e-6 max |A|); the estimators need a "
                             "symmetric operator. Pass (A + A.T) / 2 if that is what you mean.")
        matrix = jnp.asarray(matrix)
    return DenseOperator(matrix, True, bool(psd), precision)


def as_operator(obj) -> Any:
    """The one place an estimator's argument becomes an operator.

    Operators (anything with ``dim`` and ``matmat_rows``) pass through; a 2-D NumPy or JAX array
    is wrapped by :func:`dense_operator` (symmetric, not declared PSD).  Anything else is an error
    naming the fix.

    Example:
        >>> as_operator(jnp.eye(3)).dim
        3
    """
    if hasattr(obj, "matmat_rows") and hasattr(obj, "dim"):
        return obj
    if isinstance(obj, (jax.Array, np.ndarray)) and obj.ndim == 2:
        return dense_operator(obj)
    raise TypeError(f"operator of type {type(obj).__name__} has no `dim` / `matmat_rows`; pass a GramOperator, "
                    "a KernelOperator, `dense_operator(matrix)`, or wrap a matvec with "
                    "`sigma_jax.estimators.linear_operator(matvec, dim)`.")


def operator_flag(op, name: str, default: bool) -> bool:
    """``op.<name>`` (``symmetric`` / ``psd``) with a default for user classes that lack the flag."""
    return bool(getattr(op, name, default))
