"""Closed forms of the toy chains: exact expectations for the replace and accumulate strategies.

Each ``*_theory`` function returns values for models t = 0..G with the indexing of
:mod:`sigma_jax.collapse.toy` (row 0 the truth); the formulas are the "Exact oracles" of
``docs/collapse-references.md``, re-indexed so that the real set (source 0) is never tempered.
Strategies with subsampling (``mix``, ``accumulate-subsample``) have no closed form here and raise.
"""

from __future__ import annotations

import math

import numpy as np

from sigma_jax.collapse.strategies import Strategy
from sigma_jax.collapse.toy._checks import (_check_estimator, _check_exact_strategy, _check_int, _check_probs,
                                            _check_temperature)
from sigma_jax.collapse.toy.counts import strategy_counts

__all__ = [
    "gaussian_variance_theory",
    "gaussian_marginal_variance_theory",
    "gaussian_logdet_theory",
    "gaussian_eigenvalue_rates",
    "wishart_logdet_offset",
    "collision_probability_theory",
    "expected_support_theory",
    "rare_token_survival_theory",
    "temperature_recursion_theory",
    "regression_error_theory",
]


def _digamma(x):
    from scipy.special import digamma

    return digamma(x)


def _weights_matrix(strategy: Strategy, n_generations: int) -> np.ndarray:
    """(G + 1, G) normalised source weights of models 1..G (row 0 unused)."""
    c = strategy_counts(strategy, n_generations, 1)
    w = np.zeros((n_generations + 1, n_generations))
    w[1:] = c / c.sum(1, keepdims=True)
    return w


def _pooled_recursion(strategy, n_generations: int, m0_sq: float, noise_fn):
    """Second moments of linearly pooled fits (replace / accumulate, full sources).

    Sources ``Q_l`` are drawn from model l with ``E[Q_l | past] = m_l`` (the model's mean object) and
    ``E<Q_l, Q_l> = noise_fn(l, E<m_l, m_l>)``; model ``t = sum_j W[t, j] Q_j``.  Returns
    ``E<m_t, m_t>`` for t = 0..G and the source Gram ``A[k, l] = E<Q_k, Q_l>``.
    """
    w = _weights_matrix(strategy, n_generations)
    a = np.zeros((n_generations, n_generations))
    msq = np.zeros(n_generations + 1)
    msq[0] = m0_sq
    for l in range(n_generations):
        for k in range(l):  # E<Q_k, Q_l> = E<Q_k, m_l> = sum_j W[l, j] E<Q_k, Q_j>
            a[k, l] = a[l, k] = w[l, :l] @ a[k, :l]
        a[l, l] = noise_fn(l, msq[l])
        wl = w[l + 1, : l + 1]
        msq[l + 1] = wl @ a[: l + 1, : l + 1] @ wl
    return msq, a, w


def _gaussian_moments(n_generations: int, m: int, unbiased: bool, tau2: float, s: Strategy):
    """Exact ``v_t = E[sigma_t^2]`` and ``E[mu_t^2]`` (per coordinate), t = 0..G, replace / accumulate.

    Source l's mean ``a_l`` has ``E[a_l | model l] = mu_l`` and ``E[a_l^2] = E[mu_l^2] + tau_l^2 v_l / M``;
    its mean square ``b_l`` has ``E[b_l] = tau_l^2 v_l + E[mu_l^2]``.  Model t pools them with weights
    ``W[t]``: ``mu_t = sum W a``, ``sigma_t^2 = (sum W b - mu_t^2) * (N_t / (N_t - 1) if unbiased)``.
    """
    taus = np.array([1.0] + [tau2] * n_generations)
    w = _weights_matrix(s, n_generations)
    v = np.zeros(n_generations + 1)
    v[0] = 1.0
    a = np.zeros((n_generations, n_generations))
    msq = np.zeros(n_generations + 1)
    for l in range(n_generations):
        for k in range(l):
            a[k, l] = a[l, k] = w[l, :l] @ a[k, :l]
        a[l, l] = msq[l] + taus[l] * v[l] / m
        wl = w[l + 1, : l + 1]
        msq[l + 1] = wl @ a[: l + 1, : l + 1] @ wl
        second = wl @ (taus[: l + 1] * v[: l + 1] + msq[: l + 1])
        n_pool = m * (l + 1) if s.name == "accumulate" else m
        v[l + 1] = (second - msq[l + 1]) * (n_pool / (n_pool - 1) if unbiased else 1.0)
    return v, msq, taus


