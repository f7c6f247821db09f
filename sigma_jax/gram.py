"""The Gram matrix of embeddings: streaming float64 accumulation and a matrix-free operator.

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
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sigma_jax import _checks
from sigma_jax._x64 import f64, join, split, x64

__all__ = [
    "GramState",
    "init",
    "update",
    "merge",
    "finalize",
    "gram_f64",
    "accumulate",
    "iter_chunks",
    "load_embeddings",
    "GramOperator",
    "gram_operator",
]

DEFAULT_CHUNK_ROWS = 8192


# --------------------------------------------------------------------------- dense float64 Gram


def _row_scale(rows64, normalize: bool):
    """1/||v|| per row (0 for zero rows, so padding rows contribute nothing)."""
    if not normalize:
        return None
    sq = jnp.einsum("nm,nm->n", rows64, rows64)
    zero, one = jnp.zeros((), sq.dtype), jnp.ones((), sq.dtype)  # typed: weak literals misbehave under vmap+x64
    pos = sq > zero
    return jnp.where(pos, jax.lax.rsqrt(jnp.where(pos, sq, one)), zero)


def _syrk(a):
    """``a^T a`` exploiting symmetry: three products on 2 x 2 column blocks (3/4 of the flops).

    XLA has no SYRK; on CPU this measured ~1.3x faster than one full product for m = 384.
    """
    m = a.shape[-1]
    if m < 128:
        return jnp.einsum("nm,nk->mk", a, a)
    h = m // 2
    a1, a2 = a[:, :h], a[:, h:]
    g12 = a1.T @ a2
    return jnp.block([[a1.T @ a1, g12], [g12.T, a2.T @ a2]])


PRECISIONS = ("float64", "mixed")


def _chunk_gram64(rows, normalize: bool, mask=None, precision: str = "float64"):
    """float64 ``sum_j w_j v_j v_j^T`` of one chunk (w_j = mask).  Call inside x64().

    ``precision="mixed"`` forms the chunk's products in float32 (about 2x faster on
    CPU, and the only fast path on TPUs) and only sums chunks in float64: entries
    then carry relative errors ~1e-7, which is harmless for healthy spectra but
    not for collapsed ones, whose eigenvalues near ``delta`` it perturbs (see
    ``experiments/bench_sigma.py`` for measured errors).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}, got {precision!r}.")
    a = f64(rows)
    scale = _row_scale(a, normalize)
    if mask is not None:
        m64 = f64(mask)
        scale = m64 if scale is None else scale * m64
    if precision == "mixed":
        a32 = jnp.asarray(rows).astype(jnp.float32)
        if scale is not None:
            a32 = a32 * scale.astype(jnp.float32)[:, None]
        return f64(_syrk(a32))
    if scale is not None:
        a = a * scale[:, None]
    return _syrk(a)


