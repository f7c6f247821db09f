"""Spectral metrics against their defining formulas (float64 NumPy), closed forms and conventions."""

import doctest

import jax.numpy as jnp
import numpy as np
import pytest

from sigma_jax import spectral
from tests._reference import collapsed, healthy, normalize_rows


def np_entropy(lam):
    p = lam / lam.sum()
    p = p[p > 0]
    return -(p * np.log(p)).sum()


SPECTRA = {
    "flat": lambda d: np.ones(d),
    "power_law_0.5": lambda d: np.arange(1, d + 1) ** -0.5,
    "power_law_2": lambda d: np.arange(1, d + 1) ** -2.0,
    "spiked": lambda d: np.r_[50.0, 20.0, np.ones(d - 2) * 0.1],
    "nearly_singular": lambda d: np.r_[np.ones(d // 2), np.full(d - d // 2, 1e-10)],
}


@pytest.mark.parametrize("name", list(SPECTRA))
def test_metrics_match_definitions_on_chosen_spectra(rng, name):
    lam = SPECTRA[name](40) * rng.uniform(0.5, 2.0)  # scale-free metrics must not care
    lam = rng.permutation(lam)
    x = jnp.asarray(lam, jnp.float32) if name != "nearly_singular" else lam
    lam = np.asarray(x, np.float64)
    assert float(spectral.spectral_entropy(x)) == pytest.approx(np_entropy(lam), rel=1e-10)
    assert float(spectral.effective_rank(x)) == pytest.approx(np.exp(np_entropy(lam)), rel=1e-10)
    s = np.sqrt(lam)
    p = s / s.sum() + 1e-7
    assert float(spectral.effective_rank(x, convention="singular")) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-10)
    assert float(spectral.participation_ratio(x)) == pytest.approx(lam.sum() ** 2 / (lam**2).sum(), rel=1e-10)
    assert float(spectral.stable_rank(x)) == pytest.approx(lam.sum() / lam.max(), rel=1e-10)
    assert float(spectral.logdet(x, delta=1e-3)) == pytest.approx(np.log(lam + 1e-3).sum(), rel=1e-10)
    assert float(spectral.condition_number(x, delta=1e-3)) == pytest.approx((lam.max() + 1e-3) / (lam.min() + 1e-3), rel=1e-10)
    assert float(spectral.spectral_entropy(x, normalized=True)) == pytest.approx(np_entropy(lam) / np.log(40), rel=1e-10)


def test_alpha_req_recovers_power_law_and_matches_lstsq(rng):
    lam = np.arange(1, 101) ** -1.3
    assert float(spectral.alpha_req(lam)) == pytest.approx(1.3, rel=1e-10)
    noisy = lam * np.exp(rng.normal(scale=0.1, size=100))
    i = np.arange(5, 51)
    srt = np.sort(noisy)[::-1][4:50]
    slope = np.polyfit(np.log(i), np.log(srt), 1)[0]
    assert float(spectral.alpha_req(noisy, start=5, stop=50)) == pytest.approx(-slope, rel=1e-9)
    with pytest.raises(ValueError, match="start"):
        spectral.alpha_req(lam, start=10, stop=5)


def test_closed_forms():
    d = 7
    ident = np.ones(d)
    assert float(spectral.spectral_entropy(ident)) == pytest.approx(np.log(d), rel=1e-12)
    assert float(spectral.effective_rank(ident)) == pytest.approx(d, rel=1e-12)
    assert float(spectral.participation_ratio(ident)) == pytest.approx(d, rel=1e-12)
    rank1 = np.r_[3.0, np.zeros(d - 1)]
    assert float(spectral.spectral_entropy(rank1)) == 0.0
    assert float(spectral.effective_rank(rank1)) == pytest.approx(1.0)
    assert float(spectral.participation_ratio(rank1)) == pytest.approx(1.0)
    # embeddings: orthonormal rows -> identity spectrum; identical rows -> rank one
    assert float(spectral.effective_rank(np.eye(d))) == pytest.approx(d, rel=1e-12)
    assert float(spectral.effective_rank(np.tile([[1.0, 2.0, 3.0]], (10, 1)))) == pytest.approx(1.0, abs=1e-9)


def test_vendi_readme_example_and_cosine_kernel(rng):
    s = np.array([0.0, 0.0, 10.0, 10.0, 20.0, 20.0])
    k = np.exp(-np.abs(s[:, None] - s[None, :]))
    assert float(spectral.vendi_score_from_kernel(k)) == pytest.approx(3.0, abs=1e-3)
    # cosine kernel via the m x m Gram equals the n x n kernel route, for every order q
    a = healthy(rng, 30, 5)
    v = normalize_rows(a)
    kern = v @ v.T
    for q in (0.5, 1.0, 2.0, np.inf):
        assert float(spectral.vendi_score(a, q=q)) == pytest.approx(float(spectral.vendi_score_from_kernel(kern, q=q)), rel=1e-9)
    p = np.clip(np.linalg.eigvalsh(kern / 30), 0, None)
    p = p / p.sum()
    assert float(spectral.vendi_score(a, q=2.0)) == pytest.approx(1.0 / (p**2).sum(), rel=1e-9)


def test_embedding_input_equals_eigenvalue_input_and_options(rng):
    a = collapsed(rng, 200, 12, rank=3, noise=1e-2)
    v = normalize_rows(a)
    lam = np.linalg.eigvalsh(v.T @ v)[::-1]
    np.testing.assert_allclose(np.asarray(spectral.eigenvalues(a)), np.clip(lam, 0, None), rtol=1e-9, atol=1e-11)
    assert float(spectral.effective_rank(a)) == pytest.approx(float(spectral.effective_rank(lam)), rel=1e-9)
    vc = v - v.mean(0)
    lamc = np.clip(np.linalg.eigvalsh(vc.T @ vc), 0, None)
    assert float(spectral.effective_rank(a, center=True)) == pytest.approx(np.exp(np_entropy(lamc)), rel=1e-9)
    raw = np.linalg.eigvalsh(a.T @ a)[::-1] / 200
    np.testing.assert_allclose(np.asarray(spectral.eigenvalues(a, normalize=False, scale="mean")), raw, rtol=1e-9, atol=1e-12)
    # n < m: the sample-side route pads with zeros
    b = rng.normal(size=(5, 12))
    e = np.asarray(spectral.eigenvalues(b))
    vb = normalize_rows(b)
    np.testing.assert_allclose(e, np.clip(np.linalg.eigvalsh(vb.T @ vb)[::-1], 0, None), atol=1e-10)


def test_bad_spectra_rejected():
    with pytest.raises(ValueError, match=">= 0"):
        spectral.effective_rank(np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="NaN"):
        spectral.spectral_entropy(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="convention"):
        spectral.effective_rank(np.ones(3), convention="rankme")
    with pytest.raises(TypeError, match="floating"):
        spectral.effective_rank(np.ones(3, np.int64))


def test_docstring_examples_run():
    import sigma_jax.bounds
    import sigma_jax.collapse.strategies
    import sigma_jax.core
    import sigma_jax.datasets
    import sigma_jax.gram

    for mod in (spectral, sigma_jax.gram, sigma_jax.core, sigma_jax.datasets, sigma_jax.collapse.strategies):
        globs = {"jax": __import__("jax"), "jnp": jnp, "np": np, **vars(mod)}
        res = doctest.testmod(mod, globs=globs, optionflags=doctest.ELLIPSIS)
        assert res.failed == 0, mod.__name__
        assert res.attempted > 0, mod.__name__