def gaussian_variance_theory(n_generations: int, n_samples: int, *, estimator: str = "mle",
                             temperature: float = 1.0, strategy="replace") -> np.ndarray:
    """Exact ``E[sigma_t^2] / sigma_0^2`` for t = 0..G (also ``E[Sigma_t] = v_t Sigma_0`` in any dim).

    Replace, MLE: ``v_t = r^t tau^(2(t-1))`` for t >= 1 with r = (M - 1)/M (the real set is untempered;
    tempering the truth as well gives the textbook ``(tau^2 r)^t``).  Unbiased: ``v_t = tau^(2(t-1))``
    (a martingale at tau = 1).  Accumulate: the exact second-moment recursion of the pooled fit
    (sources' means and mean squares are linear in earlier sources), no closed form in t.

    Returns:
        (G + 1,) float64.

    Example:
        >>> gaussian_variance_theory(3, 10).round(3).tolist()
        [1.0, 0.9, 0.81, 0.729]
    """
    n_generations = _check_int(n_generations, "n_generations", 1)
    m = _check_int(n_samples, "n_samples", 2)
    unbiased = _check_estimator(estimator)
    tau2 = _check_temperature(temperature) ** 2
    s = _check_exact_strategy(strategy)
    return _gaussian_moments(n_generations, m, unbiased, tau2, s)[0]


def gaussian_marginal_variance_theory(n_generations: int, n_samples: int, *, estimator: str = "mle",
                                      temperature: float = 1.0, strategy="replace") -> np.ndarray:
    """Exact variance of one draw from model t, ``E[mu_t^2] + tau_t^2 E[sigma_t^2]`` (tau_0 = 1), t = 0..G.

    Replace, unbiased, tau = 1: ``1 + t/M``.

    Example:
        >>> gaussian_marginal_variance_theory(2, 10, estimator="unbiased").round(3).tolist()
        [1.0, 1.1, 1.2]
    """
    n_generations = _check_int(n_generations, "n_generations", 1)
    m = _check_int(n_samples, "n_samples", 2)
    unbiased = _check_estimator(estimator)
    tau2 = _check_temperature(temperature) ** 2
    s = _check_exact_strategy(strategy)
    v, msq, taus = _gaussian_moments(n_generations, m, unbiased, tau2, s)
    return msq + taus * v


def gaussian_eigenvalue_rates(n_samples: int, dim: int, *, estimator: str = "mle") -> np.ndarray:
    """Per-generation drift of ``E[log det Sigma]`` split into Bartlett terms: ``psi((M - j)/2) + log(2/M')``.

    ``M' = M`` (MLE) or ``M - 1`` (unbiased), j = 1..d.  Their sum is the exact drift of
    ``E[log det Sigma_t]`` per generation (replace); ``(1/t) log lambda_j(Sigma_t)`` converges to the
    j-th term almost surely, so eigenvalues spread apart and the effective rank falls.

    Returns:
        (d,) float64, decreasing.

    Example:
        >>> float(gaussian_eigenvalue_rates(64, 32).sum().round(2))
        -10.87
    """
    m = _check_int(n_samples, "n_samples", 2)
    d = _check_int(dim, "dim", 1)
    if m <= d:
        raise ValueError(f"`n_samples` ({m}) must exceed `dim` ({d}).")
    denom = m - 1 if _check_estimator(estimator) else m
    j = np.arange(1, d + 1)
    return _digamma((m - j) / 2.0) + np.log(2.0 / denom)


