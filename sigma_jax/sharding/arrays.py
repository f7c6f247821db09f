"""Whole-array entry points: pass an (n, m) array (or path), get the sharded Gram / SIGMA report back."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from sigma_jax import gram
from sigma_jax._x64 import x64
from sigma_jax.report import SigmaReport, check_finite, report_from_stats, resolve_inputs, validate_rows
from sigma_jax.sharding.collectives import _check_mode, _gram64_psum, probe_key, sigma_stats_psum
from sigma_jax.sharding.placement import (AxisName, _is_placed, _local, _reduce_axis, _row_spec, _sigma_args,
                                          make_mesh, shard_rows)  # noqa: F401 (make_mesh: examples)

__all__ = ["sharded_gram", "sharded_sigma", "probe_parallel"]


@functools.lru_cache(maxsize=64)
def _gram_fn(mesh, names, normalize, psum_mode, chunk_rows):
    axis = _reduce_axis(names)

    def local(rows):
        with x64():
            return _gram64_psum(rows, axis, normalize, None, psum_mode, chunk_rows)

    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=_row_spec(names), out_specs=P()))


def sharded_gram(embeddings, mesh: jax.sharding.Mesh | None = None, *, axis_name: AxisName | None = None,
                 normalize: bool = True, psum_mode: str = "float64", chunk_rows: int = gram.DEFAULT_CHUNK_ROWS):
    """Exact ``G = A^T A`` (m x m, float64) with the rows of ``A`` sharded over ``mesh``.

    ``embeddings`` is an (n, m) array / memmap / path (placed with
    :func:`shard_rows`) or an array already row-sharded on ``mesh`` (zero
    padding rows allowed).  Equals :func:`sigma_jax.gram.gram_f64` up to the
    order of float64 additions (relative ~1e-15).

    Example:
        >>> G = sharded_gram(np.eye(3, dtype=np.float32), make_mesh(2))
        >>> G.dtype
        dtype('float64')
    """
    _check_mode(psum_mode)
    mesh, names = _sigma_args(mesh, axis_name)
    x = embeddings if _is_placed(embeddings, mesh, names) else shard_rows(embeddings, mesh, names)[0]
    with x64():
        return _local(_gram_fn(mesh, names, bool(normalize), psum_mode, int(chunk_rows))(x))



@functools.lru_cache(maxsize=64)
def _sigma_fn(mesh, names, n_sub, n_total, delta, normalize, psum_mode, chunk_rows):
    axis = _reduce_axis(names)

    def local(rows):
        return sigma_stats_psum(rows, axis, n_sub=n_sub, n_total=n_total, delta=delta, normalize=normalize,
                                psum_mode=psum_mode, chunk_rows=chunk_rows)

    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=_row_spec(names), out_specs=P()))


def sharded_sigma(embeddings, *, mesh: jax.sharding.Mesh | None = None, axis_name: AxisName | None = None,
                  n_total: int | None = None, subset=None, key=None, delta: float = 1e-3, rho: float = 1.0,
                  normalize: bool = True, ridge_only: bool = False, level: float = 0.95, validate: bool = True,
                  psum_mode: str = "float64", chunk_rows: int = gram.DEFAULT_CHUNK_ROWS,
                  n_rows: int | None = None) -> SigmaReport:
    """:func:`sigma_jax.sigma` with the rows sharded over a mesh (same arguments, same report).

    The arguments are validated by the same entry as :func:`sigma_jax.sigma`
    (:func:`sigma_jax.report.resolve_inputs`), so both functions measure the same rows.  Then
    ``G_A`` by one float64 ``psum``, the band's q-moments shard-locally plus a ``psum`` of two
    numbers (:func:`sigma_stats_psum` under ``jax.shard_map``), and the one assembler.

    ``n_rows``: pass the true row count when ``embeddings`` is an already padded
    array (e.g. from :func:`shard_rows`); rows ``n_rows..`` must be zero rows.

    Returns:
        :class:`sigma_jax.report.SigmaReport` (float64 leaves, local arrays).

    Example:
        >>> emb = np.random.default_rng(0).normal(size=(1003, 16)).astype(np.float32)
        >>> rep = sharded_sigma(emb, mesh=make_mesh(8), n_total=5000)
        >>> float(rep.lower) <= float(rep.upper)
        True
    """
    _check_mode(psum_mode)
    inp = resolve_inputs(embeddings, n_total=n_total, subset=subset, key=key, delta=delta, rho=rho, level=level,
                         ridge_only=ridge_only, n_rows=n_rows)
    mesh, names = _sigma_args(mesh, axis_name)
    emb, idx, n_sub = inp.embeddings, inp.idx, inp.n_sub
    if idx is None:
        rows = emb
    elif isinstance(emb, np.ndarray):
        rows = emb[np.sort(np.asarray(idx))]
    else:
        rows = emb[jnp.asarray(idx)]
    if validate:
        validate_rows(inp, normalize=normalize, rho=rho)
        concrete = not isinstance(rows, jax.Array) or (rows.is_fully_addressable and not isinstance(rows,
                                                                                                     jax.core.Tracer))
        if concrete and rows.shape[0] > n_sub and np.any(np.asarray(rows[n_sub:])):
            raise ValueError(f"`n_rows`={n_sub}: rows {n_sub}..{rows.shape[0] - 1} must be zero padding rows, "
                             "but some are nonzero; pass the true row count.")
    x, _ = shard_rows(rows, mesh, names)
    fn = _sigma_fn(mesh, names, n_sub, inp.n_total, float(delta), bool(normalize), psum_mode, int(chunk_rows))
    with x64():
        stats = _local(fn(x))
        report = report_from_stats(stats, delta=float(delta), rho=float(rho), level=float(level))
    return check_finite(report, delta) if validate else report


@functools.lru_cache(maxsize=64)
def _probe_fn(fn, mesh, names, n_operands):
    axis = _reduce_axis(names)

    def local(key, *operands):
        out = fn(probe_key(key, axis), *operands)
        return jax.tree.map(lambda y: jnp.asarray(y)[None], out)

    specs = (P(),) * (1 + n_operands)
    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=_row_spec(names), check_vma=False))


def probe_parallel(fn: Callable, key, *operands, mesh: jax.sharding.Mesh | None = None,
                   axis_name: AxisName | None = None):
    """Run a probe-based estimate on every device with its own probes, deterministically.

    Device ``i`` runs ``fn(jax.random.fold_in(key, i), *operands)`` with the
    operands replicated (e.g. an unsharded :class:`~sigma_jax.gram.GramOperator`
    that fits on each device); the outputs are stacked along a new leading axis
    of length p (one entry per device), ready to be averaged with their standard
    error.  Inside a user's own step use :func:`probe_key` instead.

    Args:
        fn: ``fn(key, *operands) -> pytree of arrays`` (the same shapes on every device).
        key: root PRNG key.
        operands: replicated arguments.

    Example:
        >>> op = gram.gram_operator(jnp.eye(4))
        >>> def hutch(k, op):
        ...     z = jax.random.rademacher(k, (8, op.dim), jnp.float32)
        ...     return jnp.sum(z * op.matmat_rows(z), axis=1)
        >>> probe_parallel(hutch, jax.random.key(0), op, mesh=make_mesh(2)).shape
        (2, 8)
    """
    mesh, names = _sigma_args(mesh, axis_name)
    out = _probe_fn(fn, mesh, names, len(operands))(key, *operands)
    return out

