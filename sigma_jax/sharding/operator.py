"""The feature-side Gram operator with its rows sharded on a mesh (for the matrix-free estimators)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sigma_jax._linalg import HIGHEST
from sigma_jax._x64 import f64, x64
from sigma_jax.operators import OperatorMixin, _deprecated_ridge
from sigma_jax.sharding.collectives import matmat_rows_psum
from sigma_jax.sharding.placement import (DEFAULT_AXIS, AxisName, _is_placed, _local, _reduce_axis, _row_spec,
                                          _sigma_args, shard_rows)

__all__ = ["ShardedGramOperator", "sharded_gram_operator"]


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["embeddings", "row_scale", "delta"], meta_fields=["mesh", "axes", "precision"])
@dataclasses.dataclass(frozen=True)
class ShardedGramOperator(OperatorMixin):
    """Matrix-free feature-side ``A^T S^2 A + ridge I`` (m x m) with the rows of ``A`` sharded on a mesh.

    Same interface as :class:`sigma_jax.gram.GramOperator` (``matmat_rows``,
    ``matvec``, ``matmat``, ``diagonal``, ``trace``, ``dense``, ``dim``,
    ``shape``, ``dtype``), so the stochastic estimators take either.  A pytree:
    pass it to jitted functions as an argument.  Each product is a local
    ``(V A_d^T) S_d^2 A_d`` and one ``psum`` of a (k, m) block; probes ``V`` are
    replicated.  Build it with :func:`sharded_gram_operator`.

    Attributes:
        embeddings: (n_pad, m) rows, sharded ``P(axes)`` (zero padding rows).
        row_scale: (n_pad,) ``1/||a_j||`` (0 on zero rows), or None.
        ridge: scalar.
        mesh, axes: the mesh and the axes the rows are sharded over (static).
    """

    embeddings: jax.Array
    row_scale: jax.Array | None
    delta: jax.Array
    mesh: jax.sharding.Mesh = None
    axes: tuple = (DEFAULT_AXIS,)
    precision: Any = HIGHEST

    side = "feature"
    psd = True

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    @property
    def dtype(self):
        return self.embeddings.dtype

    def matmat_rows(self, v):
        """``V (G + ridge I)`` for probes stored as rows, V: (k, m) -> (k, m)."""
        axis = _reduce_axis(self.axes)
        spec = _row_spec(self.axes)
        p = self.precision
        if self.row_scale is None:
            f = lambda v, a, r: matmat_rows_psum(v, a, axis, delta=r, precision=p)  # noqa: E731
            args, specs = (v, self.embeddings, self.delta), (P(), spec, P())
        else:
            f = lambda v, a, s, r: matmat_rows_psum(v, a, axis, row_scale=s, delta=r, precision=p)  # noqa: E731
            args, specs = (v, self.embeddings, self.row_scale, self.delta), (P(), spec, spec, P())
        return jax.shard_map(f, mesh=self.mesh, in_specs=specs, out_specs=P())(*args)

    def diagonal(self):
        """diag(G + ridge I), (m,): local column sums of squares, one psum."""
        axis = _reduce_axis(self.axes)
        spec = _row_spec(self.axes)

        def local(a, s):
            a = a.astype(jnp.float32)
            w = a * a if s is None else (s[:, None] ** 2) * a * a
            return lax.psum(jnp.sum(w, axis=0), axis)

        if self.row_scale is None:
            d = jax.shard_map(lambda a: local(a, None), mesh=self.mesh, in_specs=spec, out_specs=P())(self.embeddings)
        else:
            d = jax.shard_map(local, mesh=self.mesh, in_specs=(spec, spec), out_specs=P())(self.embeddings,
                                                                                          self.row_scale)
        return d + self.delta


    def dense(self, dtype=jnp.float64):
        """The m x m matrix (float64 by default): :func:`sharded_gram` plus the ridge."""
        from sigma_jax.sharding.arrays import sharded_gram

        g = sharded_gram(self.embeddings, self.mesh, axis_name=self.axes, normalize=self.row_scale is not None)
        with x64():
            return (g + f64(_local(self.delta)) * jnp.eye(self.dim, dtype=jnp.float64)).astype(dtype)


def sharded_gram_operator(embeddings, mesh: jax.sharding.Mesh | None = None, *, axis_name: AxisName | None = None,
                          delta: float | None = None, normalize: bool = True, precision=HIGHEST,
                          ridge: float | None = None) -> ShardedGramOperator:
    """Build a :class:`ShardedGramOperator` for ``A^T A + delta I`` with rows sharded over ``mesh``.

    Row scales are computed as in :func:`sigma_jax.gram.gram_operator`
    (float32, ``rsqrt`` with a zero guard), on the devices holding the rows.

    Example:
        >>> from sigma_jax.sharding import make_mesh
        >>> op = sharded_gram_operator(np.ones((10, 3), np.float32), make_mesh(2), delta=1e-3)
        >>> op.matvec(jnp.ones(3)).shape
        (3,)
    """
    delta = _deprecated_ridge(delta, ridge, "sharded_gram_operator")
    mesh, names = _sigma_args(mesh, axis_name)
    x = embeddings if _is_placed(embeddings, mesh, names) else shard_rows(embeddings, mesh, names)[0]
    scale = None
    if normalize:
        sq = jnp.sum(jnp.square(x.astype(jnp.float32)), axis=1)
        scale = jnp.where(sq > 0, jax.lax.rsqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
        scale = jax.device_put(scale, NamedSharding(mesh, _row_spec(names)))
    delta_arr = jax.device_put(jnp.asarray(delta, jnp.float32), NamedSharding(mesh, P()))
    return ShardedGramOperator(x, scale, delta_arr, mesh, names, precision)

