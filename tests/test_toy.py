"""Toy collapse chains against their exact answers (sigma_jax.collapse.toy).

Every statistical check compares a Monte Carlo mean over independent chains with the closed form and
requires |mean - theory| <= 3 standard errors, the standard error being the chains' sample standard
deviation / sqrt(n_chains).  Keys are fixed; sizes are chosen so that each simulator family compiles
once (strategies, estimators and temperatures are traced arguments) and the file runs in seconds.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sigma_jax.collapse import strategies, toy

K_SE = 3.0


def assert_within_se(sims, theory, *, k=K_SE, what=""):
    """sims: (G + 1, C) per-chain values; theory: (G + 1,).  Rows with zero spread must match exactly."""
    sims = np.asarray(sims, np.float64)
    theory = np.asarray(theory, np.float64)
    mean = sims.mean(axis=1)
    se = sims.std(axis=1, ddof=1) / math.sqrt(sims.shape[1])
    for t, (m, s, th) in enumerate(zip(mean, se, theory)):
        if s < 1e-9:  # deterministic row (generation 0 = the truth)
            assert m == pytest.approx(th, rel=1e-6, abs=1e-6), f"{what} generation {t}: {m} != {th} (no spread)"
        else:
            assert abs(m - th) <= k * s, f"{what} generation {t}: mean {m:.6g}, theory {th:.6g}, SE {s:.3g} ({(m - th) / s:+.2f} SE)"


# --------------------------------------------------------------------------- shared simulations (one compile each)

G1, M1, C1 = 8, 10, 20000  # 1-D Gaussian
GD, MD, CD, D = 5, 16, 2000, 4  # d-dim Gaussian
GC, NC, CC = 8, 200, 4000  # categorical
P0 = np.array([1.0 / NC, 0.5, 0.3, 0.195])  # token 0 is "seen once" at n = 200


@pytest.fixture(scope="module")
def gauss1():
    runs = {}
    for i, (name, kw) in enumerate({
        "replace": {},
        "unbiased": {"estimator": "unbiased"},
        "temperature": {"temperature": 0.8},
        "accumulate": {"strategy": "accumulate"},
    }.items()):
        runs[name] = toy.gaussian_run(jax.random.key(100 + i), n_generations=G1, n_samples=M1, n_chains=C1,
                                      return_samples=True, **kw)
    return runs


@pytest.fixture(scope="module")
def gauss_d():
    return {s: toy.gaussian_run(jax.random.key(200 + i), n_generations=GD, n_samples=MD, n_chains=CD, dim=D,
                                strategy=s, return_samples=True)
            for i, s in enumerate(["replace", "accumulate"])}


@pytest.fixture(scope="module")
def cat():
    return {s: np.asarray(toy.categorical_chain(jax.random.key(300 + i), P0, n_generations=GC, n_samples=NC,
                                                n_chains=CC, strategy=s), np.float64)
            for i, s in enumerate(["replace", "accumulate"])}


# --------------------------------------------------------------------------- strategies inside jit


_selection_weights = jax.jit(toy.counts._selection_weights, static_argnums=(2, 3))


@pytest.mark.parametrize("name", strategies.STRATEGIES)
def test_selection_weights_take_source_counts(name):
    n, g_max = 7, 5
    counts = toy.strategy_counts(name, g_max, n)
    for g in range(g_max):
        np.testing.assert_array_equal(counts[g, : g + 1], strategies.source_counts(name, g, [n] * (g + 1)))
        assert not counts[g, g + 1:].any()
        sub = toy.counts._needs_subsample(counts, n)
        w = np.asarray(_selection_weights(jax.random.key(g), jnp.asarray(counts[g]), n, sub))
        np.testing.assert_array_equal(w.sum(axis=1), counts[g])  # every source contributes exactly its count
        assert set(np.unique(w)) <= {0.0, 1.0}  # sizes never exceed a source: no item used twice


def test_strategy_counts_shapes():
    assert toy.strategy_counts("replace", 3, 5).tolist() == [[5, 0, 0], [0, 5, 0], [0, 0, 5]]
    assert toy.strategy_counts("accumulate", 3, 5).tolist() == [[5, 0, 0], [5, 5, 0], [5, 5, 5]]
    assert toy.strategy_counts("mix", 2, 10).tolist() == [[10, 0], [1, 9]]


# --------------------------------------------------------------------------- 1-D Gaussian


def test_gaussian_chain_shapes_and_truth():
    v = toy.gaussian_chain(jax.random.key(0), n_generations=G1, n_samples=M1, n_chains=C1)
    assert v.shape == (G1 + 1, C1)
    assert np.all(np.asarray(v[0]) == 1.0)
    assert np.all(np.asarray(v) > 0)


def test_gaussian_mle_variance_decays_as_r_to_the_n(gauss1):
    run = gauss1["replace"]
    var = run.covariances[..., 0, 0]
    assert_within_se(var, toy.gaussian_variance_theory(G1, M1), what="E sigma^2")
    assert_within_se(np.log(np.asarray(var, np.float64)), toy.gaussian_logdet_theory(G1, M1), what="E log sigma^2")
    r = (M1 - 1) / M1
    np.testing.assert_allclose(toy.gaussian_variance_theory(G1, M1), r ** np.arange(G1 + 1), rtol=1e-12)


def test_gaussian_unbiased_is_martingale_and_marginal_variance_grows(gauss1):
    run = gauss1["unbiased"]
    assert_within_se(run.covariances[..., 0, 0], np.ones(G1 + 1), what="unbiased E sigma^2")
    x2 = np.asarray(run.samples[..., 0], np.float64) ** 2  # (G + 1, C, M): draws from model t
    theory = toy.gaussian_marginal_variance_theory(G1, M1, estimator="unbiased")
    np.testing.assert_allclose(theory, 1.0 + np.arange(G1 + 1) / M1, rtol=1e-12)
    assert_within_se(x2[:, :, 0], theory, what="marginal variance")  # one draw per chain: independent


def test_gaussian_temperature(gauss1):
    tau, r = 0.8, (M1 - 1) / M1
    t = np.arange(G1 + 1)
    theory = toy.gaussian_variance_theory(G1, M1, temperature=tau)
    np.testing.assert_allclose(theory[1:], r ** t[1:] * tau ** (2 * (t[1:] - 1)), rtol=1e-12)
    assert_within_se(gauss1["temperature"].covariances[..., 0, 0], theory, what="tempered E sigma^2")


def test_gaussian_accumulate_variance(gauss1):
    theory = toy.gaussian_variance_theory(G1, M1, strategy="accumulate")
    assert_within_se(gauss1["accumulate"].covariances[..., 0, 0], theory, what="accumulate E sigma^2")
    assert theory[-1] > 0.8  # accumulation keeps the variance far from 0 (replace: 0.9^8 = 0.43)


def test_gaussian_run_is_reproducible_with_and_without_samples():
    a = toy.gaussian_run(jax.random.key(100), n_generations=G1, n_samples=M1, n_chains=C1)
    b = toy.gaussian_run(jax.random.key(100), n_generations=G1, n_samples=M1, n_chains=C1, return_samples=True)
    np.testing.assert_array_equal(np.asarray(a.covariances), np.asarray(b.covariances))
    assert a.samples is None and b.samples.shape == (G1 + 1, C1, M1, 1)


# --------------------------------------------------------------------------- d-dim Gaussian


def test_gaussian_logdet_drift(gauss_d):
    covs = np.asarray(gauss_d["replace"].covariances, np.float64)
    logdet = np.linalg.slogdet(covs)[1]
    assert_within_se(logdet, toy.gaussian_logdet_theory(GD, MD, D), what="E log det Sigma")
    r = (MD - 1) / MD
    tr = np.trace(covs, axis1=-2, axis2=-1) / D
    assert_within_se(tr, r ** np.arange(GD + 1), what="E tr Sigma / d")
    acc = np.trace(np.asarray(gauss_d["accumulate"].covariances, np.float64), axis1=-2, axis2=-1) / D
    assert_within_se(acc, toy.gaussian_variance_theory(GD, MD, strategy="accumulate"), what="accumulate E tr Sigma / d")


def test_logdet_theory_reference_numbers():
    # docs/collapse-references.md: d = 32, M = 64: -10.87 per generation.
    assert toy.gaussian_logdet_theory(3, 64, 32)[1] == pytest.approx(-10.87, abs=0.005)
    from scipy.special import digamma

    m = 9
    assert toy.gaussian_logdet_theory(4, m)[4] == pytest.approx(4 * (digamma((m - 1) / 2) + math.log(2 / m)), rel=1e-12)
    rates = toy.gaussian_eigenvalue_rates(64, 32)
    assert np.all(np.diff(rates) < 0)


# --------------------------------------------------------------------------- categorical


def test_categorical_martingale_and_support(cat):
    for s, p in cat.items():
        assert p.shape == (GC + 1, CC, P0.size)
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
        for k in range(P0.size):
            assert_within_se(p[:, :, k], np.full(GC + 1, P0[k]), what=f"{s} E p[{k}]")
        alive = p > 0
        assert not np.any(alive[1:] & ~alive[:-1])  # support never grows


def test_collision_probability_law(cat):
    for s, p in cat.items():
        theory = toy.collision_probability_theory(P0, GC, NC, strategy=s)
        assert_within_se((p ** 2).sum(-1), theory, what=f"{s} collision")
    s0 = float(P0 @ P0)
    t = np.arange(GC + 1)
    np.testing.assert_allclose(toy.collision_probability_theory(P0, GC, NC), 1 - (1 - 1 / NC) ** t * (1 - s0), rtol=1e-12)


def test_rare_token_survival(cat):
    alive = (cat["replace"][:, :, 0] > 0).astype(np.float64)
    assert_within_se(alive, toy.rare_token_survival_theory(1, GC, NC), what="rare token (exact, n = 200)")
    assert_within_se(alive, toy.rare_token_survival_theory(1, GC), what="rare token (branching law)")
    acc = (cat["accumulate"][:, :, 0] > 0).astype(np.float64)
    assert_within_se(acc, toy.rare_token_survival_theory(1, GC, NC, strategy="accumulate"), what="rare token, accumulate")


def test_rare_token_reference_numbers():
    s = toy.rare_token_survival_theory(1, 10)
    np.testing.assert_allclose(s[[1, 2, 5, 10]], [0.632, 0.469, 0.268, 0.158], atol=6e-4)
    # The exact Wright-Fisher answer approaches the branching law as n grows.
    gap = np.max(np.abs(toy.rare_token_survival_theory(2, 10, 1000) - toy.rare_token_survival_theory(2, 10)))
    assert 0 < gap < 1e-3
    assert toy.expected_support_theory(P0, NC) == pytest.approx(np.sum(1 - (1 - P0) ** NC))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _sampling(p, temperature, top_k, top_p):
    """sampling_distribution over the leading (G, C) axes of a (G, C, V) array."""
    return jax.vmap(jax.vmap(lambda r: toy.sampling_distribution(r, temperature, top_k, top_p)))(p)


def _one_step_residual(p, temperature=1.0, top_k=None, top_p=None):
    """(G, C, V) residuals p_{t+1} - q(p_t), q = the sampling distribution (t >= 1) or p0 (t = 0).

    Given model t, model t+1 (replace) is the mean of n draws from q(p_t), so every residual has
    conditional mean exactly 0 whatever the temperature / truncation."""
    q = _sampling(jnp.asarray(p[1:-1]), temperature, top_k, top_p)
    q = np.concatenate([p[:1], np.asarray(q, np.float64)], axis=0)
    return p[1:] - q


def test_tempered_chain_is_unbiased_one_step():
    p = np.asarray(toy.categorical_chain(jax.random.key(8), P0, n_generations=GC, n_samples=NC, n_chains=CC,
                                         temperature=0.7), np.float64)  # same compiled program as `cat`
    res = _one_step_residual(p, 0.7)
    for k in range(P0.size):
        assert_within_se(res[:, :, k], np.zeros(GC), what=f"tempered residual p[{k}]")
    # temperature < 1 sharpens: the top token gains mass on average, the rare one is lost faster
    assert p[-1, :, 1].mean() > P0[1] + 0.2 and (p[-1, :, 0] > 0).mean() < 0.1


def test_mix_with_truncation_one_step():
    # mix: model t+1 = 30% of the real set (model 1's frequencies) + 70% of n draws from q(model t), both
    # subsampled without replacement, so E[p_{t+1} | past] = 0.3 p_1 + 0.7 q(p_t) exactly (t >= 1).
    g, c, tk, tp = 4, 1000, 3, 0.75
    p = np.asarray(toy.categorical_chain(jax.random.key(9), P0, n_generations=g, n_samples=NC, n_chains=c,
                                         top_k=tk, top_p=tp, strategy="mix:0.3"), np.float64)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    q = np.asarray(_sampling(jnp.asarray(p[1:-1]), 1.0, tk, tp), np.float64)  # (g - 1, C, V)
    res = p[2:] - (0.3 * p[1:2] + 0.7 * q)
    for k in range(P0.size):
        assert_within_se(res[:, :, k], np.zeros(g - 1), what=f"mix + truncation residual p[{k}]")
    # a token of model t+1 comes from the real set or from the truncated support of model t
    assert not np.any((p[2:] > 0) & (p[1:2] == 0) & (q == 0))
    assert np.all(p[2:, :, 1] > 0)  # the top token is in every real subsample
    assert np.all((q > 0).sum(-1) <= tk) and np.mean((q > 0).sum(-1)) < np.mean((p[1:-1] > 0).sum(-1))


def test_sampling_distribution_temperature_topk_topp():
    p = jnp.array([0.5, 0.3, 0.15, 0.05, 0.0])
    q = np.asarray(toy.sampling_distribution(p, 0.5), np.float64)
    ref = np.array([0.5, 0.3, 0.15, 0.05, 0.0]) ** 2
    np.testing.assert_allclose(q, ref / ref.sum(), rtol=1e-5)
    q = np.asarray(toy.sampling_distribution(p, top_k=2), np.float64)
    np.testing.assert_allclose(q, [0.625, 0.375, 0, 0, 0], rtol=1e-5)
    q = np.asarray(toy.sampling_distribution(p, top_p=0.9), np.float64)  # 0.5 + 0.3 < 0.9 <= 0.95
    np.testing.assert_allclose(q, np.array([0.5, 0.3, 0.15, 0, 0]) / 0.95, rtol=1e-5)
    # the infinite-sample tempered chain: model t+1 = sampling_distribution(model t)
    th = toy.temperature_recursion_theory(np.asarray(p), 4, 0.7)
    cur = np.asarray(p)
    for t in range(2, 5):
        cur = np.asarray(toy.sampling_distribution(jnp.asarray(cur), 0.7), np.float64)
        np.testing.assert_allclose(cur, th[t], rtol=2e-5, atol=1e-7)


# --------------------------------------------------------------------------- regression


def test_regression_replace_vs_accumulate():
    g, t_, d = 8, 20, 4
    for i, s in enumerate(["replace", "accumulate"]):
        e = toy.regression_chain(jax.random.key(400 + i), n_generations=g, n_samples=t_, n_chains=4000, dim=d,
                                 noise=0.5, strategy=s)
        assert_within_se(e, toy.regression_error_theory(g, n_samples=t_, dim=d, noise=0.5, strategy=s),
                         what=f"{s} regression error")
    one = 0.25 * d / (t_ - d - 1)
    n = np.arange(g + 1)
    np.testing.assert_allclose(toy.regression_error_theory(g, n_samples=t_, dim=d, noise=0.5), n * one, rtol=1e-12)
    acc = toy.regression_error_theory(g, n_samples=t_, dim=d, noise=0.5, strategy="accumulate")
    np.testing.assert_allclose(acc, one * np.concatenate([[0], np.cumsum(1 / n[1:] ** 2)]), rtol=1e-12)


# --------------------------------------------------------------------------- argument errors


def test_bad_arguments():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="n_samples"):
        toy.gaussian_chain(key, n_generations=2, n_samples=4, n_chains=2, dim=4)
    with pytest.raises(ValueError, match="estimator"):
        toy.gaussian_chain(key, n_generations=2, n_samples=4, n_chains=2, estimator="median")
    with pytest.raises(ValueError, match="temperature"):
        toy.categorical_chain(key, P0, n_generations=2, n_samples=4, n_chains=2, temperature=0.0)
    with pytest.raises(ValueError, match="p0"):
        toy.categorical_chain(key, [0.5, 0.6], n_generations=2, n_samples=4, n_chains=2)
    with pytest.raises(ValueError, match="top_k"):
        toy.categorical_chain(key, P0, n_generations=2, n_samples=4, n_chains=2, top_k=9)
    with pytest.raises(ValueError, match="strateg"):
        toy.gaussian_variance_theory(3, 10, strategy="mix")
    with pytest.raises(ValueError, match="unknown strategy"):
        toy.strategy_counts("keep", 3, 10)
    with pytest.raises(TypeError, match="n_generations"):
        toy.gaussian_chain(key, n_generations=2.5, n_samples=4, n_chains=2)


# --------------------------------------------------------------------------- embedding view (SIGMA on Gaussian draws)


@pytest.fixture(scope="module")
def views():
    return {s: toy.embedding_view(jax.random.key(500 + i), n_generations=GD, n_samples=MD, n_chains=CD, dim=D,
                                  strategy=s)
            for i, s in enumerate(["replace", "accumulate"])}


def test_embedding_view_u_cov_is_logdet_of_next_fit(views):
    # Centred draws of model t are model t+1's training set (replace), so G_A / M = Sigma_{t+1} (MLE) and
    # u_cov = logdet(G_A + delta I) - d log M = logdet(Sigma_{t+1} + delta/M I) exactly.
    ev = views["replace"]
    covs = np.asarray(ev.run.covariances, np.float64)
    ref = np.linalg.slogdet(covs[1:] + 1e-3 / MD * np.eye(D))[1]
    np.testing.assert_allclose(np.asarray(ev.u_cov)[:-1], ref, atol=2e-4)  # float32 draws and fits
    np.testing.assert_allclose(np.asarray(ev.logdet_model), np.linalg.slogdet(covs)[1], atol=1e-6)


def test_sigma_u_cov_drift_tracks_logdet_law(views):
    ev = views["replace"]
    rate = toy.wishart_logdet_offset(MD, D)
    t = np.arange(GD + 1)
    np.testing.assert_allclose(ev.theory_u_cov, (t + 1) * rate, rtol=1e-12)
    assert_within_se(ev.u_cov, ev.theory_u_cov, what="E u_cov")
    assert_within_se(ev.drift, t * rate, what="E dU (SIGMA drift)")
    # Any strategy: u_cov of model t's draws = log det Sigma_t + the Bartlett offset, on average.
    for s, v in views.items():
        assert_within_se(np.asarray(v.u_cov) - np.asarray(v.logdet_model), np.full(GD + 1, v.offset),
                         what=f"{s} u_cov - log det Sigma")
    # accumulate drifts far less than replace
    assert float(np.mean(views["accumulate"].drift[-1])) > 0.5 * float(np.mean(ev.drift[-1]))


def test_embedding_view_effective_rank_falls_under_replace(views):
    er = np.asarray(views["replace"].model_effective_rank).mean(1)
    assert er[0] == pytest.approx(D)
    assert np.all(np.diff(er) < 0)
    emp = np.asarray(views["replace"].effective_rank).mean(1)
    assert np.all(np.diff(emp) < 0) and np.all(emp <= D + 1e-9)
