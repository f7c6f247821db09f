"""The Gram matrix of embeddings: SIGMA's dense and streamed producers, and streaming float64 accumulation.

Notation: ``A`` is the (n, m) matrix whose rows are the embeddings ``v_j``
(L2-normalised when ``normalize=True``).  The *feature-side* Gram matrix is
``G = A^T A = sum_j v_j v_j^T`` (m x m, the object SIGMA works with); the
*sample-side* Gram matrix is ``K = A A^T`` (n x n, the kernel matrix of Vendi
and kernel methods).  Both share their nonzero spectrum.

Streaming (``init`` / ``update`` / ``finalize``, optax-style pure functions)::

    state = gram.init(m)
    for chunk in chunks:                     # (c, m) arrays, any float dtype
        state = gram.update(state, chunk)    # jit-able, pure
    G = gram.finalize(state)                 # (m, m) float64

Products are formed in float64 and the accumulator is kept as a float32
``(hi, lo)`` pair (~48 significant bits), so the state survives ``jit``
boundaries without JAX's global x64 flag (see ``sigma_jax._x64``).

Producers of SIGMA's sufficient statistics (:class:`sigma_jax.report.SigmaStats`):

* :func:`dense_stats` -- in-memory rows, **jittable** (XLA float64; the path under ``jit``/``vmap``
  and on accelerators);
* :func:`blas_stats` -- concrete host arrays on the CPU: the platform's float64 BLAS (chunked
  ``dsyrk`` + ``dtrmm``, :mod:`sigma_jax._blas`), **the CPU default** of :func:`sigma_jax.sigma`
  (at the floor of one float64 ``A^T A``; not jittable);
* :func:`split_stats` -- ``precision="split"``: float64-accurate ``G_A`` from float32 arithmetic
  only (:mod:`sigma_jax._split`), finished on the host (for TPUs and fast-float32 GPUs);
* :func:`host_stats` -- host arrays and memmaps streamed to an accelerator in two passes.

:func:`dense_stats` and :func:`host_stats` use the one chunked Gram (:func:`gram_f64`) and the one
Mahalanobis pass (:func:`q_moments`) that the sharded producers also run on their local rows.
The matrix-free :class:`~sigma_jax.operators.GramOperator` lives in :mod:`sigma_jax.operators`
(re-exported here).
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sigma_jax import _blas, _checks, _io, _split
from sigma_jax._linalg import HIGHEST, inv_chol
from sigma_jax._x64 import f64, join, split, x64
from sigma_jax.operators import GramOperator, gram_operator  # re-exported: the operator lives in operators.py
from sigma_jax.report import NUM_MOMENTS, SigmaStats, band_ridge, row_moments

__all__ = [
    "GramState",
    "init",
    "update",
    "merge",
    "finalize",
    "gram_f64",
    "q_moments",
    "band_factor",
    "dense_stats",
    "host_stats",
    "blas_stats",
    "split_stats",
    "host_device",
    "accumulate",
    "iter_chunks",
    "load_embeddings",
    "GramOperator",
    "gram_operator",
]

DEFAULT_CHUNK_ROWS = 8192


# --------------------------------------------------------------------------- dense float64 Gram


def row_scale(rows64, normalize: bool):
    """1/||v|| per row (0 for zero rows, so padding rows contribute nothing); None when not normalising.

    Example:
        >>> [round(float(v), 6) for v in row_scale(jnp.array([[3.0, 4.0], [0.0, 0.0]]), True)]
        [0.2, 0.0]
    """
    if not normalize:
        return None
    sq = jnp.einsum("nm,nm->n", rows64, rows64, precision=HIGHEST)
    zero, one = jnp.zeros((), sq.dtype), jnp.ones((), sq.dtype)  # typed: weak literals misbehave under vmap+x64
    pos = sq > zero
    return jnp.where(pos, jax.lax.rsqrt(jnp.where(pos, sq, one)), zero)


_row_scale = row_scale  # former private name


def normalized_rows64(rows, normalize: bool, mask=None):
    """float64 rows, L2-normalised with a zero guard and weighted by an optional 0/1 ``mask``.  Call inside x64().

    Example:
        >>> with x64():
        ...     v = normalized_rows64(np.array([[3.0, 4.0]]), True)
        >>> v.dtype, [round(float(t), 12) for t in v[0]]
        (dtype('float64'), [0.6, 0.8])
    """
    a = f64(rows)
    scale = row_scale(a, normalize)
    if mask is not None:
        m64 = f64(mask)
        scale = m64 if scale is None else scale * m64
    return a if scale is None else a * scale[:, None]


def _syrk(a):
    """``a^T a`` exploiting symmetry: three products on 2 x 2 column blocks (3/4 of the flops).

    XLA has no SYRK; on CPU this measured ~1.3x faster than one full product for m = 384.
    """
    m = a.shape[-1]
    if m < 128:
        return jnp.einsum("nm,nk->mk", a, a, precision=HIGHEST)
    h = m // 2
    a1, a2 = a[:, :h], a[:, h:]
    g12 = jnp.matmul(a1.T, a2, precision=HIGHEST)
    return jnp.block([[jnp.matmul(a1.T, a1, precision=HIGHEST), g12],
                      [g12.T, jnp.matmul(a2.T, a2, precision=HIGHEST)]])


PRECISIONS = ("float64", "mixed")


def _chunk_gram64(rows, normalize: bool, mask=None, precision: str = "float64"):
    """float64 ``sum_j w_j v_j v_j^T`` of one chunk (w_j = mask).  Call inside x64().

    ``precision="mixed"`` forms the chunk's products in float32 (about 2x faster on
    CPU) and only sums chunks in float64: entries then carry relative errors ~1e-7,
    which is harmless for healthy spectra but not for collapsed ones, whose
    eigenvalues near ``delta`` it perturbs (see ``experiments/bench_sigma.py``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}, got {precision!r}.")
    if precision == "mixed":
        a = f64(rows)
        scale = row_scale(a, normalize)
        if mask is not None:
            scale = f64(mask) if scale is None else scale * f64(mask)
        a32 = jnp.asarray(rows).astype(jnp.float32)
        if scale is not None:
            a32 = a32 * scale.astype(jnp.float32)[:, None]
        return f64(_syrk(a32))
    return _syrk(normalized_rows64(rows, normalize, mask))


