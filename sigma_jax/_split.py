r"""``precision="split"``: a float64-accurate Gram matrix from float32 arithmetic only (for TPUs and fast-float32 GPUs).

``G = sum_j w_j vhat_j vhat_j^T`` (``vhat_j = v_j / ||v_j||``, ``w_j`` a 0/1 mask) is formed with
no float64 operation on the device: every matmul multiplies float32 arrays whose entries are
small integers times a power of two, so each product and its sum over a chunk is *exact*
(an Ozaki-style error-free splitting: Ozaki, Ogita, Oishi & Rump, Numer. Algorithms 59, 2012),
and the exact partial Grams are added with error-free transformations (Knuth's TwoSum).  The result
is a float32 pair ``(hi, lo)`` (or triple, ``terms=3``); ``float64(hi) + float64(lo)`` is the Gram
matrix, finished on the host in float64 (:func:`pair_to_f64`).

Pipeline of one chunk of ``c <= 256`` rows (elementwise work O(c m), matmuls O(c m^2)):

1. **Row scale.**  Each row is multiplied by a power of two (its largest entry lands in [1/2, 1),
   so squares of 1e30 cannot overflow), exactly.
2. **Norm in double-float.**  Each square ``u_jk^2`` as a float32 pair by Dekker's product with the
   operands cut into 12-bit halves by *masking the significand* (exact like Veltkamp's split, but
   immune to overflow and to FMA contraction, which compilers may apply to ``a*b - c`` and which
   breaks Veltkamp's and Dekker's formulas).  The squares are cut into pieces on a fixed grid of
   ``24 - log2(m + 1)`` bits, so each piece's row sum is an exact float32 sum of integers (one
   matrix-vector product), and the few sums are added in double-float.
3. **1/sqrt in double-float.**  Float32 ``rsqrt`` refined twice with the residual ``1 - s y^2``
   evaluated in double-float: ``rho_j`` to ~2^-47 relative (a float32 ``1/||v||`` is off by 2^-24,
   which would spoil everything downstream).
4. **Column-scaled normalised rows** ``y_jk = vhat_jk 2^-E_k`` as double-floats, ``E_k`` the
   exponent of the chunk's column maximum.  The powers of two of the row scale, of ``rho_j`` and of
   ``2^-E_k`` are combined as integers before one exact scaling per entry, so a column of tiny
   entries (1e-60 after normalising a row holding 1e30) is held at full relative precision.
5. **Pieces.**  ``y`` is cut into ``NUM_PIECES = 6`` pieces ``P_a``, each ``y``'s residual rounded
   to the grid ``2^-8(a+1)`` (``round(y 2^8(a+1)) 2^-8(a+1)``: the classic ``(y + sigma) - sigma``
   is folded to ``y`` by XLA's algebraic simplifier).  ``P_a 2^8(a+1)`` is an integer of magnitude
   <= 2^8 (``PIECE_BITS = 8`` significant bits: exact in bfloat16 and TF32 too); the residual
   after six pieces is <= 2^-49 of the column maximum.
6. **Exact products.**  ``T_ab = P_a^T P_b`` (m x m) for the 13 pairs :data:`PAIRS` (``a <= b``,
   ``a + b <= 5``, and ``(3, 3)``): each entry is a sum of ``c`` products of integers <= 2^8, an
   integer < ``c 2^16 <= 2^24`` on a common grid, hence *exact* in float32 whatever the summation
   order or hardware (``precision=HIGHEST``; with bfloat16 pieces, one native MXU pass).  The
   dropped pairs are below 2^-48 and zero-mean; the positive semidefinite ``P_3^T P_3`` is kept
   because dropping it biases every direction by ~n 2^-50, which a collapsed set's smallest
   eigenvalues (~n 1e-9) would feel at 1e-7 relative.
7. **Error-free accumulation.**  Only ``X = sum_a T_aa / 2 + sum_{a<b} T_ab`` is accumulated
   (``G = X + X^T`` once at the end: no transposes per chunk).  Per chunk the terms are added
   smallest first into a local float32 triple with two TwoSums per term (terms with ``a + b >= 4``,
   <= 2^-32 relative, pre-summed in plain float32); the triple is scaled by ``2^(E_k + E_l)``
   exactly and added into the running triple ``(s0, s1, s2)``, renormalised once per chunk.  Every
   addition into ``s0`` and ``s1`` is error-free; ``s2`` (|s2| <= 2^-47 |s0|) rounds by <= 2^-71
   relative per chunk: 10^-15 relative after 10^7 chunks (2.5 10^9 rows).  The returned pair
   rounds once, by <= 2^-49 relative per entry (a triple, ``terms=3``, not at all).

Accuracy.  "Relative" below means ``|G_split - G|_kl / (|A|^T |A|)_kl`` with ``|A|`` the entrywise
absolute value of the normalised, masked rows (the scale of the terms summed into entry kl).
Bound: ``<~ 2^-46 + 2^-48 R_kl`` plus an absolute floor of ~2^-120, where ``R_kl`` is the ratio
of a column's chunk maximum to its typical entry (3-4 for Gaussian-like columns); the floor is
float32's range (products below 2^-126 flush; entries of G below ~2^-78 keep their absolute, not
relative, accuracy -- irrelevant next to a ridge of 1e-3).  Measured (``tests/test_split.py``):
~3e-15 on healthy and collapsed random-basis sets, <= 6e-14 with per-column magnitudes spread
over 1e-30..1e30, log-det of ``G + 1e-3 I`` on a collapsed set (n = 8192) to ~2e-12 relative
(pair) and 1e-13 (triple); U_cov at 10^6 collapsed rows within 7e-12 (triple) / 8e-12 (pair) of
float64 NumPy, itself ~1e-11 from other float64 paths (``experiments/bench_sigma.py``).

Cost, in float32 GEMM equivalents: 13 float32 products ``(c x m)^T (c x m)`` per chunk, i.e. 13x
the flops of one float32 ``A^T A`` (26x those of a float64 SYRK), plus O(c m) elementwise work
(~300 flops per entry of the rows, ~3% of the GEMM flops at m = 384) and ~100 flops per Gram
entry per chunk for the accumulation (~2%).  On a TPU (no float64) or a GPU whose float64 rate is
a small fraction of float32's, this is the price of float64 accuracy; on a CPU the float64 BLAS
path is far cheaper (measured in ``experiments/bench_sigma.py``).

Float64 inputs: :func:`to_pair` splits them (on the host for NumPy arrays) into a float32 pair
``hi + lo`` (rows rescaled by a power of two first when ``normalize=True``), which keeps 48 of
their 53 bits; the device part then sees only float32.

Requirements on the compiler: IEEE float32 addition and no reassociation (XLA reassociates only
under fast-math flags, off by default; the one simplification that bit, ``(y + C) - C``, is
avoided, and ``tests/test_split.py`` checks exactness under ``jit``).  Multiplications are exact
(12-bit halves, 8-bit pieces, powers of two) or feed only non-error-free terms, so FMA contraction
cannot break an error-free step (it may change the last bits of the normalisation: jit, eager and
vmap agree to ~1e-15, not bitwise).  Float32 subnormals count as 0 (most hardware flushes them).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sigma_jax._linalg import HIGHEST

__all__ = ["split_chunk_gram", "split_gram", "to_pair", "pair_to_f64", "leverages_f32", "SplitPair", "SplitTriple", "MAX_CHUNK_ROWS",
           "PIECE_BITS", "NUM_PIECES", "PAIRS", "GEMMS_PER_CHUNK"]

PIECE_BITS = 8
NUM_PIECES = 6
#: Largest chunk whose piece-product sums are exact in float32: ``2 PIECE_BITS + log2(c) <= 24``.
MAX_CHUNK_ROWS = 2 ** (24 - 2 * PIECE_BITS)
#: Piece pairs (a <= b) whose products are kept: ``a + b <= NUM_PIECES - 1`` (the rest are < 2^-48), and the
#: diagonal pair one level deeper, (3, 3): ``P_a^T P_a`` is positive semidefinite, so dropping it would bias
#: every direction by ~n 2^-50 -- invisible entrywise, but 1e-7 relative on a collapsed set's smallest
#: eigenvalues (its off-diagonal peers are zero-mean and cancel).
PAIRS = tuple((a, b) for a in range(NUM_PIECES) for b in range(a, NUM_PIECES)
              if a + b <= NUM_PIECES - 1 or (a == b and a + b <= NUM_PIECES))
#: float32 GEMMs of the chunk's shape per chunk (the cost of ``split`` in float32 GEMM equivalents).
GEMMS_PER_CHUNK = len(PAIRS)
_PRESUM_LEVEL = 4  # terms with a + b >= 4 are <= 2^-32 of the leading one: summed in plain float32

_F32 = jnp.float32
_MASK12 = np.uint32(0xFFFFF000)  # sign, exponent, 11 stored significand bits: a 12-bit high half


class SplitPair(NamedTuple):
    """A float32 pair ``(hi, lo)`` standing for the float64 matrix ``hi + lo`` (~2^-49 relative per entry)."""

    hi: jax.Array
    lo: jax.Array


class SplitTriple(NamedTuple):
    """A float32 triple standing for ``hi + lo + lo2`` (~2^-72: float64's own rounding dominates once summed)."""

    hi: jax.Array
    lo: jax.Array
    lo2: jax.Array


# --------------------------------------------------------------------------- error-free float32 arithmetic


def _two_sum(a, b):
    """Knuth's TwoSum: ``s + e == a + b`` exactly, ``s = fl(a + b)`` (6 additions, no branch)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _fast_two_sum(a, b):
    """Dekker's FastTwoSum (needs ``|a| >= |b|`` or ``a == 0``): ``s + e == a + b`` exactly."""
    s = a + b
    return s, b - (s - a)


def _halves(a):
    """``a = hi + lo`` exactly, each with <= 12 significant bits (significand masking, no multiplication)."""
    hi = lax.bitcast_convert_type(lax.bitcast_convert_type(a, jnp.uint32) & _MASK12, _F32)
    return hi, a - hi


def _mul(a, b):
    """Double-float ``a * b`` of two float32 arrays, ~2^-48 relative; every product is exact (12 x 12 bits)."""
    ah, al = _halves(a)
    bh, bl = _halves(b)
    q, qe = _two_sum(ah * bl, al * bh)
    hi, e = _two_sum(ah * bh, q)
    return _fast_two_sum(hi, e + (qe + al * bl))


def _mul_dd(xh, xl, yh, yl):
    """Double-float product of two double-floats (``xl``/``yl`` may be None for 0)."""
    hi, lo = _mul(xh, yh)
    if yl is not None:
        lo = lo + xh * yl
    if xl is not None:
        lo = lo + xl * yh
    return _fast_two_sum(hi, lo)


def _add_dd(a, b):
    """Accurate double-float addition (Bailey's ``ieee_add``)."""
    s, e = _two_sum(a[0], b[0])
    t, f = _two_sum(a[1], b[1])
    s, e = _fast_two_sum(s, e + t)
    return _fast_two_sum(s, e + f)


def _pow2(e):
    """Exact ``2.0**e`` in float32 for int32 ``e`` in [-126, 127] (built from its bits)."""
    return lax.bitcast_convert_type(lax.shift_left(e.astype(jnp.int32) + 127, jnp.int32(23)), _F32)


def _ldexp(x, e):
    """``x * 2**e`` exactly (int32 ``e``, any range; results below float32's range flush towards 0)."""
    e = e.astype(jnp.int32)
    e1 = jnp.clip(e, -126, 127)
    rest = e - e1
    e2 = jnp.clip(rest, -126, 127)
    return jnp.where(rest < -126, jnp.zeros((), _F32), x * _pow2(e1) * _pow2(e2))


def _exponent(x):
    """int32 ``E`` with ``|x| < 2^E``: frexp's exponent for normal numbers (from the bits), -126 for 0/subnormals."""
    field = lax.shift_right_logical(lax.bitcast_convert_type(x, jnp.uint32), jnp.uint32(23)) & jnp.uint32(0xFF)
    return field.astype(jnp.int32) - 126


# --------------------------------------------------------------------------- normalised rows as double-floats


def _row_sum_dd(h, l):
    """Row sums of a double-float (c, m) array with entries in [0, 1), to ~2^-60 absolute, from exact float32 sums.

    Each entry is cut into pieces on the grids ``2^-b, 2^-2b, ...`` with ``b = 24 - ceil(log2(m + 1))``,
    so every row sum of a piece is a sum of integers below ``2^24`` (exact in float32 whatever the
    order of the reduction); the few exact sums are then added in double-float.  (A pairwise tree
    of double-float additions is as accurate but strided slices make it ~10x slower on XLA:CPU.)
    """
    m = h.shape[1]
    bits = 24 - int(np.ceil(np.log2(m + 1)))
    count = int(np.ceil((53 + np.log2(m)) / bits))
    ones = jnp.ones((m,), _F32)  # a matrix-vector product: XLA:CPU's row reductions are slower
    sums = [jnp.matmul(p, ones, precision=HIGHEST) for p in _grid_pieces(h, l, bits, count)]  # exact
    acc = (sums[-1], jnp.zeros_like(sums[-1]))
    for x in reversed(sums[:-1]):
        acc = _add_dd((x, jnp.zeros_like(x)), acc)
    return acc


def _rsqrt_dd(sh, sl):
    """Double-float ``1/sqrt(sh + sl)`` (~2^-48 relative): float32 rsqrt and two residual-corrected steps.

    With ``r = 1 - s y^2`` evaluated in double-float, ``s^-1/2 = y (1 + r/2 + 3 r^2/8 + O(r^3))``.
    The first step makes ``y`` a (nearly) correctly rounded float32; the second returns
    ``(y, y * corr)`` with ``|corr| <= 2^-24``, whose float32 rounding is then below 2^-48.
    """
    y = lax.rsqrt(sh)
    for step in range(2):
        qh, ql = _mul(y, y)
        ph, pl = _mul(sh, qh)
        pl = pl + (sh * ql + sl * qh)
        r = (1.0 - ph) - pl  # 1 - ph is exact (Sterbenz: ph is within a few ulp of 1)
        corr = r * (0.5 + 0.375 * r)
        if step == 0:
            y = y + y * corr
    return _fast_two_sum(y, y * corr)


def _scaled_rows(xh, xl, w, normalize: bool):
    """Column-scaled normalised rows: ``(yh, yl, E)`` with ``w_j vhat_jk = 2^E_k (yh + yl)_jk`` and ``|yh| < 1``.

    The powers of two are combined as integers before one exact scaling of each entry, so a column
    of tiny entries (1e-60 after normalising a row of 1e30) is held at full relative precision.
    ``xl`` (the low half of float64 input) and ``w`` (a 0/1 mask) may be None.
    """
    zero, one = jnp.zeros((), _F32), jnp.ones((), _F32)
    low = jnp.int32(-(1 << 20))
    ex = jnp.where(xh != 0, _exponent(xh), low)  # |x_jk| < 2^ex_jk (subnormal inputs: flushed by most hardware)
    valid = jnp.ones(xh.shape[:1], bool) if w is None else (w != 0)
    if normalize:
        e_row = jnp.max(ex, axis=1)
        e_row = jnp.where(e_row == low, 0, e_row)
        uh = _ldexp(xh, -e_row[:, None])  # largest entry in [1/2, 1): squares cannot overflow
        sh, sl = _mul(uh, uh)
        if xl is not None:
            sl = sl + 2.0 * uh * _ldexp(xl, -e_row[:, None])
        sh, sl = _row_sum_dd(*_fast_two_sum(sh, sl))
        valid = valid & (sh > 0)
        rh, rl = _rsqrt_dd(jnp.where(valid, sh, one), jnp.where(valid, sl, zero))
        b = _exponent(rh)  # rho = 2^b (rt + rtl) with rt in [1/2, 1)
        rt = jnp.where(valid, _ldexp(rh, -b), zero)[:, None]
        rtl = jnp.where(valid, _ldexp(rl, -b), zero)[:, None]
        row_exp = b - e_row  # vhat_jk = x_jk 2^row_exp (rt + rtl)
    else:
        row_exp = jnp.zeros(xh.shape[:1], jnp.int32)
    col = jnp.max(jnp.where(valid[:, None], ex + row_exp[:, None], low), axis=0)
    col = jnp.where(col <= low // 2, 0, col)  # empty column: any grid
    shift = row_exp[:, None] - col[None, :]
    keep = valid[:, None]
    uh = jnp.where(keep, _ldexp(xh, shift), zero)
    ul = None if xl is None else jnp.where(keep, _ldexp(xl, shift), zero)
    if not normalize:
        return uh, (jnp.zeros_like(uh) if ul is None else ul), col
    yh, yl = _mul_dd(uh, ul, rt, rtl)
    # the exponent bound above may be one too high (rt < 1): tighten it so the pieces use every bit
    tight = jnp.where(jnp.any(yh != 0, axis=0), _exponent(jnp.max(jnp.abs(yh), axis=0)), 0)  # 0 or -1
    return _ldexp(yh, -tight[None, :]), _ldexp(yl, -tight[None, :]), col + tight


def _grid_pieces(yh, yl, bits: int, count: int):
    """``count`` pieces ``P_a`` on the grids ``2^-bits(a+1)`` with ``|yh + yl - sum_a P_a| <= 2^-(bits count + 1)``.

    For ``|yh| < 1``, ``P_a 2^bits(a+1)`` is an integer of magnitude <= 2^bits (<= 2^(bits-1) + 1 for a > 0).
    """
    out = []
    for a in range(count):
        # yh rounded to the grid 2^-bits(a+1): exact scalings by powers of two around an integer rounding.
        # (Not the classic ``(yh + sigma) - sigma``: XLA's simplifier folds it to ``yh``.)
        up, down = np.float32(2.0 ** (bits * (a + 1))), np.float32(2.0 ** (-bits * (a + 1)))
        p = lax.round(yh * up, lax.RoundingMethod.TO_NEAREST_EVEN) * down
        yh, yl = _two_sum(yh - p, yl)  # the residual stays an exact double-float
        out.append(p)
    return out


def _pieces(yh, yl):
    """The Gram's ``NUM_PIECES`` pieces of ``PIECE_BITS`` bits (error <= 2^-49 for ``|yh| < 1``)."""
    return _grid_pieces(yh, yl, PIECE_BITS, NUM_PIECES)


# --------------------------------------------------------------------------- exact chunk products, accumulation


def _chunk_local(xh, xl, w, normalize: bool, pieces_dtype):
    """Half of one chunk's Gram, ``X`` with ``G_chunk = X + X^T``, in the chunk's column scaling.

    Returns an unevaluated float32 triple ``(l0, l1, l2)`` and exponents ``E`` (m,) with
    ``X = 2^(E_k + E_l) (l0 + l1 + l2)``, ``X = sum_a T_aa / 2 + sum_{a<b} T_ab`` (no transposes per
    chunk: the symmetrisation is done once, at the end).  The exact products are added into the
    triple with TwoSums, smallest first; terms with ``a + b >= 4`` (<= 2^-32 relative) are
    pre-summed in plain float32 (rounding <= 2^-53).
    """
    yh, yl, e = _scaled_rows(xh, xl, w, normalize)
    ps = [p.astype(pieces_dtype) for p in _pieces(yh, yl)]  # exact: a piece has <= 8 significant bits
    lead, tail = [], None
    for a, b in sorted(PAIRS, key=sum):
        t = jnp.matmul(ps[a].T, ps[b], precision=HIGHEST, preferred_element_type=_F32)  # exact (integers < 2^24)
        if a == b:
            t = t * np.float32(0.5)  # exact
        if a + b >= _PRESUM_LEVEL:
            tail = t if tail is None else tail + t
        else:
            lead.append(t)
    m = xh.shape[1]
    z = jnp.zeros((m, m), _F32)
    local = (z if tail is None else tail, z, z)
    for x in reversed(lead):  # smallest first
        local = _acc_add(local, x)
    return local, e


def _acc_add(acc, x):
    s0, s1, s2 = acc
    s0, e = _two_sum(s0, x)
    s1, e = _two_sum(s1, e)
    return s0, s1, s2 + e


def _acc_renorm(acc):
    s0, s1, s2 = acc
    s0, s1 = _two_sum(s0, s1)
    s1, s2 = _two_sum(s1, s2)
    return s0, s1, s2


def _acc_chunk(acc, xh, xl, w, normalize, pieces_dtype):
    """``acc + X_chunk``: the chunk's local triple scaled exactly by ``2^(E_k + E_l)`` and added error-free."""
    (l0, l1, l2), e = _chunk_local(xh, xl, w, normalize, pieces_dtype)
    scale = e[:, None] + e[None, :]
    acc = _acc_add(acc, _ldexp(l1, scale))
    acc = _acc_add(acc, _ldexp(l0, scale))
    s0, s1, s2 = acc
    return _acc_renorm((s0, s1, s2 + _ldexp(l2, scale)))


def _half_init(acc, m):
    """The triple holding ``X`` with ``X + X^T`` = a previous symmetric state (2 or 3 float32 terms), or zeros."""
    z = jnp.zeros((m, m), _F32)
    if acc is None:
        return z, z, z
    if len(acc) not in (2, 3):
        raise ValueError("`acc` must be a (hi, lo) pair or (hi, lo, lo2) triple from split_gram.")
    half = np.float32(0.5)  # exact
    parts = [jnp.asarray(t, _F32) * half for t in acc]
    return tuple(parts) if len(parts) == 3 else (parts[0], parts[1], z)


def _symmetrize(acc, terms: int):
    """``X + X^T`` of a triple as a :class:`SplitPair` or :class:`SplitTriple`; exactly symmetric.

    Error-free up to ``s2``'s rounding (~2^-72), then one rounding into the pair (~2^-49) if ``terms == 2``.
    """
    x0, x1, x2 = acc
    y0, e0 = _two_sum(x0, x0.T)
    y1, e1 = _two_sum(x1, x1.T)
    out = (y0, jnp.zeros_like(y0), x2 + x2.T)
    for t in (e1, y1, e0):
        out = _acc_add(out, t)
    s0, s1, s2 = _acc_renorm(out)
    s0, s1 = _two_sum(s0, s1)
    if terms == 3:
        return SplitTriple(s0, *_fast_two_sum(s1, s2))
    return SplitPair(*_fast_two_sum(s0, s1 + s2))


def _check_terms(terms):
    if terms not in (2, 3):
        raise ValueError(f"`terms` must be 2 (a (hi, lo) pair) or 3 (a triple), got {terms!r}.")


# --------------------------------------------------------------------------- inputs


def to_pair(rows, *, normalize: bool = True):
    """Float32 ``(hi, lo)`` with ``hi + lo ~= rows`` (48 bits) for the split path; float32/bfloat16: ``(rows, None)``.

    NumPy float64 rows are split on the host (with ``normalize=True`` each row is first scaled by a
    power of two so its largest entry is in [1/2, 1), which ``normalize`` undoes exactly and which
    keeps 1e300 finite).  A JAX float64 array is split with JAX (those casts are float64 ops: pass
    NumPy arrays, or a pair, to keep the device float64-free).  A ``(hi, lo)`` tuple passes through.

    Example:
        >>> hi, lo = to_pair(np.array([[1.0 + 2.0**-30, 0.0]]), normalize=False)
        >>> float(hi[0, 0]), float(lo[0, 0]) == 2.0**-30
        (1.0, True)
    """
    if isinstance(rows, (tuple, list)):
        if len(rows) != 2:
            raise ValueError("`rows` given as a tuple must be a (hi, lo) pair of float32 arrays.")
        hi, lo = rows
        return jnp.asarray(hi, _F32), (None if lo is None else jnp.asarray(lo, _F32))
    if isinstance(rows, np.ndarray) or not hasattr(rows, "dtype"):
        rows = np.asarray(rows)
        if rows.dtype == np.float64:
            if normalize:
                amax = np.max(np.abs(rows), axis=-1, keepdims=True)
                _, ex = np.frexp(np.where(np.isfinite(amax) & (amax > 0), amax, 1.0))
                rows = np.ldexp(rows, -ex)
            hi = rows.astype(np.float32)
            lo = (rows - hi.astype(np.float64)).astype(np.float32)
            return jnp.asarray(hi), jnp.asarray(lo)
    dtype = jnp.asarray(rows).dtype if not hasattr(rows, "dtype") else rows.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`rows` must be a float array (float32, bfloat16 or float64), got dtype {dtype}.")
    if dtype == jnp.float64:
        rows = jnp.asarray(rows)
        hi = rows.astype(_F32)
        return hi, (rows - hi.astype(rows.dtype)).astype(_F32)
    return jnp.asarray(rows).astype(_F32), None


def _check_rows(xh, name="rows"):
    if xh.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D (n, m) array, got shape {tuple(xh.shape)}.")


def _check_chunk(chunk_rows: int):
    if not 0 < int(chunk_rows) <= MAX_CHUNK_ROWS:
        raise ValueError(f"`chunk_rows` must be in [1, {MAX_CHUNK_ROWS}] so that sums of {PIECE_BITS}-bit piece "
                         f"products stay exact in float32 (2*{PIECE_BITS} + log2(chunk_rows) <= 24); got {chunk_rows}.")


def _pieces_dtype(pieces: str):
    if pieces not in ("float32", "bfloat16"):
        raise ValueError(f"`pieces` must be 'float32' or 'bfloat16', got {pieces!r}.")
    return _F32 if pieces == "float32" else jnp.bfloat16


# --------------------------------------------------------------------------- public entry points


def split_chunk_gram(rows, *, normalize: bool = True, mask=None, pieces: str = "float32", terms: int = 2):
    """Gram ``sum_j w_j vhat_j vhat_j^T`` of one chunk of ``c <= 256`` rows as an accurate float32 pair.

    Args:
        rows: (c, m) float32 / bfloat16 array, a float64 array (see :func:`to_pair`), or a float32
            ``(hi, lo)`` pair.
        normalize: L2-normalise each row (in double-float; zero rows contribute 0).
        mask: optional (c,) row weights; nonzero means 1.
        pieces: ``"float32"`` or ``"bfloat16"``: the dtype the 8-bit pieces are multiplied in (both
            exact; bfloat16 is one native MXU pass on a TPU).
        terms: 2 for a :class:`SplitPair`, 3 for a :class:`SplitTriple` (keeps the last bits).

    Returns:
        :class:`SplitPair` ``(hi, lo)``, (m, m) float32 each; ``float64(hi) + float64(lo)`` is the
        Gram matrix to ~3e-15 relative to ``|A|^T |A|`` (module docstring).  jit/vmap-compatible;
        no float64 operation for float32 input.

    Example:
        >>> hi, lo = jax.jit(split_chunk_gram)(jnp.array([[3.0, 4.0]]))
        >>> np.round(np.float64(hi) + np.float64(lo), 14).tolist()
        [[0.36, 0.48], [0.48, 0.64]]
    """
    _check_terms(terms)
    xh, xl = to_pair(rows, normalize=normalize)
    _check_rows(xh)
    _check_chunk(xh.shape[0])
    w = None if mask is None else jnp.asarray(mask)
    acc = _acc_chunk(_half_init(None, xh.shape[1]), xh, xl, w, normalize, _pieces_dtype(pieces))
    return _symmetrize(acc, terms)


def split_gram(rows, *, normalize: bool = True, chunk_rows: int = MAX_CHUNK_ROWS, mask=None, acc=None,
               pieces: str = "float32", terms: int = 2):
    """Gram ``A^T A`` of all rows (L2-normalised) as a float32 pair, float64-accurate from float32 arithmetic only.

    Rows are taken ``chunk_rows`` (<= 256) at a time in one ``fori_loop`` (read in place; the ragged
    tail is the last ``chunk_rows`` rows with the already-counted ones masked out); each
    chunk's 13 exact float32 products are added into a float32 triple with TwoSums, compressed to
    the returned pair once at the end (error bound in the module docstring; the accumulator's share
    is ~1e-16 even at 10^6 rows).  The pair's own rounding (2^-49 per entry) is the largest error
    left: on a collapsed set it moves the smallest eigenvalues by ~1e-9 relative; ``terms=3``
    returns the triple and removes it (float64's rounding then dominates, as in a float64 Gram).

    Args:
        rows: (n, m) float32 / bfloat16 (or float64, or a ``(hi, lo)`` pair: :func:`to_pair`; under
            ``jit`` pass float64 rows as ``to_pair(rows)`` made outside it, since a float64 argument
            of a jitted function is truncated to float32 without JAX's x64 flag).
        normalize: L2-normalise rows.
        chunk_rows: rows per exact chunk, 1..256 (256: the fewest, largest GEMMs).
        mask: optional (n,) 0/1 row weights.
        acc: optional previous result (pair or triple, symmetric) to add the rows to (streaming).
        pieces: ``"float32"`` or ``"bfloat16"`` (see :func:`split_chunk_gram`).
        terms: 2 for a :class:`SplitPair` (the contract), 3 for a :class:`SplitTriple`.

    Returns:
        :class:`SplitPair` ``(hi, lo)``; on the host, ``pair_to_f64(pair)`` is the float64 Gram.
        jit-compatible (``normalize``, ``chunk_rows``, ``pieces`` static); no float64 operation for
        float32 input (``tests/test_split.py`` checks the jaxpr).

    Example:
        >>> a = jax.random.normal(jax.random.key(0), (1000, 8))
        >>> g = pair_to_f64(jax.jit(split_gram)(a))
        >>> v = np.float64(a) / np.linalg.norm(np.float64(a), axis=1, keepdims=True)
        >>> bool(np.abs(g - v.T @ v).max() < 1e-14 * np.abs(v.T @ v).max())
        True
    """
    _check_terms(terms)
    xh, xl = to_pair(rows, normalize=normalize)
    _check_rows(xh)
    _check_chunk(chunk_rows)
    pdt = _pieces_dtype(pieces)
    n, m = xh.shape
    w = None if mask is None else jnp.asarray(mask)
    if w is not None and w.shape != (n,):
        raise ValueError(f"`mask` must have shape ({n},) like the rows, got {tuple(w.shape)}.")
    if n == 0:
        raise ValueError("`rows` has no rows; pass an (n, m) array with n >= 1.")
    state = _half_init(acc, m)
    c = min(int(chunk_rows), n)
    n_iter = -(-n // c)
    arrays = [x for x in (xh, xl, w) if x is not None]

    def body(i, st):
        # the last chunk is the last c rows, overlapping its predecessor: rows already counted are masked
        # out, so one traced body serves every chunk and the rows are never padded or copied
        start = jnp.minimum(i * c, n - c)
        parts = [lax.dynamic_slice_in_dim(x, start, c) for x in arrays]
        bh = parts[0]
        bl = parts[1] if xl is not None else None
        fresh = start + jnp.arange(c) >= i * c
        bw = fresh if w is None else fresh & (parts[-1] != 0)
        return _acc_chunk(st, bh, bl, bw, normalize, pdt)

    state = lax.fori_loop(0, n_iter, body, state)
    return _symmetrize(state, terms)


def leverages_f32(rows, inv_l, *, n_sub, normalize: bool = True, chunk_rows: int = 4096):
    """The band's Mahalanobis pass on a float64-free device: ``q_i = n_A ||L^-1 vhat_i||^2`` per row, in float32.

    The companion of :func:`split_gram` for ``sigma(..., precision="split")``: ``L^-1`` (m, m) comes
    from the host (float64 Cholesky of ``G_A + eps I``, cast to float32) and each chunk is one
    float32 product at ``precision=HIGHEST``.  *Not* error-free: ``q`` carries float32 rounding
    (measured against float64 in ``tests/test_split.py``), which only reaches the report's
    second-order terms (the band and the bias corrections), never ``logdet`` or ``U_cov``.

    Args:
        rows: (n, m) float32 rows (the ``hi`` part of :func:`to_pair` for float64 input).
        inv_l: (m, m) lower-triangular ``L^-1``.
        n_sub: ``n_A`` (a Python number).
        normalize: L2-normalise rows (scaled by their largest entry first, so no square overflows).
        chunk_rows: rows per product.

    Returns:
        (n,) float32 leverages.  jit-compatible (``n_sub``, ``normalize``, ``chunk_rows`` static).

    Example:
        >>> q = leverages_f32(jnp.eye(3), jnp.eye(3), n_sub=3)
        >>> q.tolist()
        [3.0, 3.0, 3.0]
    """
    xh = jnp.asarray(rows, _F32)
    _check_rows(xh)
    inv_l = jnp.asarray(inv_l, _F32)
    n = xh.shape[0]
    c = max(1, min(int(chunk_rows), n))

    def body(i, q):
        start = jnp.minimum(i * c, n - c)  # the last chunk overlaps its predecessor: it rewrites equal values
        b = lax.dynamic_slice_in_dim(xh, start, c)
        if normalize:
            amax = jnp.max(jnp.abs(b), axis=1, keepdims=True)
            b = b / jnp.where(amax > 0, amax, 1.0)
            sq = jnp.sum(b * b, axis=1, keepdims=True)
            b = b * jnp.where(sq > 0, lax.rsqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
        w = jnp.matmul(b, inv_l.T, precision=HIGHEST)
        return lax.dynamic_update_slice_in_dim(q, jnp.sum(w * w, axis=1) * _F32(n_sub), start, 0)

    return lax.fori_loop(0, -(-n // c), body, jnp.zeros((n,), _F32))


def pair_to_f64(pair) -> np.ndarray:
    """Host float64 ``hi + lo (+ lo2)`` of a :class:`SplitPair` / :class:`SplitTriple` (the finishing step, NumPy).

    Example:
        >>> pair_to_f64((np.float32([1.0]), np.float32([2.0**-30]))).tolist() == [1.0 + 2.0**-30]
        True
    """
    parts = [np.asarray(t, np.float64) for t in pair]
    out = parts[0] + parts[1]
    return out if len(parts) == 2 else out + parts[2]
