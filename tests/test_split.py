"""precision="split" (sigma_jax._split): float64-accurate Gram matrices from float32 arithmetic only.

"Relative error" of an entry means |G_split - G|_kl / (|A|^T |A|)_kl, with A the normalised rows and the
reference G computed in 80-bit long double.  Measured (these tests' seeds, and 4 others): 2.1-2.9e-15 on
healthy and collapsed random-basis sets and on float64 input; 1.5-5.6e-14 with per-column magnitudes
1e-30..1e30 (the ratio of a column's chunk maximum to its typical entry enters the bound), plus an
absolute floor of < 2^-114 on entries below float32's range; log-det of G + 1e-3 I on a collapsed set
0.4-4e-12 relative (pair), 1e-13 (triple).  Tolerances are set so that a 10x regression fails (and all
are within the issue's 1e-12 / 1e-9).
"""

import doctest
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sigma_jax import _split
from tests._reference import collapsed, healthy

split_jit = jax.jit(_split.split_gram, static_argnames=("normalize", "chunk_rows", "pieces", "terms"))


def _ref(x, mask=None, normalize=True):
    """Long-double reference Gram and |A|^T |A| (float64 results)."""
    xl = np.asarray(x, np.longdouble)
    v = xl / np.sqrt(np.sum(xl * xl, axis=1, keepdims=True)) if normalize else xl
    if mask is not None:
        v = v[np.asarray(mask) != 0]
    return np.asarray(v.T @ v, np.float64), np.asarray(np.abs(v).T @ np.abs(v), np.float64)


def _rel(g, g_ref, ab, floor=0.0):
    return np.max(np.abs(g - g_ref) / (ab + floor))


@pytest.mark.parametrize("kind", ["healthy", "collapsed"])
@pytest.mark.parametrize("chunk_rows", [256, 77, 1])
def test_entries_match_long_double_reference(rng, kind, chunk_rows):
    n = 600 if chunk_rows == 1 else 1000  # chunk_rows=1: every row its own grid (odd sizes, ragged tail)
    x = (healthy if kind == "healthy" else collapsed)(rng, n, 64).astype(np.float32)
    g_ref, ab = _ref(x)
    pair = split_jit(jnp.asarray(x), chunk_rows=chunk_rows)
    assert pair.hi.dtype == jnp.float32 and pair.lo.dtype == jnp.float32
    assert np.array_equal(pair.hi, pair.hi.T) and np.array_equal(pair.lo, pair.lo.T)
    assert _rel(_split.pair_to_f64(pair), g_ref, ab) < 2e-14
    # the pair really carries ~48 bits: float32 alone is 1e-8 off
    assert _rel(np.asarray(pair.hi, np.float64), g_ref, ab) > 1e-9


def test_tiny_and_huge_magnitudes_within_a_row(rng):
    """Columns scaled by 10^t, t spread over [-30, 30] (float32): rows of norm 1e30, entries of 1e-60 once normalised."""
    m = 32
    x = (rng.normal(size=(600, m)) * 10.0 ** rng.permutation(np.linspace(-30, 30, m))).astype(np.float32)
    assert np.all(np.isfinite(x)) and np.abs(x).max() > 1e29 and np.abs(x[x != 0]).min() < 1e-29
    g_ref, ab = _ref(x)
    g = _split.pair_to_f64(split_jit(jnp.asarray(x)))
    err = np.abs(g - g_ref)
    # relative accuracy wherever a float32 pair can hold the entry, an absolute floor below float32's range
    assert np.max(err / (ab + 2.0**-112 / 1e-12)) < 1e-12  # the bar, with the floor
    big = ab > 2.0**-70
    assert big.sum() > 50 and np.max(err[big] / ab[big]) < 3e-13  # measured 5.6e-14
    assert np.max(err[~big]) < 2.0**-114  # measured 2^-115.6
    # and a naive float32 normalisation would overflow: the test is not vacuous
    with np.errstate(over="ignore"):
        assert not np.all(np.isfinite(np.sum(x * x, axis=1)))