def chunked_sum(arrays, chunk_rows: int, fn: Callable):
    """``sum_b fn(*b)`` over row blocks of ``chunk_rows`` rows of ``arrays`` (a tuple of arrays with n rows each).

    The one chunking loop of the package (Gram, Mahalanobis moments; local or sharded): a
    ``fori_loop`` over the full blocks, then the tail.  Blocks are read in place
    (``dynamic_slice``, no copy of the rows).  The carry starts from the first block's value, not
    zeros, so inside ``shard_map`` it already varies over the mesh axes like the rows; ``0 + x = x``
    exactly, so the order of additions (hence every bit) is the same wherever it runs.

    Example:
        >>> float(chunked_sum((jnp.arange(10.0),), 4, jnp.sum))
        45.0
    """
    arrays = tuple(arrays)
    n = arrays[0].shape[0]
    if chunk_rows <= 0:
        raise ValueError(f"`chunk_rows` must be a positive integer, got {chunk_rows}.")
    if n <= chunk_rows:
        return fn(*arrays)
    n_full = n // chunk_rows

    def block(i):
        return fn(*(jax.lax.dynamic_slice_in_dim(x, i * chunk_rows, chunk_rows) for x in arrays))

    acc = fn(*(x[:chunk_rows] for x in arrays))
    if n_full > 1:
        acc = jax.lax.fori_loop(1, n_full, lambda i, c: c + block(i), acc)
    if n > n_full * chunk_rows:
        acc = acc + fn(*(x[n_full * chunk_rows:] for x in arrays))
    return acc


