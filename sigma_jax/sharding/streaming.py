"""Out-of-core streaming: memory-mapped ``.npy`` shards read chunk by chunk onto a mesh, with prefetch."""

from __future__ import annotations

import functools
import os
import queue
import threading
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sigma_jax import _checks, _io, gram
from sigma_jax._x64 import split, x64
from sigma_jax.report import (NUM_MOMENTS, SigmaReport, SigmaStats, band_ridge, check_finite, check_scalars,
                              report_from_stats)
from sigma_jax.sharding.collectives import _check_mode, psum_f64
from sigma_jax.sharding.placement import AxisName, _local, _num_shards, _reduce_axis, _row_spec, _sigma_args

__all__ = ["stream_gram", "stream_sigma"]


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
                s = _io.load_embeddings(s)
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
    return _io.progress_bar(enabled and jax.process_index() == 0, total, desc, "rows")


@functools.lru_cache(maxsize=64)
def _stream_fns(mesh, names, normalize, psum_mode, chunk_rows):
    axis = _reduce_axis(names)
    spec = _row_spec(names)

    def init(rows):
        m = rows.shape[1]
        return jnp.zeros((1, m, m), jnp.float64)

    def upd(acc, rows):
        return acc + gram.gram_f64(rows, normalize=normalize, chunk_rows=chunk_rows)[None]

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
        q = gram.q_moments(rows, g, delta=delta, n_sub=n_sub, normalize=normalize, chunk_rows=chunk_rows)
        with x64():
            return lax.psum(q, axis)

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
                 prefetch: int = 2, progress: bool = False, psum_mode: str = "float64") -> SigmaReport:
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
    check_scalars(delta, rho, level)
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
        q_fn = _stream_q_fn(mesh, names, bool(normalize), int(chunk_rows), n_sub,
                            float(band_ridge(delta, n_sub, n_total)))
        bar = _bar(progress, src.n, "q moments")
        with x64():
            g_rep = jax.device_put(np.asarray(g), NamedSharding(mesh, P()))  # host value: valid on every process
            acc = np.zeros(NUM_MOMENTS, np.float64)
            for rows in _prefetch(src, sharding, chunk, prefetch, False, normalize, rho):
                acc += np.asarray(_local(q_fn(rows, g_rep)))
                if bar is not None:
                    bar.update(min(chunk, src.n - bar.n))
            q_sums = jnp.asarray(acc)
        if bar is not None:
            bar.close()
    stats = SigmaStats(g, None, q_sums, n_sub, n_sub, n_total, src.m)
    report = report_from_stats(stats, delta=float(delta), rho=float(rho), level=float(level))
    return check_finite(report, delta) if validate else report

