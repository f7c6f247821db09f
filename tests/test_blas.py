"""The host BLAS floor (sigma_jax._blas): chunked dsyrk Gram and dtrmm leverages against float64 references.

Tolerances (measured on random-basis healthy / collapsed sets, m = 48, n = 3000):
* Gram entries: float64 BLAS error ~5e-16 relative to (|A|^T |A|)_kl against an 80-bit (long double)
  reference; tested at 3e-15 so that a 10x regression fails.
* leverages: error ~cond(L) eps; measured 8e-16 (healthy, cond(G + delta I) ~ 7) and 4e-12 (collapsed,
  cond ~2e6, the float64 reference solve included); tested at 1e-14 / 2e-11.
"""

import doctest

import numpy as np
import pytest

from sigma_jax import _blas
from tests._reference import collapsed, healthy, normalize_rows


def _ref(x, idx=None):
    """80-bit reference: normalised rows, their Gram and |A|^T |A| (long double)."""
    xl = np.asarray(x, np.longdouble)
    v = xl / np.sqrt(np.sum(xl * xl, axis=1, keepdims=True))
    if idx is not None:
        v = v[idx]
    return v, v.T @ v, np.abs(v).T @ np.abs(v)


def _leverage_ref(v, g, delta):
    n_a, m = v.shape
    c = np.asarray(g, np.float64) + delta * np.eye(m)
    return n_a * np.einsum("ij,ji->i", np.asarray(v, np.float64), np.linalg.solve(c, np.asarray(v, np.float64).T))


@pytest.mark.parametrize("kind", ["healthy", "collapsed"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("subset", [False, True])
def test_gram_and_leverages_match_float64_references(rng, kind, dtype, subset):
    n, m = 3000, 48
    x = (healthy if kind == "healthy" else collapsed)(rng, n, m).astype(dtype)
    idx = np.sort(rng.choice(n, 1100, replace=False)) if subset else None
    v, g_ref, ab = _ref(x, idx)
    g = _blas.host_gram(x, idx, chunk_rows=257)  # odd chunk size, ragged tail
    assert g.dtype == np.float64 and g.shape == (m, m)
    assert np.array_equal(g, g.T)
    assert np.max(np.abs(g - g_ref) / ab) < 3e-15
    q = _blas.host_leverages(x, idx, g, delta=1e-3, chunk_rows=333, kernel="trmm")
    q_ref = _leverage_ref(v, g_ref, 1e-3)
    assert q.shape == (v.shape[0],)
    tol = 1e-14 if kind == "healthy" else 2e-11
    assert np.max(np.abs(q - q_ref) / q_ref) < tol
    q_gemm = _blas.host_leverages(x, idx, g, delta=1e-3, chunk_rows=333, kernel="gemm")
    assert np.max(np.abs(q_gemm - q_ref) / q_ref) < tol
    # sum_i q_i = n_A sum_k lam_k / (lam_k + delta): an identity, independent of the reference's solve
    # (eigvalsh's absolute error eps ||G|| becomes eps ||G|| / delta ~ 1e-9 relative per term when lam << delta)
    lam = np.linalg.eigvalsh(g)
    assert np.sum(q) == pytest.approx(v.shape[0] * np.sum(lam / (lam + 1e-3)), rel=1e-13 if kind == "healthy" else 1e-9)


def test_memmap_and_chunk_sizes_agree(rng, tmp_path):
    x = healthy(rng, 2000, 24).astype(np.float32)
    path = tmp_path / "emb.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")
    idx = np.sort(rng.choice(2000, 900, replace=False))
    base = _blas.host_gram(x, idx)
    q0 = _blas.host_leverages(x, idx, base, delta=1e-3)
    for chunk in (1, 64, 1000, 5000):
        g = _blas.host_gram(mm, idx, chunk_rows=chunk)
        np.testing.assert_allclose(g, base, rtol=0, atol=4e-15 * np.abs(base).max())
        np.testing.assert_allclose(_blas.host_leverages(mm, idx, g, delta=1e-3, chunk_rows=chunk), q0, rtol=1e-13)


def test_normalize_false_zero_rows_and_input_untouched(rng):
    x = rng.normal(size=(300, 8))
    x[7] = 0.0
    keep = x.copy()
    v = normalize_rows(np.delete(x, 7, axis=0))
    np.testing.assert_allclose(_blas.host_gram(x, chunk_rows=50), v.T @ v, rtol=0, atol=1e-13)  # zero row adds 0
    np.testing.assert_allclose(_blas.host_gram(x, normalize=False), x.T @ x, rtol=1e-14, atol=1e-12)
    assert np.array_equal(x, keep)  # the caller's array is never written
    q = _blas.host_leverages(x, None, _blas.host_gram(x), delta=1e-3)
    assert q[7] == 0.0


def test_bad_inputs_raise_clear_errors(rng):
    x = rng.normal(size=(50, 4))
    with pytest.raises(ValueError, match="sorted"):
        _blas.host_gram(x, np.array([3, 1, 2]))
    with pytest.raises(ValueError, match="idx"):
        _blas.host_gram(x, np.array([0, 50]))
    with pytest.raises(TypeError, match="floats"):
        _blas.host_gram(np.ones((5, 3), np.int64))
    with pytest.raises(ValueError, match="2-D"):
        _blas.host_gram(np.ones(5))
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        _blas.host_gram(bad)
    singular = np.repeat(x[:1], 10, axis=0)  # rank 1: G is singular without a ridge
    with pytest.raises(ValueError, match="positive definite"):
        _blas.host_leverages(singular, None, _blas.host_gram(singular), delta=0.0)
    with pytest.raises(ValueError, match="gram"):
        _blas.host_leverages(x, None, np.eye(3), delta=1e-3)
    with pytest.raises(ValueError, match="kernel"):
        _blas.host_leverages(x, None, _blas.host_gram(x), delta=1e-3, kernel="syrk")


def test_docstring_examples_run():
    res = doctest.testmod(_blas, globs={"np": np, **vars(_blas)})
    assert res.attempted > 0 and res.failed == 0
