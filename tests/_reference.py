"""Float64 NumPy reference implementations used by the tests (independent of sigma_jax)."""

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
    c = (g + delta * np.eye(m)) / n_a
    q = np.einsum("ij,ji->i", va, np.linalg.solve(c, va.T))
    frac = 1.0 / n_a - 1.0 / n_total
    sd = q.std(ddof=1) if n_a > 1 else 0.0
    return dict(logdet=s, u_cov=s - m * np.log(n_a), g_kf=up - m * np.log(beta + delta), lower=s, upper=up,
                ci_halfwidth=z * sd * np.sqrt(frac), bias=-0.5 * frac * np.mean(q**2 - 2 * q + m) if frac > 0 else 0.0,
                sd_q=sd if frac > 0 else 0.0, beta=beta)


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
