r"""The Gram operator sharded across devices and hosts.

Embeddings ``A`` (n x m, rows ``v_j``) too large for one device live
*row-sharded* on a :class:`jax.sharding.Mesh`: device ``d`` holds a block
``A_d`` of rows, and

    G = A^T A = sum_d A_d^T A_d,        G V^T = sum_d A_d^T (A_d V^T),

so the exact Gram matrix is one local float64 product per device plus **one**
all-reduce (``lax.psum``), and every matrix-free product with the feature-side
operator is one local product plus one all-reduce of a (k, m) block.  All of it
runs on JAX's own SPMD runtime (``jax.shard_map`` over a mesh of all global
devices, several hosts included after ``jax.distributed.initialize``).

Three ways in:

* **whole arrays** -- :func:`shard_rows`, :func:`sharded_gram`,
  :func:`sharded_sigma`, :func:`sharded_gram_operator` take an (n, m) array
  (numpy, ``np.memmap``, JAX, or a ``.npy`` path), pad the rows to a multiple
  of the device count with zero rows and place them on the mesh;
* **collectives in the user's step** -- :func:`gram_psum`, :func:`update_psum`,
  :func:`sigma_psum`, :func:`matmat_rows_psum`, :func:`probe_key` take the
  *local* rows plus an ``axis_name`` and reduce across it.  They are plain
  traced functions built on ``lax.psum`` and serve both a user's
  ``jax.shard_map`` step and a legacy ``jax.pmap`` step (one implementation;
  the whole-array functions above are ``shard_map`` wrappers around them);
* **out of core** -- :func:`stream_gram` / :func:`stream_sigma` read a
  memory-mapped ``.npy`` or a list of ``.npy`` shard files chunk by chunk, with a
  background thread prefetching (disk read + host-to-device copy of) the next
  chunk and an optional tqdm bar, into per-device float64 accumulators that
  are all-reduced once at the end.

Padding and normalisation.  Rows are L2-normalised with a guard
(``scale = 1/||a|| if ||a|| > 0 else 0``), so zero padding rows stay zero and
contribute nothing to ``G`` nor to the Mahalanobis sums of the SIGMA band;
every count (``n_A`` in ``U_cov = S - m log n_A``, ``beta``, the band) uses the
true number of rows, never the padded one.

Float64.  Local products are formed in float64 inside a local
``jax.enable_x64`` context (see ``sigma_jax._x64``); the global flag is never
touched.  ``psum_mode="float64"`` all-reduces float64 directly (works on CPU
(also across processes, gloo) and GPU (NCCL)).  ``psum_mode="pair"`` is for
runtimes whose collectives lack float64 (e.g. TPU): each local Gram is split
into float32 ``hi + lo`` on a grid shared by all devices (one scalar ``pmax``
fixes it), so the psum of the ``hi`` parts is *exact* in float32 and only the
tiny ``lo`` parts round.  Bound, with p devices and ``s = max_{d,ij} |G_d,ij|``:
``|G_pair - G| <= 4 p^3 2^-48 s`` entrywise (7e-12 s for p = 8), against
``(p-1) 2^-24 sum_d |G_d|`` (~4e-7 relative for p = 8) for the naive
"psum the hi parts, psum the lo parts" which throws the pair's extra bits away.

Example (8 devices)::

    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    G = sharded_gram(embeddings, mesh=mesh)                        # (m, m) float64
    rep = sharded_sigma(embeddings, mesh=mesh, n_total=10**6)      # == sigma_jax.sigma(...)

    @jax.jit
    @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P(), P("data")), out_specs=P())
    def step(state, local_rows):                                   # inside a training loop
        return update_psum(state, local_rows, "data")
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import queue
import threading
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sigma_jax import _checks, core, gram
from sigma_jax._x64 import f64, join, split, x64

__all__ = [
    "DEFAULT_AXIS",
    "make_mesh",
    "shard_rows",
    "sharded_gram",
    "sharded_sigma",
    "ShardedGramOperator",
    "sharded_gram_operator",
    "gram_psum",
    "update_psum",
    "sigma_psum",
    "matmat_rows_psum",
    "psum_f64",
    "probe_key",
    "probe_parallel",
    "stream_gram",
    "stream_sigma",
    "initialize_from_env",
]

DEFAULT_AXIS = "data"
PSUM_MODES = ("float64", "pair")

AxisName = Any  # str or tuple of str


# --------------------------------------------------------------------------- mesh helpers


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


def _check_scalars(delta, rho, level) -> None:
    for name, v in (("delta", delta), ("rho", rho)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not np.isfinite(v) \
                or v <= 0:
            raise ValueError(f"`{name}` must be a positive finite Python float, got {v!r}.")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"`level` must lie in (0, 1), got {level}.")


def _check_mode(psum_mode: str) -> None:
    if psum_mode not in PSUM_MODES:
        raise ValueError(f"`psum_mode` must be one of {PSUM_MODES}, got {psum_mode!r}.")


def _local(tree):
    """Replace replicated global arrays by their first local copy (usable eagerly on any host)."""

    def one(x):
        if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1 and x.sharding.is_fully_replicated:
            return x.addressable_data(0)
        return x

    return jax.tree.map(one, tree)


# --------------------------------------------------------------------------- placing rows on a mesh


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
        embeddings = gram.load_embeddings(embeddings)
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


# --------------------------------------------------------------------------- collectives (local rows + axis name)


def psum_f64(x64_local, axis_name: AxisName, *, psum_mode: str = "float64"):
    """All-reduce a float64 array across ``axis_name``, in float64 or as an exact float32 pair.

    Call inside :func:`sigma_jax._x64.x64` (the input is float64).  ``"pair"``
    mode (for collectives without float64): ``s = pmax max|x_d|``, grid
    ``h = sigma 2^-23`` with ``sigma = 2^(e(s) + ceil(log2 p) + 1) >= 2 p s``;
    ``hi_d = round_h(x_d)`` (exact in float32, and so is every partial sum of p of
    them since ``|sum| < sigma``), ``lo_d = f32(x_d - hi_d)``, ``|lo_d| <= h/2``.
    Error ``<= p^2 2^-25 h <= 4 p^3 2^-48 s``.

    Example:
        >>> with x64():
        ...     f = jax.shard_map(lambda a: psum_f64(f64(a), "data", psum_mode="pair"), mesh=make_mesh(),
        ...                       in_specs=P("data"), out_specs=P())
        ...     float(f(jnp.arange(jax.device_count(), dtype=jnp.float64))[0]) == sum(range(jax.device_count()))
        True
    """
    _check_mode(psum_mode)
    if psum_mode == "float64":
        return lax.psum(x64_local, axis_name)
    p = _axis_size(axis_name)
    s = lax.pmax(jnp.max(jnp.abs(x64_local)).astype(jnp.float32), axis_name)
    s = jnp.where(s > 0, f64(s), 1.0)
    _, e = jnp.frexp(s)  # s < 2^e
    sigma = jnp.ldexp(jnp.ones((), jnp.float64), e + int(math.ceil(math.log2(p))) + 1)
    c = 1.5 * jnp.ldexp(sigma, 29)  # ulp(c) = sigma 2^-23 = h
    hi = (x64_local + c) - c
    lo = (x64_local - hi).astype(jnp.float32)
    hi = lax.psum(hi.astype(jnp.float32), axis_name)
    lo = lax.psum(lo, axis_name)
    return f64(hi) + f64(lo)


def _masked(rows, mask):
    if mask is None:
        return rows
    return rows * mask.astype(rows.dtype)[:, None]


def _local_count(rows, mask):
    if mask is None:
        return jnp.asarray(rows.shape[0], jnp.int32)
    return jnp.sum(mask > 0).astype(jnp.int32)


def _chunked_sum(rows, chunk_rows: int, fn):
    """``sum_b fn(b)`` over row blocks of ``chunk_rows`` (a ``fori_loop`` over the full blocks).

    The loop carry starts from the first block's value rather than from zeros, so
    under ``shard_map`` (``check_vma=True``) it is "varying" over the mesh axes like
    the rows and the loop type-checks; ``0 + x = x`` exactly, so the sums equal
    :func:`sigma_jax.gram.gram_f64`'s bit for bit.
    """
    n, m = rows.shape
    if n <= chunk_rows:
        return fn(rows)
    n_full = n // chunk_rows
    acc = fn(rows[:chunk_rows])
    if n_full > 1:  # blocks 1..n_full-1 read in place (no copy of the rows)
        acc = lax.fori_loop(1, n_full, lambda i, c: c + fn(lax.dynamic_slice_in_dim(rows, i * chunk_rows, chunk_rows)),
                            acc)
    rest = rows[n_full * chunk_rows:]
    if rest.shape[0]:
        acc = acc + fn(rest)
    return acc


def _rows64(rows, normalize: bool):
    """float64 rows, L2-normalised with a guard (zero rows stay zero).  Call inside x64()."""
    a = f64(rows)
    if not normalize:
        return a
    sq = jnp.einsum("nm,nm->n", a, a)
    scale = jnp.where(sq > 0, lax.rsqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
    return a * scale[:, None]


def _local_gram64(rows, normalize: bool, chunk_rows: int):
    """float64 ``A_d^T A_d`` of the local rows, chunked.  Call inside x64()."""

    def block(b):
        a = _rows64(b, normalize)
        return jnp.einsum("nm,nk->mk", a, a)

    return _chunked_sum(rows, chunk_rows, block)


def _local_q_sums(rows, g, delta: float, n_sub: int, normalize: bool, chunk_rows: int):
    """Local ``(sum q_i, sum q_i^2)``, ``q_i = n_A ||L^{-1} v_i||^2``, ``L L^T = G_A + delta I``.

    The same quantity as :func:`sigma_jax.core.q_moments`; zero rows give ``q = 0``.
    Call inside x64().
    """
    m = g.shape[-1]
    chol = jnp.linalg.cholesky(f64(g) + delta * jnp.eye(m, dtype=jnp.float64))

    def block(b):
        w = jax.scipy.linalg.solve_triangular(chol, _rows64(b, normalize).T, lower=True)  # (m, c)
        q = n_sub * jnp.sum(w * w, axis=0)
        return jnp.stack([jnp.sum(q), jnp.sum(q * q)])

    return _chunked_sum(rows, chunk_rows, block)


def _gram64_psum(local_rows, axis_name, normalize, mask, psum_mode, chunk_rows):
    """float64 ``sum over the axis of A_d^T A_d``.  Call inside x64()."""
    g = _local_gram64(_masked(local_rows, mask), normalize, chunk_rows)
    return psum_f64(g, axis_name, psum_mode=psum_mode)


def gram_psum(local_rows, axis_name: AxisName, *, normalize: bool = True, mask=None, psum_mode: str = "float64",
              chunk_rows: int = gram.DEFAULT_CHUNK_ROWS) -> gram.GramState:
    """Gram matrix of the rows held across ``axis_name``, inside a user's ``shard_map`` / ``pmap`` step.

    ``G = sum_d A_d^T A_d``: local float64 product, one ``psum``.  Returns a
    replicated :class:`sigma_jax.gram.GramState` (float32 ``hi + lo`` pair, so it
    leaves a ``jit`` without losing bits; ``gram.finalize(state)`` gives float64 G)
    whose ``count`` is the number of rows across the axis (masked rows excluded).

    Args:
        local_rows: (c, m) rows on this device.
        axis_name: the ``shard_map`` mesh axis / ``pmap`` axis name (or a tuple).
        normalize: L2-normalise rows (zero rows stay zero).
        mask: optional (c,) 0/1 weights (masked rows contribute nothing).
        psum_mode: ``"float64"`` or ``"pair"`` (see :func:`psum_f64`).

    Example:
        >>> f = jax.shard_map(lambda a: gram_psum(a, "data"), mesh=make_mesh(), in_specs=P("data"), out_specs=P())
        >>> int(f(jnp.ones((8 * jax.device_count(), 3))).count) == 8 * jax.device_count()
        True
    """
    with x64():
        g = _gram64_psum(local_rows, axis_name, normalize, mask, psum_mode, chunk_rows)
        hi, lo = split(g)
    count = lax.psum(_local_count(local_rows, mask), axis_name)
    return gram.GramState(hi, lo, count)


def update_psum(state: gram.GramState, local_rows, axis_name: AxisName, *, normalize: bool = True, mask=None,
                psum_mode: str = "float64", chunk_rows: int = gram.DEFAULT_CHUNK_ROWS) -> gram.GramState:
    """``state + gram_psum(local_rows, axis_name)`` for a replicated streaming state (training-loop use).

    ``state`` must be the same on every device (as returned by a previous call);
    the sum is formed in float64 and stored back as the float32 pair.

    Example (a legacy ``pmap`` step; under ``shard_map`` the call is the same):
        >>> p = jax.local_device_count()
        >>> step = jax.pmap(lambda s, a: update_psum(s, a, "i"), axis_name="i", in_axes=(None, 0))
        >>> state = step(gram.init(3), jnp.ones((p, 4, 3)))
        >>> int(state.count[0]) == 4 * p
        True
    """
    if local_rows.ndim != 2 or local_rows.shape[1] != state.dim:
        raise ValueError(f"`local_rows` must have shape (c, {state.dim}), got {tuple(local_rows.shape)}.")
    with x64():
        g = join(state.hi, state.lo) + _gram64_psum(local_rows, axis_name, normalize, mask, psum_mode, chunk_rows)
        hi, lo = split(g)
    count = state.count + lax.psum(_local_count(local_rows, mask), axis_name)
    return gram.GramState(hi, lo, count)


def sigma_psum(local_rows, axis_name: AxisName, *, n_sub: int | None = None, n_total: int | None = None,
               delta: float = 1e-3, rho: float = 1.0, normalize: bool = True, mask=None, level: float = 0.95,
               psum_mode: str = "float64", chunk_rows: int = gram.DEFAULT_CHUNK_ROWS) -> core.SigmaReport:
    r"""SIGMA report of the rows held across ``axis_name``, inside a user's ``shard_map`` / ``pmap`` step.

    ``G_A`` by one ``psum`` of local float64 Gram matrices; when ``n_sub <
    n_total`` the band needs ``sum_i q_i`` and ``sum_i q_i^2``
    (``q_i = v_i^T C^{-1} v_i``, ``C = (G_A + delta I)/n_A``), computed shard-locally
    (as :func:`sigma_jax.core.q_moments`) and reduced with a second ``psum`` of two
    numbers; then :func:`sigma_jax.core.sigma_from_gram` (replicated).

    Args:
        local_rows: (c, m) rows on this device (all rows of the axis form the subset ``I_A``).
        axis_name: axis to reduce over.
        n_sub: ``n_A``, a Python int.  Default ``c * axis size``; **required** with
            ``mask`` or zero padding rows (the report must use the true count).
        n_total, delta, rho, level: as in :func:`sigma_jax.sigma`.
        mask: optional (c,) 0/1 weights.

    Returns:
        a replicated :class:`sigma_jax.core.SigmaReport`.  Its leaves are float64
        inside the step; returned from a ``jit`` traced outside ``x64()`` they are
        truncated to float32 (return the ``GramState`` from :func:`gram_psum` to keep
        all the bits).

    Example:
        >>> x = jax.random.normal(jax.random.key(0), (64 * jax.device_count(), 4))
        >>> f = jax.shard_map(lambda a: sigma_psum(a, "data", n_total=10**4), mesh=make_mesh(),
        ...                   in_specs=P("data"), out_specs=P())
        >>> rep = f(x)
        >>> float(rep.lower) <= float(rep.upper), float(rep.ci_halfwidth) > 0
        (True, True)
    """
    if n_sub is None:
        if mask is not None:
            raise ValueError("`sigma_psum` with a `mask` needs `n_sub` (the global number of unmasked rows, "
                             "a Python int).")
        n_sub = local_rows.shape[0] * _axis_size(axis_name)
    n_sub = int(n_sub)
    n_total = n_sub if n_total is None else int(n_total)
    if n_total < n_sub:
        raise ValueError(f"`n_total`={n_total} is smaller than `n_sub`={n_sub}.")
    rows = _masked(local_rows, mask)
    with x64():
        g = _gram64_psum(rows, axis_name, normalize, None, psum_mode, chunk_rows)
        q_sums = None
        if n_sub < n_total:
            q_local = _local_q_sums(rows, g, delta, n_sub, normalize, chunk_rows)
            q_sums = lax.psum(q_local, axis_name)
        return core.sigma_from_gram(g, n_sub=n_sub, n_total=n_total, delta=delta, rho=rho, q_sums=q_sums,
                                    level=level)


def matmat_rows_psum(v, local_rows, axis_name: AxisName, *, row_scale=None, ridge=0.0):
    """``V (A^T S^2 A + ridge I)`` with the rows of ``A`` spread over ``axis_name`` (probes as rows).

    ``V`` (k, m) must be the same on every device; returns the replicated (k, m)
    result after one ``psum`` of a (k, m) block.  ``row_scale`` (c,) is the local
    ``1/||a_j||`` (None: no normalisation).  Same arithmetic order as
    :meth:`sigma_jax.gram.GramOperator.matmat_rows`.

    Example:
        >>> f = jax.shard_map(lambda v, a: matmat_rows_psum(v, a, "data"), mesh=make_mesh(),
        ...                   in_specs=(P(), P("data")), out_specs=P())
        >>> f(jnp.ones((2, 3)), jnp.ones((jax.device_count(), 3))).shape
        (2, 3)
    """
    a = local_rows.astype(v.dtype)
    w = v @ a.T  # (k, c)
    if row_scale is not None:
        s = row_scale.astype(v.dtype)
        w = (w * s) * s
    out = lax.psum(w @ a, axis_name)
    return out + jnp.asarray(ridge).astype(v.dtype) * v


def probe_key(key, axis_name: AxisName):
    """The per-device key ``fold_in(key, axis_index)``: deterministic, distinct on every device.

    Device ``i`` of the axis draws exactly the probes a single device would draw
    with ``jax.random.fold_in(key, i)``, so a probe-parallel run is reproducible
    and comparable with a sequential one.

    Example:
        >>> f = jax.shard_map(lambda k: jax.random.uniform(probe_key(k, "data"), (1,)), mesh=make_mesh(),
        ...                   in_specs=P(), out_specs=P("data"))
        >>> len(set(np.asarray(f(jax.random.key(0))).tolist())) == jax.device_count()
        True
    """
    return jax.random.fold_in(key, lax.axis_index(axis_name))


# --------------------------------------------------------------------------- whole-array wrappers


def _sigma_args(mesh, axis_name):
    mesh = make_mesh() if mesh is None else mesh
    return mesh, _axes(mesh, axis_name)


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
def _sigma_fn(mesh, names, n_sub, n_total, delta, rho, normalize, level, psum_mode, chunk_rows):
    axis = _reduce_axis(names)

    def local(rows):
        return sigma_psum(rows, axis, n_sub=n_sub, n_total=n_total, delta=delta, rho=rho, normalize=normalize,
                          level=level, psum_mode=psum_mode, chunk_rows=chunk_rows)

    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=_row_spec(names), out_specs=P()))


def sharded_sigma(embeddings, *, mesh: jax.sharding.Mesh | None = None, axis_name: AxisName | None = None,
                  n_total: int | None = None, subset=None, key=None, delta: float = 1e-3, rho: float = 1.0,
                  normalize: bool = True, ridge_only: bool = False, level: float = 0.95, validate: bool = True,
                  psum_mode: str = "float64", chunk_rows: int = gram.DEFAULT_CHUNK_ROWS,
                  n_rows: int | None = None) -> core.SigmaReport:
    """:func:`sigma_jax.sigma` with the rows sharded over a mesh (same arguments, same report).

    The subset (``subset`` a count with ``key``, or indices) is resolved exactly
    as in :func:`sigma_jax.sigma` (:func:`sigma_jax.core.resolve_subset`), so both
    functions measure the same rows.  Then ``G_A`` by one float64 ``psum``, the
    band's Mahalanobis sums shard-locally plus a ``psum`` of two numbers, and the
    report on every device (:func:`sigma_psum` under ``jax.shard_map``).

    ``n_rows``: pass the true row count when ``embeddings`` is an already padded
    array (e.g. from :func:`shard_rows`); rows ``n_rows..`` must be zero rows.

    Returns:
        :class:`sigma_jax.core.SigmaReport` (float64 leaves, local arrays).

    Example:
        >>> emb = np.random.default_rng(0).normal(size=(1003, 16)).astype(np.float32)
        >>> rep = sharded_sigma(emb, mesh=make_mesh(8), n_total=5000)
        >>> float(rep.lower) <= float(rep.upper)
        True
    """
    if isinstance(embeddings, (str, os.PathLike)):
        embeddings = gram.load_embeddings(embeddings)
    embeddings = _checks.check_float_array(embeddings, "embeddings")
    _check_scalars(delta, rho, level)
    _check_mode(psum_mode)
    mesh, names = _sigma_args(mesh, axis_name)
    n_in, m = embeddings.shape
    n = n_in if n_rows is None else int(n_rows)
    if not 0 < n <= n_in:
        raise ValueError(f"`n_rows`={n_rows} must lie in [1, {n_in}] (the true number of rows before zero padding).")
    n_total = n if n_total is None else int(n_total)
    if n_total < n:
        raise ValueError(f"`n_total`={n_total} is smaller than the number of rows n={n}; n_total counts all texts "
                         "the embeddings were drawn from (default n).")
    idx = core.resolve_subset(subset, n, key)
    n_sub = n if idx is None else int(idx.shape[0])
    if n_sub <= m and not ridge_only:
        raise ValueError(f"SIGMA needs more observed rows than dimensions (n_A={n_sub} <= m={m}): pass more rows or "
                         f"a larger `subset`, or opt in to the ridge-only regime with `ridge_only=True`.")
    if idx is None:
        rows = embeddings
    elif isinstance(embeddings, np.ndarray):
        rows = embeddings[np.sort(np.asarray(idx))]
    else:
        rows = embeddings[jnp.asarray(idx)]
    concrete = _checks.is_concrete(rows)
    if validate and concrete and (not isinstance(rows, jax.Array) or rows.is_fully_addressable):
        _checks.check_embeddings(rows[:n_sub], "embeddings", normalize=normalize, rho=rho)
        if rows.shape[0] > n_sub and np.any(np.asarray(rows[n_sub:])):
            raise ValueError(f"`n_rows`={n_sub}: rows {n_sub}..{rows.shape[0] - 1} must be zero padding rows, "
                             "but some are nonzero; pass the true row count.")
    x, _ = shard_rows(rows, mesh, names)
    fn = _sigma_fn(mesh, names, n_sub, n_total, float(delta), float(rho), bool(normalize), float(level), psum_mode,
                   int(chunk_rows))
    with x64():
        report = _local(fn(x))
    if validate and concrete and not np.isfinite(float(report.logdet)):
        raise FloatingPointError(f"the Cholesky factorisation of G_A + delta*I failed (delta={delta}); "
                                 "increase `delta` or check the embeddings' scale.")
    return report


# --------------------------------------------------------------------------- sharded matrix-free operator


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["embeddings", "row_scale", "ridge"], meta_fields=["mesh", "axes"])
@dataclasses.dataclass(frozen=True)
class ShardedGramOperator:
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
    ridge: jax.Array
    mesh: jax.sharding.Mesh = None
    axes: tuple = (DEFAULT_AXIS,)

    side = "feature"

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.dim, self.dim)

    @property
    def dtype(self):
        return self.embeddings.dtype

    def matmat_rows(self, v):
        """``V (G + ridge I)`` for probes stored as rows, V: (k, m) -> (k, m)."""
        axis = _reduce_axis(self.axes)
        spec = _row_spec(self.axes)
        if self.row_scale is None:
            f = lambda v, a, r: matmat_rows_psum(v, a, axis, ridge=r)  # noqa: E731
            args, specs = (v, self.embeddings, self.ridge), (P(), spec, P())
        else:
            f = lambda v, a, s, r: matmat_rows_psum(v, a, axis, row_scale=s, ridge=r)  # noqa: E731
            args, specs = (v, self.embeddings, self.row_scale, self.ridge), (P(), spec, spec, P())
        return jax.shard_map(f, mesh=self.mesh, in_specs=specs, out_specs=P())(*args)

    def matvec(self, v):
        """``(G + ridge I) v`` for v: (m,)."""
        return self.matmat_rows(v[None, :])[0]

    def matmat(self, v):
        """``(G + ridge I) V`` for V: (m, k) (columns)."""
        return self.matmat_rows(v.T).T

    __matmul__ = matvec

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
        return d + self.ridge

    def trace(self):
        """tr(G + ridge I)."""
        return jnp.sum(self.diagonal())

    def dense(self, dtype=jnp.float64):
        """The m x m matrix (float64 by default): :func:`sharded_gram` plus the ridge."""
        g = sharded_gram(self.embeddings, self.mesh, axis_name=self.axes, normalize=self.row_scale is not None)
        with x64():
            return (g + f64(_local(self.ridge)) * jnp.eye(self.dim, dtype=jnp.float64)).astype(dtype)


def sharded_gram_operator(embeddings, mesh: jax.sharding.Mesh | None = None, *, axis_name: AxisName | None = None,
                          ridge: float = 0.0, normalize: bool = True) -> ShardedGramOperator:
    """Build a :class:`ShardedGramOperator` for ``A^T A + ridge I`` with rows sharded over ``mesh``.

    Row scales are computed as in :func:`sigma_jax.gram.gram_operator`
    (float32, ``rsqrt`` with a zero guard), on the devices holding the rows.

    Example:
        >>> op = sharded_gram_operator(np.ones((10, 3), np.float32), make_mesh(2), ridge=1e-3)
        >>> op.matvec(jnp.ones(3)).shape
        (3,)
    """
    mesh, names = _sigma_args(mesh, axis_name)
    x = embeddings if _is_placed(embeddings, mesh, names) else shard_rows(embeddings, mesh, names)[0]
    scale = None
    if normalize:
        sq = jnp.sum(jnp.square(x.astype(jnp.float32)), axis=1)
        scale = jnp.where(sq > 0, jax.lax.rsqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
        scale = jax.device_put(scale, NamedSharding(mesh, _row_spec(names)))
    ridge_arr = jax.device_put(jnp.asarray(ridge, jnp.float32), NamedSharding(mesh, P()))
    return ShardedGramOperator(x, scale, ridge_arr, mesh, names)


# --------------------------------------------------------------------------- probe-parallel mode


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


# --------------------------------------------------------------------------- out-of-core streaming


class _RowSource:
    """A virtual (n, m) row space over one array/memmap/.npy path or a list of them (concatenated)."""

    def __init__(self, source):
        if isinstance(source, (str, os.PathLike)) or hasattr(source, "shape"):
            source = [source]
        if not isinstance(source, (list, tuple)) or not source:
            raise TypeError("`source` must be a .npy path, an (n, m) array/memmap, or a non-empty list of them "
                            f"(shard files); got {type(source).__name__}.")
        parts = []
        for i, s in enumerate(source):
            if isinstance(s, (str, os.PathLike)):
                s = gram.load_embeddings(s)
            parts.append(_checks.check_float_array(s, f"source[{i}]"))
        m = parts[0].shape[1]
        for i, s in enumerate(parts):
            if s.shape[1] != m:
                raise ValueError(f"source[{i}] has {s.shape[1]} columns, expected {m} (as source[0]).")
        self.parts = parts
        self.offsets = np.cumsum([0] + [s.shape[0] for s in parts])
        self.n, self.m = int(self.offsets[-1]), m
        dt = np.dtype(parts[0].dtype)
        self.dtype = np.dtype(np.float32) if dt == np.float64 else dt

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1 as a fresh array, zero rows beyond n."""
        out = np.zeros((stop - start, self.m), self.dtype)
        lo, hi = start, min(stop, self.n)
        while lo < hi:
            k = int(np.searchsorted(self.offsets, lo, side="right") - 1)
            end = min(hi, int(self.offsets[k + 1]))
            base = int(self.offsets[k])
            out[lo - start:end - start] = np.asarray(self.parts[k][lo - base:end - base], self.dtype)
            lo = end
        return out


