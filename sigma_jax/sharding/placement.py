"""Meshes and row placement: a 1-D mesh, row-sharded arrays zero-padded to the device count."""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sigma_jax import _checks, _io

__all__ = ["DEFAULT_AXIS", "AxisName", "make_mesh", "shard_rows"]

DEFAULT_AXIS = "data"

AxisName = Any  # str or tuple of str


def make_mesh(devices: int | Sequence[Any] | None = None, axis_name: str = DEFAULT_AXIS) -> jax.sharding.Mesh:
    """A 1-D mesh (axis ``axis_name``, Auto axis type) over ``devices``.

    Args:
        devices: None (all global devices, every host), an int k (the first k
            global devices), or a sequence of devices.
        axis_name: name of the mesh axis the rows are sharded over.

    Example:
        >>> make_mesh().axis_names
        ('data',)
    """
    all_devices = jax.devices()
    if devices is None:
        devs = all_devices
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        k = int(devices)
        if not 1 <= k <= len(all_devices):
            raise ValueError(f"`devices`={k} must lie in [1, {len(all_devices)}] (the number of global devices).")
        devs = all_devices[:k]
    else:
        devs = list(devices)
        if not devs:
            raise ValueError("`devices` is empty; pass None (all devices), a count, or a list of devices.")
    return jax.make_mesh((len(devs),), (axis_name,), axis_types=(jax.sharding.AxisType.Auto,), devices=devs)


def _axes(mesh: jax.sharding.Mesh, axis_name: AxisName | None) -> tuple[str, ...]:
    if axis_name is None:
        names = tuple(mesh.axis_names)
    elif isinstance(axis_name, str):
        names = (axis_name,)
    else:
        names = tuple(axis_name)
    for a in names:
        if a not in mesh.axis_names:
            raise ValueError(f"`axis_name` {a!r} is not an axis of the mesh (axes {tuple(mesh.axis_names)}).")
    return names


def _reduce_axis(names: tuple[str, ...]) -> AxisName:
    return names[0] if len(names) == 1 else names


def _row_spec(names: tuple[str, ...]) -> P:
    return P(_reduce_axis(names))


def _num_shards(mesh: jax.sharding.Mesh, names: tuple[str, ...]) -> int:
    return int(math.prod(mesh.shape[a] for a in names))


def _axis_size(axis_name: AxisName) -> int:
    names = (axis_name,) if isinstance(axis_name, str) else tuple(axis_name)
    return int(math.prod(lax.axis_size(a) for a in names))


def _local(tree):
    """Replace replicated global arrays by their first local copy (usable eagerly on any host)."""

    def one(x):
        if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1 and x.sharding.is_fully_replicated:
            return x.addressable_data(0)
        return x

    return jax.tree.map(one, tree)


def shard_rows(embeddings, mesh: jax.sharding.Mesh | None = None, axis_name: AxisName | None = None):
    """Place an (n, m) array row-sharded on ``mesh``, zero-padded to a multiple of the device count.

    Host inputs (numpy, ``np.memmap``, a ``.npy``/``.npz`` path) are read one
    device block at a time (``jax.make_array_from_callback``), so a memory-mapped
    file is never loaded whole and, on several hosts, each process reads only
    the rows of its own devices.  float64 host data are cast to float32 (as
    ``jnp.asarray`` does without x64); lower-precision dtypes are kept.

    Args:
        embeddings: (n, m) array or path.
        mesh: the mesh (default: all global devices on one axis ``"data"``).
        axis_name: mesh axis (or tuple of axes) to shard rows over (default: all axes).

    Returns:
        ``(rows, n)``: a global (n_pad, m) array with sharding ``P(axis_name)``,
        n_pad = ceil(n / p) p, rows n..n_pad-1 zero; and the true row count n.

    Example:
        >>> rows, n = shard_rows(np.ones((10, 3), np.float32), make_mesh())
        >>> n, rows.shape[0] % jax.device_count(), float(rows[n:].sum())
        (10, 0, 0.0)
    """
    if isinstance(embeddings, (str, os.PathLike)):
        embeddings = _io.load_embeddings(embeddings)
    embeddings = _checks.check_float_array(embeddings, "embeddings")
    mesh = make_mesh() if mesh is None else mesh
    names = _axes(mesh, axis_name)
    p = _num_shards(mesh, names)
    n, m = embeddings.shape
    n_pad = -(-n // p) * p
    sharding = NamedSharding(mesh, _row_spec(names))
    if isinstance(embeddings, jax.Array) and jax.process_count() > 1 and embeddings.is_fully_addressable:
        embeddings = np.asarray(embeddings)  # a process-local array: each process supplies its own devices' rows
    if isinstance(embeddings, jax.Array):
        x = embeddings
        if n_pad != n:
            x = jnp.pad(x, ((0, n_pad - n), (0, 0)))
        return jax.device_put(x, sharding), n
    dtype = np.dtype(embeddings.dtype)
    if dtype == np.float64:
        dtype = np.dtype(np.float32)

    def block(index):
        rows = index[0]
        start, stop = rows.start or 0, n_pad if rows.stop is None else rows.stop
        out = np.zeros((stop - start, m), dtype)
        hi = min(stop, n)
        if hi > start:
            out[: hi - start] = np.asarray(embeddings[start:hi], dtype)
        return out[:, index[1]]

    return jax.make_array_from_callback((n_pad, m), sharding, block), n


def _is_placed(x, mesh, names) -> bool:
    return (isinstance(x, jax.Array) and isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh
            and x.shape[0] % _num_shards(mesh, names) == 0)



def _sigma_args(mesh, axis_name):
    mesh = make_mesh() if mesh is None else mesh
    return mesh, _axes(mesh, axis_name)