def gram_f64(rows, *, normalize: bool = True, chunk_rows: int = DEFAULT_CHUNK_ROWS, precision: str = "float64",
             mask=None):
    """Exact ``G = A^T A`` in float64 for an in-memory (n, m) array.

    Rows are cast to float64 ``chunk_rows`` at a time, so the float64 copy of ``A``
    never exists whole.  jit/vmap-compatible; returns a float64 array (computed under a
    local x64 context).  ``precision="mixed"`` forms each chunk's products in float32
    (faster, less accurate on collapsed spectra) and accumulates chunks in float64.
    ``mask``: optional (n,) 0/1 row weights.

    Example:
        >>> A = jnp.eye(3, dtype=jnp.float32)
        >>> gram_f64(A).dtype
        dtype('float64')
    """
    with x64():
        if mask is None:
            return chunked_sum((rows,), chunk_rows, lambda b: _chunk_gram64(b, normalize, precision=precision))
        return chunked_sum((rows, mask), chunk_rows, lambda b, w: _chunk_gram64(b, normalize, w, precision))


# --------------------------------------------------------------------------- Mahalanobis moments (the band)


def _q_chunk(rows, inv_l, n_sub, normalize: bool, mask=None):
    """:func:`sigma_jax.report.row_moments` of ``q_i = n_A ||L^{-1} v_i||^2`` over one chunk.  Call inside x64()."""
    a = normalized_rows64(rows, normalize, mask)
    w = jnp.matmul(a, inv_l.T, precision=HIGHEST)  # (c, m): rows L^{-1} v_i
    return row_moments(n_sub * jnp.sum(w * w, axis=1), n_sub)


def q_moments(rows, gram_a, *, delta: float = 1e-3, n_sub=None, n_total=None, normalize: bool = True,
              chunk_rows: int = DEFAULT_CHUNK_ROWS, mask=None, inv_l=None):
    """Sums of :func:`sigma_jax.report.row_moments` over the subset rows (``sum q_i, sum q_i^2, ...``).

    ``q_i = v_i^T C^{-1} v_i`` with ``C = (G_A + eps I)/n_A``: ``eps`` is the report's band ridge
    :func:`sigma_jax.report.band_ridge` ``= delta n_A / n_total`` when ``n_total`` is given (what
    :func:`sigma_jax.sigma_from_gram` expects), else ``delta`` itself.

    Args:
        rows: (n_A, m) subset rows (or one shard of them: the sums add across shards).
        gram_a: (m, m) ``G_A`` of the whole subset.
        n_sub: ``n_A`` (defaults to ``rows.shape[0]``; pass it when ``rows`` is a shard).
        n_total: the full sample size of the report these moments are for.
        mask: optional (n,) 0/1 row weights (masked rows contribute nothing).
        inv_l: optional precomputed ``L^{-1}`` at the ridge (see :func:`band_factor`).

    Example:
        >>> rows = jax.random.normal(jax.random.key(0), (100, 3))
        >>> s = q_moments(rows, gram_f64(rows), delta=0.0)
        >>> round(float(s[0]) / 100, 6)  # mean q = m without ridge
        3.0
    """
    n_sub = rows.shape[0] if n_sub is None else n_sub
    with x64():
        if inv_l is None:
            inv_l = band_factor(gram_a, delta, n_sub, n_total)
        if mask is None:
            return chunked_sum((rows,), chunk_rows, lambda b: _q_chunk(b, inv_l, n_sub, normalize))
        return chunked_sum((rows, mask), chunk_rows, lambda b, w: _q_chunk(b, inv_l, n_sub, normalize, w))


