"""Deterministic inequalities hold on random PSD matrices (hypothesis) and are tight where they should be."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sigma_jax as sj
from sigma_jax import bounds

TOL = 1e-9


@st.composite
def psd_matrices(draw):
    """Random PSD matrices with a chosen spectrum: rank-deficient, spiked, flat, huge dynamic range."""
    m = draw(st.integers(2, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["flat", "power", "rankdef", "spiked", "range"]))
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(m, m)))
    lam = {
        "flat": np.ones(m),
        "power": np.arange(1, m + 1) ** -rng.uniform(0.2, 3.0),
        "rankdef": np.r_[rng.uniform(0.1, 5, size=max(1, m // 2)), np.zeros(m - max(1, m // 2))],
        "spiked": np.r_[rng.uniform(10, 100), rng.uniform(0.01, 1, size=m - 1)],
        "range": 10.0 ** rng.uniform(-6, 3, size=m),
    }[kind] * rng.uniform(0.01, 100)
    return (q * lam) @ q.T, np.sort(lam)


@settings(max_examples=150, deadline=None)
@given(psd_matrices(), st.sampled_from([0.0, 1e-3, 1.0]))
def test_logdet_upper_bounds(mat_lam, delta):
    mat, lam = mat_lam
    if delta == 0.0 and lam.min() <= 0:
        delta = 1e-3
    true = np.log(lam + delta).sum()
    scale = TOL * (1 + abs(true))
    assert true <= float(bounds.hadamard(mat, delta=delta)) + scale
    assert true <= float(bounds.trace_amgm(mat, delta=delta)) + scale


@settings(max_examples=150, deadline=None)
@given(psd_matrices())
def test_eigenvalue_brackets_contain_truth(mat_lam):
    mat, lam = mat_lam
    tol = TOL * (1 + np.abs(lam).max())
    for br in (bounds.wolkowicz_styan(mat), bounds.gershgorin(mat)):
        assert float(br.lambda_max.lower) - tol <= lam.max() <= float(br.lambda_max.upper) + tol
        assert float(br.lambda_min.lower) - tol <= lam.min() <= float(br.lambda_min.upper) + tol
    m = mat.shape[0]
    for k in (1, m // 2 or 1, m):
        kf = bounds.ky_fan(mat, k)
        top = np.sort(lam)[::-1][:k].sum()
        assert float(kf.lower) - tol * k <= top <= float(kf.upper) + tol * k


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(3, 10), st.floats(0.05, 0.95))
def test_sigma_sandwich_contains_full_logdet(seed, m, frac):
    rng = np.random.default_rng(seed)
    n = 6 * m + 20
    a = rng.normal(size=(n, m)) * rng.uniform(0.01, 3, size=m)
    v = a / np.linalg.norm(a, axis=1, keepdims=True)
    idx = rng.choice(n, max(m + 1, int(frac * n)), replace=False)
    ga = v[idx].T @ v[idx]
    full = np.linalg.slogdet(v.T @ v + 1e-3 * np.eye(m))[1]
    br = bounds.sigma_sandwich(ga, n_sub=idx.size, n_total=n)
    assert float(br.lower) - 1e-9 <= full <= float(br.upper) + 1e-9


def test_wolkowicz_styan_closed_form_and_traces():
    mat = np.diag([1.0, 2.0, 3.0])
    ws = bounds.wolkowicz_styan(mat)
    mu, s = 2.0, np.sqrt(14 / 3 - 4)
    assert float(ws.lambda_max.upper) == pytest.approx(mu + s * np.sqrt(2))
    assert float(ws.lambda_min.lower) == pytest.approx(mu - s * np.sqrt(2))
    again = bounds.wolkowicz_styan(trace=6.0, trace_sq=14.0, dim=3)
    assert float(again.lambda_max.lower) == pytest.approx(float(ws.lambda_max.lower))
    # flat spectrum: both brackets collapse to the point mu
    flat = bounds.wolkowicz_styan(np.eye(4) * 2.5)
    assert float(flat.lambda_min.lower) == pytest.approx(2.5) and float(flat.lambda_max.upper) == pytest.approx(2.5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="square"):
        bounds.gershgorin(np.ones((3, 4)))
    with pytest.raises(ValueError, match="`k`"):
        bounds.ky_fan(np.eye(3), 4)
    with pytest.raises(ValueError, match="trace"):
        bounds.wolkowicz_styan()