def wishart_logdet_offset(n_samples: int, dim: int) -> float:
    """``E[log det Sigma_hat] - log det Sigma`` for the MLE covariance of M Gaussian draws (Bartlett).

    Equals ``sum_j psi((M - j)/2) + d log(2/M)``: the one-generation drift of :func:`gaussian_logdet_theory`,
    and the offset between SIGMA's ``u_cov`` of centred draws from a model and that model's log det.

    Example:
        >>> round(wishart_logdet_offset(64, 32), 2)  # the docs' -10.87 per generation
        -10.87
    """
    return float(gaussian_eigenvalue_rates(n_samples, dim).sum())


def gaussian_logdet_theory(n_generations: int, n_samples: int, dim: int = 1, *, estimator: str = "mle",
                           temperature: float = 1.0) -> np.ndarray:
    """Exact ``E[log det Sigma_t] - log det Sigma_0`` for t = 0..G, replace strategy.

    ``t [sum_{j=1..d} psi((M - j)/2) + d log(2/M')] + (t - 1)_+ d log tau^2`` with M' = M (MLE) or M - 1
    (unbiased); d = 1 gives ``E[log sigma_t^2]``.  (d = 32, M = 64: -10.87 per generation.)

    Returns:
        (G + 1,) float64.

    Example:
        >>> gaussian_logdet_theory(2, 64, 32).round(2).tolist()
        [0.0, -10.87, -21.75]
    """
    n_generations = _check_int(n_generations, "n_generations", 1)
    rate = gaussian_eigenvalue_rates(n_samples, dim, estimator=estimator).sum()
    t = np.arange(n_generations + 1, dtype=np.float64)
    tau2 = _check_temperature(temperature) ** 2
    return t * rate + np.maximum(t - 1, 0) * dim * math.log(tau2)


def collision_probability_theory(p0, n_generations: int, n_samples: int, *, strategy="replace") -> np.ndarray:
    """Exact ``E[sum_k p_t[k]^2]`` for t = 0..G (temperature 1, no truncation).

    Replace: ``1 - (1 - 1/n)^t (1 - S_0)`` with ``S_0 = sum p0^2``.  Accumulate: the exact recursion on
    ``E<Q_k, Q_l>`` of the per-source frequencies (``E<Q, Q | m> = (1 - 1/n) <m, m> + 1/n``).

    Returns:
        (G + 1,) float64.

    Example:
        >>> collision_probability_theory([0.5, 0.5], 2, 10).round(4).tolist()
        [0.5, 0.55, 0.595]
    """
    p = _check_probs(p0)
    n_generations = _check_int(n_generations, "n_generations", 1)
    n = _check_int(n_samples, "n_samples", 1)
    s = _check_exact_strategy(strategy)
    msq, _, _ = _pooled_recursion(s, n_generations, float(p @ p), lambda l, m2: (1 - 1 / n) * m2 + 1 / n)
    return msq


def expected_support_theory(p, n_samples: int) -> float:
    """One step: ``E[#tokens seen in n draws from p] = sum_k [1 - (1 - p_k)^n]``.

    Example:
        >>> round(expected_support_theory([0.5, 0.5], 1), 3)
        1.0
    """
    p = _check_probs(p)
    n = _check_int(n_samples, "n_samples", 1)
    return float(np.sum(1.0 - (1.0 - p) ** n))