def band_factor(gram_a, delta, n_sub=None, n_total=None):
    """``L^{-1}`` with ``L L^T = G_A + eps I``, ``eps`` = :func:`sigma_jax.report.band_ridge` (``delta`` without ``n_total``).

    Computed once per report: the Mahalanobis pass and the assembler (``SigmaStats.inv_chol``) share it.

    Example:
        >>> band_factor(4.0 * jnp.eye(2), 0.0).tolist()
        [[0.5, 0.0], [0.0, 0.5]]
    """
    with x64():
        ridge = delta if n_total is None else band_ridge(delta, f64(n_sub), f64(n_total))
        return inv_chol(gram_a, ridge)


# --------------------------------------------------------------------------- producers of SIGMA statistics


def dense_stats(rows, *, n_total: int | None = None, delta: float = 1e-3, normalize: bool = True,
                chunk_rows: int = DEFAULT_CHUNK_ROWS, precision: str = "float64") -> SigmaStats:
    """SIGMA's sufficient statistics of in-memory subset rows: ``G_A`` and, when ``n_A < n_total``, the q-moments.

    jit / vmap compatible (``n_total``, ``delta``, ``normalize``, ``chunk_rows``, ``precision`` static).

    Example:
        >>> from sigma_jax.report import report_from_stats
        >>> rows = jax.random.normal(jax.random.key(0), (200, 4))
        >>> rep = report_from_stats(dense_stats(rows, n_total=400))
        >>> float(rep.ci_halfwidth) > 0
        True
    """
    n_sub, m = rows.shape
    n_total = n_sub if n_total is None else int(n_total)
    g = gram_f64(rows, normalize=normalize, chunk_rows=chunk_rows, precision=precision)
    q = inv_l = None
    if n_sub < n_total:
        inv_l = band_factor(g, delta, n_sub, n_total)
        q = q_moments(rows, g, n_sub=n_sub, normalize=normalize, chunk_rows=chunk_rows, inv_l=inv_l)
    return SigmaStats(g, None, q, n_sub, n_sub, n_total, m, None, inv_l)


@functools.partial(jax.jit, static_argnames=("normalize",))
def _q_block_jit(rows, inv_l, n_sub, mask, normalize):
    with x64():
        return _q_chunk(rows, inv_l, n_sub, normalize, mask)


def _subset_blocks(array, idx, chunk_rows: int):
    """Yield the subset rows of a host array block by block (sorted positions)."""
    if idx is None:
        yield from iter_chunks(array, chunk_rows)
        return
    pos = np.sort(np.asarray(idx))
    for start in range(0, pos.size, chunk_rows):
        yield array[pos[start:start + chunk_rows]]


def host_stats(array, idx=None, *, n_total: int | None = None, delta: float = 1e-3, normalize: bool = True,
               chunk_rows: int = 1 << 15, progress: bool = False) -> SigmaStats:
    """SIGMA's statistics of a host array or memmap too large to move at once: two streamed passes.

    Pass 1 accumulates ``G_A`` (:func:`accumulate`); pass 2, only when ``n_A < n_total``, the
    q-moments with ``L^{-1}`` fixed.  Not jittable (it reads the host array); :func:`dense_stats`
    is the jittable path.

    Example:
        >>> from sigma_jax.report import report_from_stats
        >>> a = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
        >>> s = host_stats(a, n_total=600, chunk_rows=128)
        >>> int(s.n_sub), s.q_moments.shape
        (300, (6,))
    """
    state = accumulate(_subset_blocks(array, idx, chunk_rows), dim=array.shape[1], normalize=normalize,
                       chunk_rows=chunk_rows, validate=False, progress=progress)
    g = finalize(state)
    n_sub = int(state.count)
    n_total = n_sub if n_total is None else int(n_total)
    q = inv_l = None
    if n_sub < n_total:
        with x64():
            inv_l = band_factor(g, delta, n_sub, n_total)
            q = jnp.zeros((NUM_MOMENTS,), jnp.float64)
            for block in _subset_blocks(array, idx, chunk_rows):
                rows, mask = _io.pad_rows(np.asarray(block), chunk_rows)
                q = q + _q_block_jit(jnp.asarray(rows), inv_l, n_sub, jnp.asarray(mask), normalize)
    return SigmaStats(g, None, q, n_sub, n_sub, n_total, array.shape[1], None, inv_l)


