r"""SIGMA's two float64 row passes on the CPU at the BLAS floor: SciPy's ``dsyrk`` / ``dtrmm`` without copies.

The exact report needs two sweeps over the observed rows ``v_j`` (L2-normalised):

1. ``G_A = sum_j vhat_j vhat_j^T`` -- a symmetric rank-k update (SYRK: half the flops of a GEMM;
   XLA has none);
2. when ``n_A < n_total``, the leverages ``q_i = n_A vhat_i^T (G_A + delta I)^-1 vhat_i =
   n_A ||L^-1 vhat_i||^2`` with ``L L^T = G_A + delta I`` -- a triangular product per chunk
   (TRMM: the flops of a SYRK).

Both sweeps run over chunks of ``chunk_rows`` rows small enough to stay in cache: each chunk is
gathered (subset ``idx``, sorted, one chunk at a time: the subset is never copied whole), cast to
float64 into a reused cache-sized buffer and normalised there (squared norms in float64, one
in-place scaling; 0.33 ms per 1024 x 384 chunk, ~1/8 of its SYRK), then handed to BLAS *without a copy*: a C-ordered
(c, m) buffer's transpose is an F-ordered (m, c) matrix, so ``A^T A`` is
``dsyrk(1, buf.T, trans=0)`` accumulated into an F-ordered ``G`` with ``beta = 1`` and
``overwrite_c``, and ``L^-1 V^T`` is ``dtrmm(1, L^-1, buf.T, lower=1, overwrite_b=1)`` in place
(``L^-1`` from one ``dtrtri``: formed once per call, not per chunk).  The float32 input is read
once per sweep and the float64 copy of the rows never exists whole.

Accuracy: float64 BLAS (entries of ``G`` to ~``sqrt(n) 2^-53`` relative to ``|A|^T |A|``; ``q`` to
~``cond(L) 2^-53``).  Cost: ``n_A m^2`` flops (SYRK) + ``n_A m^2`` (TRMM), i.e. for ``n_A = n/2``
the flops of one float64 ``A^T A`` of all ``n`` rows, plus one read of the float32 rows per sweep.

These are host functions (NumPy in, NumPy out; memmaps welcome): **not jittable**.  Under ``jit``
use the XLA path (:func:`sigma_jax.gram.gram_f64`, :func:`sigma_jax.gram.q_moments`).  They use
the BLAS threads SciPy's OpenBLAS is configured with (``OPENBLAS_NUM_THREADS``).  On a small shared
VM, multithreaded OpenBLAS collapses when another process holds a core (measured on 2 vCPUs,
n = 10^5, m = 384: NumPy's float64 ``A.T @ A`` 2.0 s with 2 threads, 0.32 s with 1; SciPy's
``dsyrk`` 0.76 s vs 0.32 s); ``OPENBLAS_NUM_THREADS=1`` is then the faster setting.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import blas, lapack

__all__ = ["host_gram", "host_leverages", "BadRows", "DEFAULT_CHUNK_ROWS"]


class BadRows(ValueError):
    """A chunk failed :func:`host_gram`'s in-sweep row check (non-finite, zero or over-long rows).

    Callers that want the precise message (which rows, which fix) re-run the full value check
    (``sigma_jax.report.validate_rows``) on the failing input.
    """

#: Rows per chunk: 1024 x 384 float64 = 3 MiB (512-4096 measured alike within noise on a 2-core EPYC, m = 384).
DEFAULT_CHUNK_ROWS = 1024


def _check(array, idx, chunk_rows):
    if not (hasattr(array, "shape") and hasattr(array, "dtype")) or len(array.shape) != 2:
        raise ValueError("`array` must be a 2-D (n, m) NumPy array or memmap of embeddings.")
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"`array` must hold floats (float32 or float64), got dtype {array.dtype}.")
    if int(chunk_rows) <= 0:
        raise ValueError(f"`chunk_rows` must be a positive integer, got {chunk_rows}.")
    if idx is None:
        return None
    idx = np.asarray(idx)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError("`idx` must be a 1-D integer array of row positions.")
    if idx.size and (idx[0] < 0 or idx[-1] >= array.shape[0]):
        raise ValueError(f"`idx` must lie in [0, {array.shape[0]}), got [{idx.min()}, {idx.max()}].")
    if idx.size > 1 and not np.all(idx[1:] > idx[:-1]):
        raise ValueError("`idx` must be sorted and without repeats (use `np.unique(idx)`).")
    return idx


def _chunks(array, idx, chunk_rows: int, normalize: bool, check_rho: float | None = None):
    """Yield (c, m) C-ordered float64 blocks of the (subset) rows, normalised; one reused buffer.

    With ``check_rho`` each chunk's squared norms (computed anyway to normalise) are checked in the
    same sweep: finite, nonzero when normalising, ``<= check_rho (1 + 1e-5)`` when not; a failing
    chunk raises :class:`BadRows`.
    """
    n_rows = array.shape[0] if idx is None else idx.size
    m = array.shape[1]
    buf = np.empty((min(chunk_rows, max(n_rows, 1)), m), np.float64)
    for start in range(0, n_rows, chunk_rows):
        stop = min(n_rows, start + chunk_rows)
        out = buf[:stop - start]
        src = array[start:stop] if idx is None else np.take(array, idx[start:stop], axis=0)
        out[...] = src  # the cast, into a cache-resident buffer
        if normalize or check_rho is not None:
            sq = np.einsum("ij,ij->i", out, out)
        if check_rho is not None:
            ok = np.isfinite(sq) & ((sq > 0) if normalize else (sq <= check_rho * (1.0 + 1e-5)))
            if not ok.all():
                raise BadRows(f"rows {start}..{stop - 1} of the observed rows hold a non-finite, zero or over-long row")
        if normalize:
            pos = sq > 0
            scale = np.divide(1.0, np.sqrt(sq, where=pos, out=np.ones_like(sq)), where=pos, out=np.zeros_like(sq))
            out *= scale[:, None]
        yield out


def host_gram(array, idx=None, *, normalize: bool = True, chunk_rows: int = DEFAULT_CHUNK_ROWS,
              check_rho: float | None = None) -> np.ndarray:
    """float64 ``G = sum_j vhat_j vhat_j^T`` (m, m) of the rows (or the sorted subset ``idx``) by chunked ``dsyrk``.

    Args:
        array: (n, m) NumPy array or memmap (float32 or float64).
        idx: optional sorted 1-D positions of the observed rows (gathered chunk by chunk).
        normalize: L2-normalise rows (zero rows contribute 0).
        chunk_rows: rows per chunk (cache-sized; see :data:`DEFAULT_CHUNK_ROWS`).
        check_rho: when given, check every row in the same sweep (finite; nonzero if ``normalize``;
            squared norm ``<= check_rho`` if not) and raise :class:`BadRows` on the first bad chunk.

    Returns:
        (m, m) float64, full symmetric.  Host-only, not jittable (module docstring).

    Example:
        >>> np.round(host_gram(np.array([[3.0, 4.0], [0.0, 2.0]], np.float32)), 12).tolist()
        [[0.36, 0.48], [0.48, 1.64]]
    """
    idx = _check(array, idx, chunk_rows)
    m = array.shape[1]
    g = np.zeros((m, m), np.float64, order="F")
    for block in _chunks(array, idx, int(chunk_rows), normalize, check_rho):
        # block.T is F-ordered (m, c): no copy; upper triangle of G += block^T block, in place
        g = blas.dsyrk(1.0, block.T, beta=1.0, c=g, trans=0, lower=0, overwrite_c=1)
    g = np.triu(g)
    g = g + np.triu(g, 1).T
    if not np.all(np.isfinite(g)):
        raise ValueError("`array` has non-finite values (NaN or Inf) in the rows used; clean or drop those rows.")
    return g


def host_leverages(array, idx, gram, *, delta: float, normalize: bool = True,
                   chunk_rows: int = DEFAULT_CHUNK_ROWS, kernel: str = "auto") -> np.ndarray:
    """Leverages ``q_i = n_A vhat_i^T (G_A + delta I)^-1 vhat_i`` (n_A,) float64 of the observed rows.

    ``q_i = n_A ||L^-1 vhat_i||^2`` with ``L`` the Cholesky factor of ``G_A + delta I`` and ``L^-1``
    from one ``dtrtri``; each chunk is one in-place ``dtrmm``.  Host-only, not jittable.  For the
    report's band pass ``delta = sigma_jax.report.band_ridge(delta, n_A, n_total)``.

    Args:
        array: (n, m) NumPy array or memmap.
        idx: sorted 1-D positions of the ``n_A`` observed rows, or None for all rows.
        gram: (m, m) ``G_A`` of those rows (e.g. :func:`host_gram`).
        delta: ridge ``delta > 0``.
        normalize, chunk_rows: as in :func:`host_gram`.
        kernel: ``"trmm"`` (``m^2`` flops per row, in place), ``"gemm"`` (``L^-1`` as a full matrix:
            twice the flops, yet ~5x faster than OpenBLAS's TRMM at m = 64) or ``"auto"`` (gemm
            below m = 128, trmm above: at m = 384 trmm measured 1.7x faster).

    Example:
        >>> a = np.random.default_rng(0).normal(size=(500, 3))
        >>> q = host_leverages(a, None, host_gram(a), delta=0.0)
        >>> round(float(q.mean()), 9)  # mean q = m without ridge
        3.0
    """
    idx = _check(array, idx, chunk_rows)
    gram = np.asarray(gram, np.float64)
    m = array.shape[1]
    if gram.shape != (m, m):
        raise ValueError(f"`gram` must be ({m}, {m}) like the rows' dimension, got {gram.shape}.")
    if not np.isfinite(delta) or delta < 0:
        raise ValueError(f"`delta` must be a finite float >= 0, got {delta}.")
    n_sub = array.shape[0] if idx is None else idx.size
    chol, info = lapack.dpotrf(gram + delta * np.eye(m), lower=1, clean=1)
    if info != 0:
        raise ValueError("`gram` + delta I is not positive definite (singular G_A with delta = 0, or NaN); "
                         "pass a positive `delta`.")
    inv_l, info = lapack.dtrtri(chol, lower=1)
    if info != 0:
        raise ValueError("the Cholesky factor of `gram` + delta I is singular; pass a positive `delta`.")
    if kernel not in ("trmm", "gemm", "auto"):
        raise ValueError(f"`kernel` must be 'trmm', 'gemm' or 'auto', got {kernel!r}.")
    if kernel == "auto":
        kernel = "gemm" if m < 128 else "trmm"
    inv_l = np.asfortranarray(np.tril(inv_l))
    q = np.empty(n_sub, np.float64)
    out = np.empty((m, min(int(chunk_rows), max(n_sub, 1))), np.float64, order="F")
    start = 0
    for block in _chunks(array, idx, int(chunk_rows), normalize):
        if kernel == "trmm":  # L^-1 V^T, in place in the chunk buffer
            w = blas.dtrmm(1.0, inv_l, block.T, side=0, lower=1, trans_a=0, diag=0, overwrite_b=1)
        else:
            w = blas.dgemm(1.0, inv_l, block.T, beta=0.0, c=out[:, :block.shape[0]], overwrite_c=1)
        stop = start + block.shape[0]
        q[start:stop] = np.einsum("ij,ij->j", w, w)
        start = stop
    q *= n_sub
    return q