def test_masked_rows_zero_rows_and_normalize_false(rng):
    x = healthy(rng, 700, 16).astype(np.float32)
    mask = (rng.uniform(size=700) > 0.3).astype(np.float32)
    garbage = x.copy()
    garbage[mask == 0] = np.float32(np.nan)  # masked rows may hold anything
    g_ref, ab = _ref(x, mask)
    g = _split.pair_to_f64(split_jit(jnp.asarray(garbage), mask=jnp.asarray(mask), chunk_rows=100))
    assert _rel(g, g_ref, ab) < 2e-14
    z = x.copy()
    z[5] = 0.0
    g_ref, ab = _ref(np.delete(z, 5, axis=0))
    assert _rel(_split.pair_to_f64(split_jit(jnp.asarray(z))), g_ref, ab) < 2e-14
    raw = (x * 3.0).astype(np.float32)
    g_ref, ab = _ref(raw, normalize=False)
    assert _rel(_split.pair_to_f64(split_jit(jnp.asarray(raw), normalize=False)), g_ref, ab) < 2e-14


def test_float64_and_bfloat16_inputs_and_bfloat16_pieces(rng):
    x64 = collapsed(rng, 900, 24) * 1e200  # float64 beyond float32's range: rescaled by powers of two on the host
    g_ref, ab = _ref(x64)
    pair = _split.to_pair(x64)  # on the host, outside jit (a float64 argument of jit would become float32)
    assert pair[0].dtype == jnp.float32 and pair[1].dtype == jnp.float32
    assert _rel(_split.pair_to_f64(split_jit(pair)), g_ref, ab) < 2e-14
    x = healthy(rng, 900, 24).astype(np.float32)
    pair32 = split_jit(jnp.asarray(x))
    pair16 = split_jit(jnp.asarray(x), pieces="bfloat16")
    assert np.array_equal(pair32.hi, pair16.hi) and np.array_equal(pair32.lo, pair16.lo)  # both exact
    xb = jnp.asarray(x, jnp.bfloat16)
    g_ref, ab = _ref(np.asarray(xb.astype(jnp.float32)))
    assert _rel(_split.pair_to_f64(split_jit(xb)), g_ref, ab) < 2e-14


def test_streaming_chunk_and_vmap(rng):
    x = healthy(rng, 600, 12).astype(np.float32)
    whole = split_jit(jnp.asarray(x), terms=3)
    part = split_jit(jnp.asarray(x[:300]), terms=3)
    both = split_jit(jnp.asarray(x[300:]), acc=part, terms=3)
    np.testing.assert_allclose(_split.pair_to_f64(both), _split.pair_to_f64(whole), rtol=0, atol=1e-13)
    # jit and vmap may differ from each other in the last bits of the (not error-free) normalisation,
    # where a compiler may fuse a product into an FMA; each is accurate
    g_ref, ab = _ref(x[:200])
    assert _rel(_split.pair_to_f64(jax.jit(_split.split_chunk_gram)(jnp.asarray(x[:200]))), g_ref, ab) < 2e-14
    batched = jax.jit(jax.vmap(_split.split_gram))(jnp.asarray(x.reshape(3, 200, 12)))
    for i in range(3):
        g_ref, ab = _ref(x[200 * i:200 * (i + 1)])
        assert _rel(_split.pair_to_f64(_split.SplitPair(batched.hi[i], batched.lo[i])), g_ref, ab) < 2e-14


def test_logdet_of_collapsed_set_matches_float64(rng):
    x = collapsed(rng, 8192, 64).astype(np.float32)
    g_ref, _ = _ref(x)
    ld = lambda g: np.linalg.slogdet(g + 1e-3 * np.eye(64))[1]  # noqa: E731
    ref = ld(g_ref)
    pair = split_jit(jnp.asarray(x))
    triple = split_jit(jnp.asarray(x), terms=3)
    assert abs(ld(_split.pair_to_f64(pair)) - ref) / abs(ref) < 1.5e-11  # measured 2.2e-12
    assert abs(ld(_split.pair_to_f64(triple)) - ref) / abs(ref) < 8e-13  # measured 1.0e-13
    # what the default float32 precision would cost: the float32 Gram of float64-normalised rows
    v = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    v32 = v.astype(np.float32)
    assert abs(ld(np.asarray(v32.T @ v32, np.float64)) - ref) / abs(ref) > 1e-6


# --------------------------------------------------------------------------- the device part is float64-free


def _subjaxprs(value):
    if hasattr(value, "eqns"):
        yield value
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        yield value.jaxpr
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _subjaxprs(v)


def _walk(jaxpr, seen):
    """Yield (variable-or-literal dtype, primitive name) for every variable of a jaxpr and its nested jaxprs."""
    for v in list(jaxpr.invars) + list(jaxpr.constvars) + list(jaxpr.outvars):
        yield getattr(v.aval, "dtype", None), "signature"
    for eqn in jaxpr.eqns:
        seen.add(eqn.primitive.name)
        for v in list(eqn.invars) + list(eqn.outvars):
            yield getattr(v.aval, "dtype", None), eqn.primitive.name
        for key, param in eqn.params.items():
            if key == "precision" or key.endswith("dtype") and param is not None:
                yield getattr(param, "dtype", param), f"{eqn.primitive.name}.{key}"
            for sub in _subjaxprs(param):
                yield from _walk(sub, seen)