def host_device():
    """Context placing JAX work on the host CPU (float64 finishing steps of the host and split producers).

    Example:
        >>> with host_device():
        ...     jnp.zeros(2).devices() == {jax.devices("cpu")[0]}
        True
    """
    return jax.default_device(jax.devices("cpu")[0])


def blas_stats(array, idx=None, *, n_total: int | None = None, delta: float = 1e-3, normalize: bool = True,
               chunk_rows: int = _blas.DEFAULT_CHUNK_ROWS, check_rho: float | None = None) -> SigmaStats:
    """SIGMA's statistics of a host array by the CPU's float64 BLAS: chunked ``dsyrk`` for ``G_A``, ``dtrmm`` for q.

    The CPU default of :func:`sigma_jax.sigma` for concrete inputs (NumPy arrays, memmaps, JAX
    arrays on the CPU): two cache-blocked sweeps over the float32 rows, each chunk cast and
    normalised in a reused float64 buffer (:mod:`sigma_jax._blas`).  Not jittable: under
    ``jit``/``vmap`` ``sigma`` uses :func:`dense_stats`, which agrees to ~1e-12 relative.

    Args:
        array: (n, m) NumPy array or memmap (float32 or float64).
        idx: sorted, repeat-free 1-D positions of the ``n_A`` observed rows, or None for all rows.
        n_total, delta, normalize: as in :func:`sigma_jax.sigma`.
        chunk_rows: rows per BLAS call (cache-sized).
        check_rho: check the rows in the same sweep (see :func:`sigma_jax._blas.host_gram`).

    Example:
        >>> a = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
        >>> s = blas_stats(a, np.arange(0, 300, 2), n_total=300)
        >>> int(s.n_sub), s.gram.shape, s.q_moments.shape
        (150, (4, 4), (6,))
    """
    n_sub = array.shape[0] if idx is None else int(np.size(idx))
    n_total = n_sub if n_total is None else int(n_total)
    g = _blas.host_gram(array, idx, normalize=normalize, chunk_rows=chunk_rows, check_rho=check_rho)
    q = None
    if n_sub < n_total:
        lev = _blas.host_leverages(array, idx, g, delta=band_ridge(delta, n_sub, n_total), normalize=normalize,
                                   chunk_rows=chunk_rows)
        with x64(), host_device():
            q = np.asarray(row_moments(jnp.asarray(lev), n_sub))
    return SigmaStats(g, None, q, n_sub, n_sub, n_total, array.shape[1])


@functools.partial(jax.jit, static_argnames=("normalize", "chunk_rows", "pieces", "terms"))
def _split_gram_jit(pair, normalize, chunk_rows, pieces, terms):
    return _split.split_gram(pair, normalize=normalize, chunk_rows=chunk_rows, pieces=pieces, terms=terms)


@functools.partial(jax.jit, static_argnames=("n_sub", "normalize"))
def _leverages_f32_jit(rows, inv_l, n_sub, normalize):
    return _split.leverages_f32(rows, inv_l, n_sub=n_sub, normalize=normalize)


