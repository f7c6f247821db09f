"""GramOperator (both sides) and the streaming state against dense float64 references; file loading."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sigma_jax import gram
from tests._reference import healthy, normalize_rows


@pytest.mark.parametrize("side", ["feature", "sample"])
@pytest.mark.parametrize("normalize", [True, False])
def test_operator_products_match_dense(rng, side, normalize):
    a = healthy(rng, 60, 9).astype(np.float32)
    op = gram.gram_operator(a, delta=0.25, side=side, normalize=normalize)
    v = normalize_rows(a) if normalize else a.astype(np.float64)
    dense = (v.T @ v if side == "feature" else v @ v.T) + 0.25 * np.eye(op.dim)
    np.testing.assert_allclose(np.asarray(op.dense()), dense, rtol=1e-6, atol=1e-6)
    x = rng.normal(size=(op.dim,)).astype(np.float32)
    xs = rng.normal(size=(op.dim, 4)).astype(np.float32)
    tol = dict(rtol=2e-5, atol=2e-5 * np.abs(dense).max())
    np.testing.assert_allclose(np.asarray(op.matvec(jnp.asarray(x))), dense @ x, **tol)
    np.testing.assert_allclose(np.asarray(op.matmat(jnp.asarray(xs))), dense @ xs, **tol)
    np.testing.assert_allclose(np.asarray(op.matmat_rows(jnp.asarray(xs.T))), (dense @ xs).T, **tol)
    np.testing.assert_allclose(np.asarray(op.diagonal()), np.diag(dense), rtol=1e-5)
    assert float(op.trace()) == pytest.approx(np.trace(dense), rel=1e-5)
    # a pytree: passes through jit as an argument
    y = jax.jit(lambda o, z: o.matvec(z))(op, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(y), dense @ x, **tol)


def test_streaming_update_masks_and_merge(rng):
    a = healthy(rng, 100, 6)
    s = gram.init(6)
    s = gram.update(s, a[:40])
    padded = np.vstack([a[40:70], np.full((10, 6), 7.0)])
    mask = np.r_[np.ones(30), np.zeros(10)]
    s = gram.update(s, padded, mask=mask)
    t = gram.update(gram.init(6), a[70:])
    both = gram.merge(s, t)
    v = normalize_rows(a)
    assert int(both.count) == 100
    np.testing.assert_allclose(np.asarray(gram.finalize(both)), v.T @ v, rtol=1e-13, atol=1e-13)
    # state is float32 (hi, lo) yet exact to ~1e-14: it survives a jit boundary without x64
    a32 = a.astype(np.float32)  # what crosses a jit boundary without x64
    out = jax.jit(lambda st, r: gram.update(st, r))(gram.init(6), a32)
    assert out.hi.dtype == jnp.float32
    v32 = normalize_rows(a32.astype(np.float64))
    np.testing.assert_allclose(np.asarray(gram.finalize(out)), v32.T @ v32, rtol=1e-13, atol=1e-13)


def test_accumulate_errors_name_global_rows(rng):
    a = healthy(rng, 300, 4)
    a[257] = np.nan
    with pytest.raises(ValueError, match="NaN") as info:
        gram.accumulate(a, chunk_rows=128)
    assert "257" in str(info.value)
    with pytest.raises(ValueError, match="no rows"):
        gram.accumulate(iter([]))
    with pytest.raises(ValueError, match="dim"):
        gram.init(0)


def test_load_embeddings_formats_and_refusals(rng, tmp_path):
    a = rng.normal(size=(20, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    np.savez(tmp_path / "b.npz", embeddings=a, other=a[:2])
    np.save(tmp_path / "obj.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    assert isinstance(gram.load_embeddings(tmp_path / "a.npy"), np.memmap)
    np.testing.assert_array_equal(gram.load_embeddings(tmp_path / "b.npz"), a)
    np.testing.assert_array_equal(gram.load_embeddings(tmp_path / "b.npz", key="other"), a[:2])
    with pytest.raises(ValueError, match="pickle"):
        gram.load_embeddings(tmp_path / "obj.npy")
    with pytest.raises(ValueError, match="cannot read"):
        gram.load_embeddings(tmp_path / "junk.npy")
    with pytest.raises(FileNotFoundError):
        gram.load_embeddings(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="side"):
        gram.gram_operator(a, side="kernel")


def test_chunked_gram_and_band_inside_shard_map(rng):
    """Local shards longer than chunk_rows run the lax.scan path inside shard_map (varying carry)."""
    from jax.sharding import PartitionSpec as P

    from sigma_jax import core

    a = healthy(rng, 4 * 300, 5).astype(np.float32)
    mesh = jax.make_mesh((4,), ("d",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:4])

    def local(rows):
        g = jax.lax.psum(gram.gram_f64(rows, chunk_rows=128), "d")
        q = jax.lax.psum(core.q_moments(rows, g, n_sub=a.shape[0], chunk_rows=128), "d")
        return g, q

    f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=P("d"), out_specs=(P(), P())))
    g, q = f(jnp.asarray(a))
    v = normalize_rows(a)
    np.testing.assert_allclose(np.asarray(g), v.T @ v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(q), np.asarray(core.q_moments(a, v.T @ v)), rtol=1e-10)