def _prefetch(src: _RowSource, sharding: NamedSharding, chunk: int, depth: int, validate: bool, normalize: bool,
              rho: float) -> Iterator[jax.Array]:
    """Yield the chunks of ``src`` as global (chunk, m) arrays; a thread reads and copies ahead.

    Only the rows of this process's devices are read.  Errors in the thread
    (I/O, validation) are re-raised here with the global row range.
    """
    shape = (chunk, src.m)
    index_map = sharding.addressable_devices_indices_map(shape)
    devices = list(index_map)
    num = -(-src.n // chunk)
    q: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
    stop = threading.Event()

    def work():
        try:
            for k in range(num):
                if stop.is_set():
                    return
                base = k * chunk
                arrays = []
                for d in devices:
                    rows = index_map[d][0]
                    r0, r1 = rows.start or 0, chunk if rows.stop is None else rows.stop
                    block = src.read(base + r0, base + r1)
                    if validate:
                        valid = max(0, min(src.n, base + r1) - (base + r0))
                        if valid:
                            _validate(block[:valid], base + r0, normalize, rho)
                    arrays.append(jax.device_put(block, d))
                q.put(arrays)
            q.put(None)
        except BaseException as err:  # handed to the consumer
            q.put(err)

    thread = threading.Thread(target=work, name="sigma_jax-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield jax.make_array_from_single_device_arrays(shape, sharding, item)
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def _validate(block: np.ndarray, offset: int, normalize: bool, rho: float) -> None:
    """``check_embeddings`` on a block, with the offending rows named by their global index."""
    try:
        _checks.check_embeddings(block, "embeddings", normalize=normalize, rho=rho)
    except ValueError as err:
        b = np.asarray(block, np.float64)
        finite = np.isfinite(b).all(axis=1)
        sq = np.einsum("ij,ij->i", np.where(finite[:, None], b, 0.0), np.where(finite[:, None], b, 0.0))
        bad = ~finite | ((sq == 0.0) if normalize else (sq > rho * (1.0 + 1e-5)))
        where = _checks.describe_rows(offset + np.flatnonzero(bad))
        raise ValueError(f"global {where} (block of rows {offset}..{offset + b.shape[0] - 1}): {err}") from None


def _bar(enabled: bool, total: int, desc: str):
    if not enabled or jax.process_index() != 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are optional
        return None
    return tqdm(total=total, unit="rows", desc=desc)


@functools.lru_cache(maxsize=64)
def _stream_fns(mesh, names, normalize, psum_mode, chunk_rows):
    axis = _reduce_axis(names)
    spec = _row_spec(names)

    def init(rows):
        m = rows.shape[1]
        return jnp.zeros((1, m, m), jnp.float64)

    def upd(acc, rows):
        return acc + _local_gram64(rows, normalize, chunk_rows)[None]

    def fin(acc):
        return psum_f64(acc[0], axis, psum_mode=psum_mode)

    sm = functools.partial(jax.shard_map, mesh=mesh)
    return (jax.jit(sm(init, in_specs=spec, out_specs=spec)),
            jax.jit(sm(upd, in_specs=(spec, spec), out_specs=spec), donate_argnums=0),
            jax.jit(sm(fin, in_specs=spec, out_specs=P())))


@functools.lru_cache(maxsize=64)
def _stream_q_fn(mesh, names, normalize, chunk_rows, n_sub, delta):
    axis = _reduce_axis(names)

    def q_fn(rows, g):
        with x64():
            return lax.psum(_local_q_sums(rows, g, delta, n_sub, normalize, chunk_rows), axis)

    return jax.jit(jax.shard_map(q_fn, mesh=mesh, in_specs=(_row_spec(names), P()), out_specs=P()))


def _stream_setup(source, mesh, axis_name, chunk_rows):
    src = _RowSource(source)
    mesh, names = _sigma_args(mesh, axis_name)
    p = _num_shards(mesh, names)
    if int(chunk_rows) <= 0:
        raise ValueError(f"`chunk_rows` must be a positive integer, got {chunk_rows}.")
    chunk = -(-min(int(chunk_rows), src.n) // p) * p
    return src, mesh, names, chunk, NamedSharding(mesh, _row_spec(names))


def stream_gram(source, *, mesh: jax.sharding.Mesh | None = None, axis_name: AxisName | None = None,
                chunk_rows: int = 1 << 16, normalize: bool = True, validate: bool = True, rho: float = 1.0,
                prefetch: int = 2, progress: bool = False, psum_mode: str = "float64") -> gram.GramState:
    """Out-of-core ``G = A^T A`` over a memory-mapped ``.npy`` or a list of ``.npy`` shard files, on a mesh.

    Rows are read ``chunk_rows`` at a time (rounded up to a multiple of the
    device count; the last chunk zero-padded), each chunk split over the mesh;
    a background thread reads the next ``prefetch`` chunks from disk and copies
    them to their devices while the current one is multiplied.  Every device
    keeps its own float64 accumulator; they are all-reduced once at the end.
    On several hosts every process opens the same files (shared filesystem)
    and reads only the rows of its own devices.

    Args:
        source: a ``.npy`` path (memory-mapped), an (n, m) array/memmap, or a list
            of them (concatenated in order).
        chunk_rows: rows per global chunk.
        validate: check finite values / nonzero rows / norm bound, per block
            (errors name the global rows).
        prefetch: chunks read ahead (queue depth).
        progress: tqdm bar (process 0 only; silently off without tqdm).

    Returns:
        :class:`sigma_jax.gram.GramState` with ``count`` = n (local arrays).

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "part.npy")
        >>> np.save(path, np.eye(4, dtype=np.float32))
        >>> state = stream_gram([path, path], mesh=make_mesh())   # two shard files, 8 rows
        >>> int(state.count), float(gram.finalize(state)[0, 0])
        (8, 2.0)
    """
    _check_mode(psum_mode)
    src, mesh, names, chunk, sharding = _stream_setup(source, mesh, axis_name, chunk_rows)
    init_fn, upd_fn, fin_fn = _stream_fns(mesh, names, bool(normalize), psum_mode, int(chunk_rows))
    bar = _bar(progress, src.n, "gram")
    acc = None
    done = 0
    with x64():
        for rows in _prefetch(src, sharding, chunk, prefetch, validate, normalize, rho):
            if acc is None:
                acc = init_fn(rows)
            acc = upd_fn(acc, rows)
            if bar is not None:
                step = min(chunk, src.n - done)
                bar.update(step)
                done += step
        g = fin_fn(acc)
        hi, lo = split(_local(g))
    if bar is not None:
        bar.close()
    return gram.GramState(hi, lo, jnp.asarray(src.n, jnp.int32))


def stream_sigma(source, *, mesh: jax.sharding.Mesh | None = None, axis_name: AxisName | None = None,
                 n_total: int | None = None, delta: float = 1e-3, rho: float = 1.0, normalize: bool = True,
                 level: float = 0.95, ridge_only: bool = False, chunk_rows: int = 1 << 16, validate: bool = True,
                 prefetch: int = 2, progress: bool = False, psum_mode: str = "float64") -> core.SigmaReport:
    """SIGMA report of every row of an out-of-core ``source`` (the observed subset ``I_A``), on a mesh.

    Pass 1: :func:`stream_gram`.  Pass 2 (only when ``n_total > n``, for the
    Theorem-3 band): the Mahalanobis sums ``sum q_i, sum q_i^2`` chunk by chunk,
    one ``psum`` of two numbers per chunk.  To measure a random subset, select
    its rows first (e.g. ``np.sort`` the indices and write them out).

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "emb.npy")
        >>> np.save(path, np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32))
        >>> rep = stream_sigma(path, mesh=make_mesh(), n_total=3000, chunk_rows=64)
        >>> int(rep.n_sub), float(rep.ci_halfwidth) > 0
        (300, True)
    """
    _check_scalars(delta, rho, level)
    src, mesh, names, chunk, sharding = _stream_setup(source, mesh, axis_name, chunk_rows)
    n_sub = src.n
    n_total = n_sub if n_total is None else int(n_total)
    if n_total < n_sub:
        raise ValueError(f"`n_total`={n_total} is smaller than the number of rows n={n_sub}.")
    if n_sub <= src.m and not ridge_only:
        raise ValueError(f"SIGMA needs more observed rows than dimensions (n_A={n_sub} <= m={src.m}); pass more rows "
                         "or `ridge_only=True`.")
    state = stream_gram(src.parts, mesh=mesh, axis_name=names, chunk_rows=chunk_rows, normalize=normalize,
                        validate=validate, rho=rho, prefetch=prefetch, progress=progress, psum_mode=psum_mode)
    g = gram.finalize(state)
    q_sums = None
    if n_sub < n_total:
        q_fn = _stream_q_fn(mesh, names, bool(normalize), int(chunk_rows), n_sub, float(delta))
        bar = _bar(progress, src.n, "q moments")
        with x64():
            g_rep = jax.device_put(np.asarray(g), NamedSharding(mesh, P()))  # host value: valid on every process
            acc = np.zeros(2, np.float64)
            for rows in _prefetch(src, sharding, chunk, prefetch, False, normalize, rho):
                acc += np.asarray(_local(q_fn(rows, g_rep)))
                if bar is not None:
                    bar.update(min(chunk, src.n - bar.n))
            q_sums = jnp.asarray(acc)
        if bar is not None:
            bar.close()
    report = core.sigma_from_gram(g, n_sub=n_sub, n_total=n_total, delta=float(delta), rho=float(rho),
                                  q_sums=q_sums, level=float(level))
    if validate and not np.isfinite(float(report.logdet)):
        raise FloatingPointError(f"the Cholesky factorisation of G_A + delta*I failed (delta={delta}); "
                                 "increase `delta` or check the embeddings' scale.")
    return report


# --------------------------------------------------------------------------- multi-host


def initialize_from_env(*, auto: bool = False, timeout_s: int = 300) -> bool:
    """Start JAX's distributed runtime from environment variables (call before any other JAX use).

    Reads ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0),
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (optionally
    ``JAX_LOCAL_DEVICE_IDS``, read by JAX itself) and calls
    :func:`jax.distributed.initialize`.  Without them it does nothing and
    returns False (single process), unless ``auto=True``, which calls
    ``jax.distributed.initialize()`` with no arguments so JAX detects the
    cluster itself (SLURM, Open MPI, TPU pods, GKE).

    Returns:
        True when the distributed runtime is (now) running.

    Example:
        >>> initialize_from_env()     # no JAX_COORDINATOR_ADDRESS / ... set: single process
        False

    Launch (two hosts; the same command on both, ``JAX_PROCESS_ID`` 0 and 1)::

        JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 python run.py
    """
    if _distributed_running():
        return True
    addr = os.environ.get("JAX_COORDINATOR_ADDRESS")
    nproc = os.environ.get("JAX_NUM_PROCESSES")
    pid = os.environ.get("JAX_PROCESS_ID")
    given = [v is not None for v in (addr, nproc, pid)]
    if any(given) and not all(given):
        raise ValueError("multi-host launch needs all of JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID "
                         f"(got address={addr!r}, num_processes={nproc!r}, process_id={pid!r}).")
    if all(given):
        try:
            num_processes, process_id = int(nproc), int(pid)
        except ValueError:
            raise ValueError(f"JAX_NUM_PROCESSES={nproc!r} and JAX_PROCESS_ID={pid!r} must be integers.") from None
        if not 0 <= process_id < num_processes:
            raise ValueError(f"JAX_PROCESS_ID={process_id} must lie in [0, JAX_NUM_PROCESSES={num_processes}).")
        jax.distributed.initialize(coordinator_address=addr, num_processes=num_processes, process_id=process_id,
                                   initialization_timeout=int(timeout_s))
        return True
    if auto:
        jax.distributed.initialize(initialization_timeout=int(timeout_s))
        return True
    return False


def _distributed_running() -> bool:
    try:
        from jax._src import distributed as _dist

        return _dist.global_state.client is not None
    except Exception:  # private API moved: assume not running
        return False