def split_stats(rows, *, n_total: int | None = None, delta: float = 1e-3, normalize: bool = True,
                chunk_rows: int = _split.MAX_CHUNK_ROWS, pieces: str = "float32", terms: int = 3) -> SigmaStats:
    """SIGMA's statistics with a float64-free device part (``precision="split"``), finished in float64 on the host.

    ``G_A`` by :func:`sigma_jax._split.split_gram` (exact float32 products of 8-bit pieces, error-free
    accumulation; ~1e-15 relative per entry), moved to the host as float64; when ``n_A < n_total``
    the band factor ``L^-1`` is computed there in float64 and the leverages on the device in
    float32 (:func:`sigma_jax._split.leverages_f32`: they only feed the band and bias terms).
    Cost: 13 float32 GEMM equivalents of ``A^T A`` (:data:`sigma_jax._split.GEMMS_PER_CHUNK`) plus one
    float32 ``A L^-T``.  Not jittable (the host finish).

    Args:
        rows: (n_A, m) observed rows: float32 / bfloat16 device or host array, or float64 (NumPy
            float64 is split into a float32 pair on the host).
        n_total, delta, normalize: as in :func:`sigma_jax.sigma`.
        chunk_rows, pieces, terms: of :func:`sigma_jax._split.split_gram` (``terms=3``: the triple,
            no rounding of the result).

    Example:
        >>> a = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
        >>> s = split_stats(a, n_total=600)
        >>> v = np.float64(a) / np.linalg.norm(np.float64(a), axis=1, keepdims=True)
        >>> bool(np.abs(s.gram - v.T @ v).max() < 1e-13), s.q_moments.shape
        (True, (6,))
    """
    pair = _split.to_pair(rows, normalize=normalize)
    n_sub, m = pair[0].shape
    n_total = n_sub if n_total is None else int(n_total)
    g = _split.pair_to_f64(jax.device_get(_split_gram_jit(pair, normalize, int(chunk_rows), pieces, int(terms))))
    if not np.all(np.isfinite(g)):
        raise ValueError("`embeddings` has non-finite values (NaN or Inf) in the rows used; clean or drop those rows.")
    q = None
    if n_sub < n_total:
        with x64(), host_device():
            inv_l = np.asarray(band_factor(jnp.asarray(g), delta, n_sub, n_total), np.float32)
        lev = np.asarray(_leverages_f32_jit(pair[0], inv_l, float(n_sub), normalize), np.float64)
        with x64(), host_device():
            q = np.asarray(row_moments(jnp.asarray(lev), n_sub))
    return SigmaStats(g, None, q, n_sub, n_sub, n_total, m)


# --------------------------------------------------------------------------- streaming state


class GramState(NamedTuple):
    """Streaming accumulator of ``G = sum_j v_j v_j^T``.

    Attributes:
        hi, lo: (m, m) float32 pair; ``G = float64(hi) + float64(lo)``.
        count: number of rows accumulated (int32 scalar; < 2^31 rows).
    """

    hi: jax.Array
    lo: jax.Array
    count: jax.Array

    @property
    def dim(self) -> int:
        return self.hi.shape[-1]


def init(dim: int) -> GramState:
    """Empty accumulator for embeddings of dimension ``dim``.

    Example:
        >>> init(3).hi.shape
        (3, 3)
    """
    if int(dim) <= 0:
        raise ValueError(f"`dim` must be a positive integer, got {dim}.")
    z = jnp.zeros((dim, dim), jnp.float32)
    return GramState(z, z, jnp.zeros((), jnp.int32))


def update(state: GramState, rows, *, normalize: bool = True, mask=None) -> GramState:
    """Add the rows of a (c, m) chunk to the accumulator.  Pure and jit-able.

    Args:
        state: current :class:`GramState`.
        rows: (c, m) float array (any float dtype); products are formed in float64.
        normalize: L2-normalise each row first (zero rows then contribute 0).
        mask: optional (c,) 0/1 weights, e.g. to pad the last chunk to a fixed
            size without recompiling.

    Example:
        >>> st = update(init(2), jnp.array([[3.0, 4.0]]))
        >>> np.round(np.asarray(finalize(st)), 6).tolist()
        [[0.36, 0.48], [0.48, 0.64]]
    """
    if rows.ndim != 2 or rows.shape[1] != state.dim:
        raise ValueError(f"`rows` must have shape (c, {state.dim}), got {tuple(rows.shape)}.")
    with x64():
        g = join(state.hi, state.lo) + _chunk_gram64(rows, normalize, mask)
        hi, lo = split(g)
    c = rows.shape[0] if mask is None else jnp.sum(mask > 0)
    return GramState(hi, lo, state.count + jnp.asarray(c, jnp.int32))