def rare_token_survival_theory(count: int, n_generations: int, n_samples: int | None = None, *,
                               strategy="replace") -> np.ndarray:
    """P(a token with ``p0 = count / n`` still has probability > 0 in model t), t = 0..G.

    ``n_samples=None``: the large-n (Poisson branching) law ``1 - q_t^count``, ``q_0 = 0``,
    ``q_t = exp(q_{t-1} - 1)`` (count 1: 0.632, 0.469, 0.268, 0.158 at t = 1, 2, 5, 10).  With
    ``n_samples`` the exact finite-n Wright-Fisher answer (binomial transition matrix, n <= 20000).
    Accumulate: the token lives for ever iff the real set contains it, ``1 - (1 - count/n)^n``
    (``1 - e^-count`` at large n) for t >= 1.

    Returns:
        (G + 1,) float64.

    Example:
        >>> rare_token_survival_theory(1, 2).round(3).tolist()
        [1.0, 0.632, 0.469]
    """
    c = _check_int(count, "count", 1)
    n_generations = _check_int(n_generations, "n_generations", 1)
    s = _check_exact_strategy(strategy)
    out = np.ones(n_generations + 1)
    if n_samples is None:
        if s.name == "accumulate":
            out[1:] = 1.0 - math.exp(-c)
            return out
        q = 0.0
        for t in range(1, n_generations + 1):
            q = math.exp(q - 1.0)
            out[t] = 1.0 - q ** c
        return out
    n = _check_int(n_samples, "n_samples", 1)
    if c > n:
        raise ValueError(f"`count` ({c}) must not exceed `n_samples` ({n}).")
    if s.name == "accumulate":
        out[1:] = 1.0 - (1.0 - c / n) ** n
        return out
    if n > 20000:
        raise ValueError(f"exact finite-n survival needs an (n+1)^2 matrix; n = {n} is too large, pass n_samples=None.")
    from scipy.stats import binom

    states = np.arange(n + 1)
    trans = binom.pmf(states[None, :], n, states[:, None] / n)  # (from, to)
    dist = np.zeros(n + 1)
    dist[c] = 1.0
    for t in range(1, n_generations + 1):
        dist = dist @ trans
        out[t] = 1.0 - dist[0]
    return out


def temperature_recursion_theory(p0, n_generations: int, temperature: float) -> np.ndarray:
    """Infinite-sample limit of the tempered chain: ``p_t = softmax(log p0 / tau^(t - 1))`` for t >= 1.

    (Model 1 reproduces ``p0`` because the real set is untempered; each later model tempers once more.)

    Returns:
        (G + 1, V) float64.

    Example:
        >>> temperature_recursion_theory([0.75, 0.25], 2, 0.5).round(3).tolist()
        [[0.75, 0.25], [0.75, 0.25], [0.9, 0.1]]
    """
    p = _check_probs(p0)
    n_generations = _check_int(n_generations, "n_generations", 1)
    tau = _check_temperature(temperature)
    out = np.zeros((n_generations + 1, p.size))
    out[0] = p
    logp = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), -np.inf)
    for t in range(1, n_generations + 1):
        z = logp / tau ** (t - 1)
        z = np.exp(z - z[np.isfinite(z)].max())
        out[t] = z / z.sum()
    return out


def regression_error_theory(n_generations: int, *, n_samples: int, dim: int, noise: float = 1.0,
                            strategy="replace") -> np.ndarray:
    """Exact ``E||w_t - w*||^2`` of linear-regression relabelling (Gaussian design), t = 0..G.

    One OLS fit adds ``s^2 E tr (X^T X)^-1 = s^2 d / (T - d - 1)``.  Replace: ``t s^2 d/(T - d - 1)``
    (linear growth).  Accumulate: ``s^2 d/(T - d - 1) sum_{i<=t} 1/i^2`` (bounded by pi^2/6 times one
    fit's error; Gerstgrasser et al. 2024).

    Returns:
        (G + 1,) float64.

    Example:
        >>> regression_error_theory(2, n_samples=12, dim=1, strategy="accumulate").round(3).tolist()
        [0.0, 0.1, 0.125]
    """
    n_generations = _check_int(n_generations, "n_generations", 1)
    t_ = _check_int(n_samples, "n_samples", 1)
    d = _check_int(dim, "dim", 1)
    if t_ <= d + 1:
        raise ValueError(f"`n_samples` (T = {t_}) must exceed `dim` + 1 = {d + 1}.")
    s = _check_exact_strategy(strategy)
    one = float(noise) ** 2 * d / (t_ - d - 1)
    msq, _, _ = _pooled_recursion(s, n_generations, 0.0, lambda l, m2: m2 + one)
    return msq