def gram_f64(rows, *, normalize: bool = True, chunk_rows: int = DEFAULT_CHUNK_ROWS, precision: str = "float64"):
    """Exact ``G = A^T A`` in float64 for an in-memory (n, m) array.

    Rows are cast to float64 ``chunk_rows`` at a time (a ``lax.scan``), so the
    float64 copy of ``A`` never exists whole.  jit/vmap-compatible; returns a
    float64 array (computed under a local x64 context).  ``precision="mixed"``
    forms each chunk's products in float32 (faster, less accurate on collapsed
    spectra) and accumulates chunks in float64.

    Example:
        >>> A = jnp.eye(3, dtype=jnp.float32)
        >>> gram_f64(A).dtype
        dtype('float64')
    """
    n, m = rows.shape
    with x64():
        n_full = (n // chunk_rows) if n > chunk_rows else 0
        g = None
        if n_full:
            blocks = rows[: n_full * chunk_rows].reshape(n_full, chunk_rows, m)

            def body(acc, block):
                return acc + _chunk_gram64(block, normalize, precision=precision), None

            # the carry starts from the first block (not zeros) so that inside shard_map it
            # already varies over the mesh axes, as the scan body's output does
            g, _ = jax.lax.scan(body, _chunk_gram64(blocks[0], normalize, precision=precision), blocks[1:])
        rest = rows[n_full * chunk_rows:]
        if rest.shape[0]:
            tail = _chunk_gram64(rest, normalize, precision=precision)
            g = tail if g is None else g + tail
        return g


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


def load_embeddings(path: str | os.PathLike, *, mmap: bool = True, key: str | None = None) -> np.ndarray:
    """Open a ``.npy`` (memory-mapped) or ``.npz`` file of embeddings, refusing pickles.

    Args:
        path: file path.
        mmap: memory-map ``.npy`` files (rows are then read chunk by chunk).
        key: array name inside an ``.npz`` (default: ``embeddings`` if present, else the only array).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "e.npy"); np.save(path, np.ones((4, 2), np.float32))
        >>> load_embeddings(path).shape
        (4, 2)
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"embeddings file {path!r} does not exist.")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        raise ValueError(f"cannot read embeddings from {path!r}: it is neither a .npy nor a .npz file "
                         "(save arrays with `np.save` / `np.savez`).")
    try:
        if path.endswith(".npz") or magic.startswith(b"PK"):
            with np.load(path, allow_pickle=False) as z:
                names = list(z.files)
                if key is None:
                    if "embeddings" in names:
                        key = "embeddings"
                    elif len(names) == 1:
                        key = names[0]
                    else:
                        raise ValueError(f"{path!r} holds several arrays {names}; choose one with `key=`.")
                if key not in names:
                    raise ValueError(f"{path!r} has no array {key!r}; it holds {names}.")
                arr = z[key]
        else:
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as err:
        if any(w in str(err).lower() for w in ("pickle", "python objects")):
            raise ValueError(
                f"{path!r} holds a pickled (object) array, which sigma_jax refuses to load for safety. "
                "Save plain float arrays with `np.save(path, emb.astype(np.float32))`."
            ) from err
        raise
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read embeddings from {path!r}: {err}. Expected a .npy or .npz file.") from err
    return _checks.check_float_array(arr, f"array in {os.path.basename(path)}")


def iter_chunks(source, chunk_rows: int = 1 << 16) -> Iterator[np.ndarray]:
    """Yield (c, m) blocks from an array/memmap, a path, or an iterable of blocks.

    Example:
        >>> [b.shape for b in iter_chunks(np.zeros((5, 2)), chunk_rows=2)]
        [(2, 2), (2, 2), (1, 2)]
    """
    if isinstance(source, (str, os.PathLike)):
        source = load_embeddings(source)
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
    bar = _progress(progress, source, chunk_rows)
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
            part = block[start:start + chunk_rows]
            c = part.shape[0]
            mask = np.zeros((chunk_rows,), np.float32)
            mask[:c] = 1.0
            if c < chunk_rows:
                part = np.concatenate([part, np.zeros((chunk_rows - c, part.shape[1]), part.dtype)])
            state = _update_masked(state, jnp.asarray(part), jnp.asarray(mask), normalize)
        offset += block.shape[0]
        if bar is not None:
            bar.update(block.shape[0])
    if bar is not None:
        bar.close()
    if state is None:
        raise ValueError("`source` yielded no rows; pass at least one (c, m) block.")
    return state


def _progress(enabled: bool, source: Any, chunk_rows: int):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress is optional
        return None
    total = source.shape[0] if hasattr(source, "shape") else None
    return tqdm(total=total, unit="rows", desc="gram")


# --------------------------------------------------------------------------- matrix-free operator


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["embeddings", "row_scale", "ridge"], meta_fields=["side"])
@dataclasses.dataclass(frozen=True)
class GramOperator:
    """Matrix-free ``G + ridge*I`` built from embeddings: data plus a pure matvec.

    A pytree (pass it as an argument to jitted functions; it stays traced,
    shardable and differentiable).  Build it with :func:`gram_operator`.

    Attributes:
        embeddings: (n, m) raw rows ``a_j`` (any float dtype; kept as given).
        row_scale: (n,) ``1/||a_j||`` when normalising, else None.
        ridge: scalar ``delta`` added to the diagonal.
        side: ``"feature"`` for ``A^T A + delta I`` (m x m) or ``"sample"`` for
            ``A A^T + delta I`` (n x n).
    """

    embeddings: jax.Array
    row_scale: jax.Array | None
    ridge: jax.Array
    side: str = "feature"

    @property
    def dim(self) -> int:
        """Size of the operator (m for the feature side, n for the sample side)."""
        n, m = self.embeddings.shape
        return m if self.side == "feature" else n

    @property
    def shape(self) -> tuple[int, int]:
        return (self.dim, self.dim)

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
        if self.side == "feature":
            w = self._scaled(self._scaled(v @ a.T))   # (k, n)
            out = w @ a                               # (k, m)
        else:
            w = self._scaled(v) @ a                   # (k, m)
            out = self._scaled(w @ a.T)               # (k, n)
        return out + self.ridge.astype(v.dtype) * v

    def matvec(self, v):
        """``(G + delta I) v`` for v: (d,)."""
        return self.matmat_rows(v[None, :])[0]

    def matmat(self, v):
        """``(G + delta I) V`` for V: (d, k) (columns); G is symmetric."""
        return self.matmat_rows(v.T).T

    __matmul__ = matvec

    def diagonal(self):
        """diag(G + delta I), (d,)."""
        a = self.embeddings
        if self.side == "feature":
            s = 1.0 if self.row_scale is None else self.row_scale[:, None] ** 2
            return jnp.sum(s * a * a, axis=0) + self.ridge
        d = jnp.sum(a * a, axis=1)
        if self.row_scale is not None:
            d = d * self.row_scale ** 2
        return d + self.ridge

    def trace(self):
        """tr(G + delta I) = sum_j ||v_j||^2 + d * delta."""
        return jnp.sum(self.diagonal())

    def dense(self, dtype=jnp.float64):
        """Materialise the operator (on purpose only).  float64 by default (local x64 context)."""
        with x64():
            a = self.embeddings.astype(dtype)
            if self.row_scale is not None:
                a = a * self.row_scale.astype(dtype)[:, None]
            g = a.T @ a if self.side == "feature" else a @ a.T
            return g + jnp.asarray(self.ridge, dtype) * jnp.eye(self.dim, dtype=dtype)


def gram_operator(embeddings, *, ridge: float = 0.0, side: str = "feature", normalize: bool = True) -> GramOperator:
    """Build a :class:`GramOperator` for ``A^T A + ridge I`` (feature) or ``A A^T + ridge I`` (sample).

    Example:
        >>> op = gram_operator(jnp.ones((4, 3)), ridge=1e-3)
        >>> op.matvec(jnp.ones(3)).shape
        (3,)
    """
    if side not in ("feature", "sample"):
        raise ValueError(f"`side` must be 'feature' (A^T A, m x m) or 'sample' (A A^T, n x n), got {side!r}.")
    embeddings = _checks.check_float_array(embeddings, "embeddings")
    if _checks.is_concrete(embeddings) and not isinstance(embeddings, jax.Array):
        embeddings = jnp.asarray(embeddings)
    scale = None
    if normalize:
        sq = jnp.sum(jnp.square(embeddings.astype(jnp.float32)), axis=1)
        scale = jnp.where(sq > 0, jax.lax.rsqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
    return GramOperator(embeddings, scale, jnp.asarray(ridge, jnp.float32), side)