def _float64_uses(fn, *args):
    with jax.enable_x64(True):  # so that float64 *could* appear
        closed = jax.make_jaxpr(fn)(*args)
    seen = set()
    uses = [name for dtype, name in _walk(closed.jaxpr, seen) if dtype is not None and str(dtype) == "float64"]
    uses += ["const" for c in closed.consts if getattr(c, "dtype", None) == np.float64]
    return uses, seen, closed


def test_device_jaxpr_has_no_float64_and_every_dot_is_highest():
    x = jnp.zeros((700, 40), jnp.float32)
    mask = jnp.ones((700,), jnp.float32)
    fn = functools.partial(_split.split_gram, chunk_rows=128)
    uses, seen, closed = _float64_uses(lambda a, w: fn(a, mask=w), x, mask)
    assert not uses, f"float64 in the split path's jaxpr: {sorted(set(uses))}"
    assert "dot_general" in seen and seen & {"while", "scan"}  # the walk reached inside the loop
    dots = [e for e in _all_eqns(closed.jaxpr) if e.primitive.name == "dot_general"]
    assert len(dots) >= _split.GEMMS_PER_CHUNK
    assert all("HIGHEST" in str(e.params["precision"]) for e in dots)
    others = (lambda a: _split.split_chunk_gram(a[:200]), lambda a: _split.split_gram(a, pieces="bfloat16", terms=3))
    for other in others:
        uses, _, _ = _float64_uses(other, x)
        assert not uses, f"float64 in the split path's jaxpr: {sorted(set(uses))}"
    # the walker does see float64 where it exists (negative control): the existing float64 Gram path
    from sigma_jax import gram

    uses64, _, _ = _float64_uses(lambda a: gram.gram_f64(a, chunk_rows=128), x)
    assert uses64


def _all_eqns(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in _subjaxprs(param):
                yield from _all_eqns(sub)


def test_pieces_are_exact_and_cost_constants():
    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.uniform(-1, 1, size=(64, 8)).astype(np.float32))
    yl = jnp.asarray((rng.uniform(-1, 1, size=(64, 8)) * 2.0**-30).astype(np.float32))
    pieces = _split._pieces(y, yl)
    for a, p in enumerate(pieces):
        ints = np.asarray(p, np.float64) * 2.0 ** (_split.PIECE_BITS * (a + 1))
        assert np.array_equal(ints, np.round(ints)) and np.abs(ints).max() <= 2**_split.PIECE_BITS
    total = sum(np.asarray(p, np.float64) for p in pieces)
    exact = np.asarray(y, np.float64) + np.asarray(yl, np.float64)
    assert np.abs(total - exact).max() <= 2.0**-49
    assert _split.MAX_CHUNK_ROWS * 2 ** (2 * _split.PIECE_BITS) <= 2**24
    assert _split.GEMMS_PER_CHUNK == 13


def test_bad_inputs_raise_clear_errors():
    x = jnp.ones((10, 4), jnp.float32)
    with pytest.raises(ValueError, match="chunk_rows"):
        _split.split_gram(x, chunk_rows=300)
    with pytest.raises(ValueError, match="chunk_rows"):
        _split.split_chunk_gram(jnp.ones((257, 4), jnp.float32))
    with pytest.raises(ValueError, match="2-D"):
        _split.split_gram(jnp.ones((4,), jnp.float32))
    with pytest.raises(TypeError, match="float"):
        _split.split_gram(jnp.ones((10, 4), jnp.int32))
    with pytest.raises(ValueError, match="mask"):
        _split.split_gram(x, mask=jnp.ones((3,)))
    with pytest.raises(ValueError, match="pieces"):
        _split.split_gram(x, pieces="float16")
    with pytest.raises(ValueError, match="terms"):
        _split.split_gram(x, terms=4)
    with pytest.raises(ValueError, match="no rows"):
        _split.split_gram(jnp.ones((0, 4), jnp.float32))


def test_docstring_examples_run():
    res = doctest.testmod(_split, globs={"jax": jax, "jnp": jnp, "np": np, **vars(_split)})
    assert res.attempted > 0 and res.failed == 0