def merge(a: GramState, b: GramState) -> GramState:
    """Combine two accumulators (e.g. from two shards or two files).

    Example:
        >>> a = update(init(2), jnp.eye(2))
        >>> int(merge(a, a).count)
        4
    """
    with x64():
        hi, lo = split(join(a.hi, a.lo) + join(b.hi, b.lo))
    return GramState(hi, lo, a.count + b.count)


def finalize(state: GramState):
    """The accumulated Gram matrix, (m, m) float64.

    Example:
        >>> finalize(update(init(2), jnp.eye(2))).dtype
        dtype('float64')
    """
    with x64():
        return join(state.hi, state.lo)


# --------------------------------------------------------------------------- host-side sources


load_embeddings = _io.load_embeddings  # the ground floor's reader (re-exported)


def iter_chunks(source, chunk_rows: int = 1 << 16) -> Iterator[np.ndarray]:
    """Yield (c, m) blocks from an array/memmap, a path, or an iterable of blocks.

    Example:
        >>> [b.shape for b in iter_chunks(np.zeros((5, 2)), chunk_rows=2)]
        [(2, 2), (2, 2), (1, 2)]
    """
    if isinstance(source, (str, os.PathLike)):
        source = _io.load_embeddings(source)
    if hasattr(source, "shape") and hasattr(source, "dtype"):
        for start in range(0, source.shape[0], chunk_rows):
            yield source[start:start + chunk_rows]
        return
    for block in source:
        yield block


@functools.partial(jax.jit, static_argnames=("normalize",))
def _update_masked(state, rows, mask, normalize):
    return update(state, rows, normalize=normalize, mask=mask)


def accumulate(source, *, dim: int | None = None, normalize: bool = True, chunk_rows: int = 1 << 16,
               validate: bool = True, rho: float = 1.0, progress: bool = False,
               state: GramState | None = None) -> GramState:
    """Accumulate the Gram matrix over embeddings that need not fit in memory.

    ``source`` is a ``.npy``/``.npz`` path, an array or ``np.memmap``, or an
    iterable of (c, m) blocks (a generator).  Blocks are padded to
    ``chunk_rows`` with masked rows so one compiled update serves all of them.
    With ``validate`` each block is checked (finite values, nonzero rows, norm
    bound) and errors name the global row index.

    Example:
        >>> state = accumulate(np.random.default_rng(0).normal(size=(1000, 8)))
        >>> finalize(state).shape
        (8, 8)
    """
    bar = _io.progress_bar(progress, source.shape[0] if hasattr(source, "shape") else None, "gram", "rows")
    offset = 0
    for block in iter_chunks(source, chunk_rows):
        block = _checks.check_float_array(np.asarray(block), "source block")
        if state is None:
            state = init(dim if dim is not None else block.shape[1])
        if block.shape[1] != state.dim:
            raise ValueError(f"block starting at row {offset} has {block.shape[1]} columns, expected {state.dim}.")
        if validate:
            _checks.check_embeddings(block, "embeddings", normalize=normalize, rho=rho, offset=offset)
        for start in range(0, block.shape[0], chunk_rows):
            part, mask = _io.pad_rows(block[start:start + chunk_rows], chunk_rows)
            state = _update_masked(state, jnp.asarray(part), jnp.asarray(mask), normalize)
        offset += block.shape[0]
        if bar is not None:
            bar.update(block.shape[0])
    if bar is not None:
        bar.close()
    if state is None:
        raise ValueError("`source` yielded no rows; pass at least one (c, m) block.")
    return state
