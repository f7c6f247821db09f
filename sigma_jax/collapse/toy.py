"""Toy model collapse with exact answers: Gaussian, Wishart, token-frequency and regression chains.

Recursive fitting on simple models has closed-form answers (Shumailov et al. 2024; Gerstgrasser et al.
2024; the "Exact oracles" of ``docs/collapse-references.md``).  This module
simulates many independent chains at once (``jit`` + ``vmap``) and returns the matching closed forms,
so the loop logic and the spectral code can be checked against known truths.

Indexing (the same in every simulator and every ``*_theory`` function):

* **model 0** is the truth (``N(0, 1)``, ``N(0, I_d)``, ``p0``, ``w*``); the real data set
  (source 0) is ``n_samples`` draws from it, *never* tempered or truncated;
* **source k** (``k >= 1``) is ``n_samples`` draws from model ``k`` at the sampling
  ``temperature`` (and ``top_k``/``top_p`` for tokens);
* **model t** (``t >= 1``) is fitted on the training set of strategy generation ``g = t - 1``
  (:func:`sigma_jax.collapse.strategies.source_counts` with sources ``0..t-1``, each of size
  ``n_samples``), so under ``replace`` model ``t`` is fitted on draws from model ``t - 1`` only and
  ``accumulate`` pools the real set and every synthetic set so far.

Returned arrays therefore have ``n_generations + 1`` rows, row 0 being the truth.

Strategies inside ``jit``.  The per-source counts are integers computed on the host
(:func:`strategy_counts`).  Instead of gathering a training set whose size changes with the generation
(``accumulate`` grows), every source keeps its ``n_samples`` items and each item gets an integer
*multiplicity*: ``counts // n`` copies plus one more for the first ``counts % n`` items of a random
permutation (subsampling without replacement, as in Kazdan et al.'s accumulate-subsample).  A fit with
these weights is exactly the fit on the gathered training set, and every generation has the same array
shapes, so one ``lax.scan`` compiles once.

Example:
    >>> import jax
    >>> var = gaussian_chain(jax.random.key(0), n_generations=5, n_samples=10, n_chains=4000)
    >>> var.shape
    (6, 4000)
    >>> bool(abs(var[5].mean() - gaussian_variance_theory(5, 10)[5]) < 0.05)
    True
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sigma_jax.collapse.strategies import Strategy, source_counts

__all__ = [
    "strategy_counts",
    "sampling_distribution",
    "GaussianRun",
    "gaussian_run",
    "gaussian_chain",
    "categorical_chain",
    "regression_chain",
    "gaussian_variance_theory",
    "gaussian_marginal_variance_theory",
    "gaussian_logdet_theory",
    "gaussian_eigenvalue_rates",
    "collision_probability_theory",
    "expected_support_theory",
    "rare_token_survival_theory",
    "temperature_recursion_theory",
    "regression_error_theory",
    "EmbeddingView",
    "embedding_view",
    "wishart_logdet_offset",
]

_EXACT_THEORY = ("replace", "accumulate")


# --------------------------------------------------------------------------- argument checks


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an integer, got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return int(value)


def _check_temperature(temperature) -> float:
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"`temperature` must be a finite number > 0, got {temperature}.")
    return t


def _check_estimator(estimator: str) -> bool:
    if estimator not in ("mle", "unbiased"):
        raise ValueError(f"`estimator` must be 'mle' (divide by M) or 'unbiased' (divide by M - 1), got {estimator!r}.")
    return estimator == "unbiased"


def _check_exact_strategy(strategy) -> Strategy:
    s = Strategy.parse(strategy)
    if s.name not in _EXACT_THEORY:
        raise ValueError(
            f"the closed form is exact only for strategies {_EXACT_THEORY}, got {s.name!r} (its subsampling "
            "adds hypergeometric noise with no closed form here); compare that strategy against simulation only."
        )
    return s


def _check_probs(p0) -> np.ndarray:
    p = np.asarray(p0, dtype=np.float64)
    if p.ndim != 1 or p.size < 2:
        raise ValueError(f"`p0` must be a 1-D probability vector with at least 2 entries, got shape {p.shape}.")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("`p0` must be finite and non-negative.")
    if abs(p.sum() - 1.0) > 1e-5:
        raise ValueError(f"`p0` must sum to 1 (got {p.sum():.6g}); pass `p0 / p0.sum()`.")
    return p / p.sum()


# --------------------------------------------------------------------------- strategies -> counts


def strategy_counts(strategy, n_generations: int, n_samples: int) -> np.ndarray:
    """Host-side integer counts: row ``g`` = items model ``g + 1`` takes from sources ``0..g``.

    Every source has ``n_samples`` items (each synthetic set is as large as the real one), and the
    counts are :func:`~sigma_jax.collapse.strategies.source_counts` with its default totals
    (``n_samples`` for fixed-size strategies, the whole pool for ``accumulate``).

    Returns:
        (n_generations, n_generations) int32 array, zero above the diagonal.

    Example:
        >>> strategy_counts("accumulate-subsample", 3, 10).tolist()
        [[10, 0, 0], [5, 5, 0], [4, 3, 3]]
    """
    n_generations = _check_int(n_generations, "n_generations", 1)
    n_samples = _check_int(n_samples, "n_samples", 1)
    c = np.zeros((n_generations, n_generations), np.int32)
    for g in range(n_generations):
        c[g, : g + 1] = source_counts(strategy, g, [n_samples] * (g + 1))
    return c


def _needs_subsample(counts: np.ndarray, n: int) -> bool:
    return bool(np.any(counts % n))


def _selection_weights(key, counts, n: int, subsample: bool):
    """(S, n) multiplicities: ``counts[k] // n`` copies of every item of source k, plus one for the
    first ``counts[k] % n`` items of a random permutation (without replacement)."""
    base = (counts // n).astype(jnp.float32)
    w = jnp.broadcast_to(base[:, None], (counts.shape[0], n))
    if subsample:
        u = jax.random.uniform(key, (counts.shape[0], n))
        # the first (counts % n) items of a random permutation of each source
        order = jnp.argsort(u, axis=1)
        first = (jnp.arange(n)[None, :] < (counts % n)[:, None]).astype(jnp.float32)
        w = w + jax.vmap(lambda o, f: jnp.zeros((n,), jnp.float32).at[o].set(f))(order, first)
    return w


# --------------------------------------------------------------------------- Gaussian chains


class GaussianRun(NamedTuple):
    """Result of :func:`gaussian_run` (G = n_generations, C = n_chains, d = dim, M = n_samples).

    Attributes:
        means: (G + 1, C, d) fitted means, row 0 the truth (0).
        covariances: (G + 1, C, d, d) fitted covariances, row 0 the truth (I).
        samples: (G + 1, C, M, d) the ``M`` draws from each model (row t: model t, tempered for
            t >= 1), or ``None`` unless ``return_samples=True``.  Row t < G is source t of the chain.
        counts: (G, G) host-side strategy counts used (:func:`strategy_counts`).
    """

    means: jax.Array
    covariances: jax.Array
    samples: jax.Array | None
    counts: np.ndarray


def _psd_sqrt(cov):
    if cov.shape[-1] == 1:
        return jnp.sqrt(jnp.maximum(cov, 0.0))
    lam, vec = jnp.linalg.eigh(cov)
    return vec * jnp.sqrt(jnp.maximum(lam, 0.0))[None, :]


def _gaussian_single(key, counts, temperature, unbiased, *, n_samples: int, dim: int, subsample: bool):
    n_steps = counts.shape[0]
    buf0 = jnp.zeros((n_steps, n_samples, dim), jnp.float32)
    carry0 = (buf0, jnp.zeros((dim,), jnp.float32), jnp.eye(dim, dtype=jnp.float32))

    def step(carry, xs):
        buf, mu, root = carry
        g, cnt = xs
        ks, kw = jax.random.split(jax.random.fold_in(key, g))
        scale = jnp.where(g == 0, 1.0, temperature).astype(jnp.float32)
        x = mu + scale * (jax.random.normal(ks, (n_samples, dim), jnp.float32) @ root.T)
        buf = jax.lax.dynamic_update_index_in_dim(buf, x, g, axis=0)
        w = _selection_weights(kw, cnt, n_samples, subsample)  # (S, M)
        total = w.sum()
        mu_new = jnp.einsum("sm,smd->d", w, buf) / total
        xc = buf - mu_new
        cov = jnp.einsum("sm,smi,smj->ij", w, xc, xc) / (total - unbiased)
        cov = 0.5 * (cov + cov.T)
        return (buf, mu_new, _psd_sqrt(cov)), (mu_new, cov, x)

    _, (mus, covs, xs) = jax.lax.scan(step, carry0, (jnp.arange(n_steps), counts))
    return mus, covs, xs


@functools.partial(jax.jit, static_argnames=("n_chains", "n_samples", "dim", "subsample"))
def _gaussian_jit(key, counts, temperature, unbiased, *, n_chains, n_samples, dim, subsample):
    keys = jax.random.split(key, n_chains)
    f = functools.partial(_gaussian_single, n_samples=n_samples, dim=dim, subsample=subsample)
    mus, covs, xs = jax.vmap(f, in_axes=(0, None, None, None))(keys, counts, temperature, unbiased)
    return jnp.swapaxes(mus, 0, 1), jnp.swapaxes(covs, 0, 1), jnp.swapaxes(xs, 0, 1)


def gaussian_run(key, *, n_generations: int, n_samples: int, n_chains: int, dim: int = 1,
                 estimator: str = "mle", temperature: float = 1.0, strategy="replace",
                 return_samples: bool = False) -> GaussianRun:
    """Recursive Gaussian fitting, ``n_chains`` independent chains (jit + vmap over chains).

    Model ``t >= 1`` is ``N(mu_t, Sigma_t)`` with ``mu_t`` the (weighted) sample mean and ``Sigma_t`` the
    MLE (divide by the training-set size N_t) or unbiased (divide by N_t - 1) covariance of its training
    set (strategy generation ``t - 1``, see the module docstring).  Synthetic sources are drawn from
    ``N(mu, temperature^2 Sigma)``; the real set (source 0) is drawn from the untempered truth ``N(0, I)``.

    Args:
        key: PRNG key.  Chain ``c`` uses ``split(key, n_chains)[c]`` and generation ``g`` inside it
            ``fold_in(chain_key, g)``, so results do not depend on ``return_samples``.
        n_generations: G >= 1 fitted generations.
        n_samples: M items per source (M > dim, M >= 2).
        n_chains: C independent chains.
        dim: d, the dimension.
        estimator: ``"mle"`` or ``"unbiased"``.
        temperature: sampling temperature tau > 0 (scales the standard deviation).
        strategy: name or :class:`~sigma_jax.collapse.strategies.Strategy`.
        return_samples: also return the (G + 1, C, M, d) draws from models 0..G.

    Returns:
        :class:`GaussianRun`.

    Example:
        >>> run = gaussian_run(jax.random.key(0), n_generations=2, n_samples=8, n_chains=3, dim=2)
        >>> run.covariances.shape
        (3, 3, 2, 2)
    """
    n_generations = _check_int(n_generations, "n_generations", 1)
    n_samples = _check_int(n_samples, "n_samples", 2)
    n_chains = _check_int(n_chains, "n_chains", 1)
    dim = _check_int(dim, "dim", 1)
    if n_samples <= dim:
        raise ValueError(f"`n_samples` ({n_samples}) must exceed `dim` ({dim}) so each fitted covariance has full rank.")
    unbiased = _check_estimator(estimator)
    temperature = _check_temperature(temperature)
    n_steps = n_generations + 1  # one extra step draws model G's samples (same program with or without them)
    counts = strategy_counts(strategy, n_steps, n_samples)
    mus, covs, xs = _gaussian_jit(key, jnp.asarray(counts), jnp.float32(temperature), jnp.float32(unbiased),
                                  n_chains=n_chains, n_samples=n_samples, dim=dim,
                                  subsample=_needs_subsample(counts, n_samples))
    mus, covs = mus[:n_generations], covs[:n_generations]
    mu0 = jnp.zeros((1, n_chains, dim), jnp.float32)
    cov0 = jnp.broadcast_to(jnp.eye(dim, dtype=jnp.float32), (1, n_chains, dim, dim))
    means = jnp.concatenate([mu0, mus], axis=0)
    covariances = jnp.concatenate([cov0, covs], axis=0)
    return GaussianRun(means, covariances, xs if return_samples else None, counts[:n_generations, :n_generations])


def gaussian_chain(key, *, n_generations: int, n_samples: int, n_chains: int, dim: int = 1,
                   estimator: str = "mle", temperature: float = 1.0, strategy="replace"):
    """Fitted variances (dim = 1) or covariances (dim > 1) of recursive Gaussian fitting.

    Closed forms (replace, MLE, r = (M - 1)/M): ``E[sigma_t^2] = r^t`` (:func:`gaussian_variance_theory`),
    ``E[log det Sigma_t] = t [sum_j psi((M - j)/2) + d log(2/M)]`` (:func:`gaussian_logdet_theory`).

    Returns:
        (G + 1, C) variances for ``dim == 1``, else (G + 1, C, d, d) covariances; row 0 is the truth.

    Example:
        >>> v = gaussian_chain(jax.random.key(1), n_generations=3, n_samples=8, n_chains=16)
        >>> v.shape, float(v[0, 0])
        ((4, 16), 1.0)
    """
    run = gaussian_run(key, n_generations=n_generations, n_samples=n_samples, n_chains=n_chains, dim=dim,
                       estimator=estimator, temperature=temperature, strategy=strategy)
    return run.covariances[..., 0, 0] if dim == 1 else run.covariances


# --------------------------------------------------------------------------- categorical chains


def sampling_distribution(p, temperature=1.0, top_k: int | None = None, top_p: float | None = None):
    """The distribution a model with probabilities ``p`` samples from: temperature, then top-k, then top-p.

    ``q ∝ p^(1/temperature)``; top-k keeps the ``top_k`` largest (ties at the k-th value kept); top-p keeps
    the smallest prefix of the sorted ``q`` whose mass reaches ``top_p`` (the token crossing it included).
    Zero-probability tokens stay at zero.  jit/vmap-compatible.

    Args:
        p: (V,) probabilities.

    Returns:
        (V,) probabilities.

    Example:
        >>> [round(float(q), 3) for q in sampling_distribution(jnp.array([0.5, 0.3, 0.2]), top_k=2)]
        [0.625, 0.375, 0.0]
    """
    p = jnp.asarray(p, jnp.float32)
    logits = jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), -jnp.inf) / temperature
    if top_k is not None:
        kth = jnp.sort(logits)[-top_k]
        logits = jnp.where(logits >= kth, logits, -jnp.inf)
    q = jax.nn.softmax(logits)
    if top_p is not None:
        order = jnp.argsort(-q)
        qs = q[order]
        keep_sorted = (jnp.cumsum(qs) - qs) < top_p
        keep = jnp.zeros_like(keep_sorted).at[order].set(keep_sorted)
        q = jnp.where(keep, q, 0.0)
        q = q / q.sum()
    return q


def _multinomial(key, n: int, q):
    """Counts of ``n`` i.i.d. draws from ``q`` (inverse-CDF sampling; zero-probability tokens never drawn)."""
    cdf = jnp.cumsum(q)
    u = jax.random.uniform(key, (n,), jnp.float32) * cdf[-1]
    tokens = jnp.minimum(jnp.searchsorted(cdf, u, side="right"), q.shape[0] - 1)
    return jnp.zeros(q.shape, jnp.float32).at[tokens].add(1.0)


def _categorical_single(key, p0, counts, temperature, *, n_samples: int, top_k, top_p, subsample: bool):
    n_steps = counts.shape[0]
    vocab = p0.shape[0]
    buf0 = jnp.zeros((n_steps, vocab), jnp.float32)

    def step(carry, xs):
        buf, p = carry
        g, cnt = xs
        ks, kw = jax.random.split(jax.random.fold_in(key, g))
        q = jnp.where(g == 0, p, sampling_distribution(p, temperature, top_k, top_p))
        c = _multinomial(ks, n_samples, q)
        buf = jax.lax.dynamic_update_index_in_dim(buf, c, g, axis=0)
        if subsample:
            tokens = jax.vmap(lambda row: jnp.repeat(jnp.arange(vocab), row.astype(jnp.int32),
                                                     total_repeat_length=n_samples))(buf)  # (S, M)
            w = _selection_weights(kw, cnt, n_samples, True)
            tot = jnp.zeros((vocab,), jnp.float32).at[tokens.ravel()].add(w.ravel())
        else:
            tot = ((cnt // n_samples).astype(jnp.float32)[:, None] * buf).sum(0)
        p_new = tot / tot.sum()
        return (buf, p_new), p_new

    _, ps = jax.lax.scan(step, (buf0, p0), (jnp.arange(n_steps), counts))
    return ps


@functools.partial(jax.jit, static_argnames=("n_chains", "n_samples", "top_k", "top_p", "subsample"))
def _categorical_jit(key, p0, counts, temperature, *, n_chains, n_samples, top_k, top_p, subsample):
    keys = jax.random.split(key, n_chains)
    f = functools.partial(_categorical_single, n_samples=n_samples, top_k=top_k, top_p=top_p, subsample=subsample)
    ps = jax.vmap(f, in_axes=(0, None, None, None))(keys, p0, counts, temperature)
    return jnp.swapaxes(ps, 0, 1)


def categorical_chain(key, p0, *, n_generations: int, n_samples: int, n_chains: int, temperature: float = 1.0,
                      top_k: int | None = None, top_p: float | None = None, strategy="replace"):
    """Token frequencies refitted recursively: model t+1 = empirical frequencies of its training set.

    Source 0 is ``n_samples`` draws from ``p0`` (untouched); source k >= 1 is ``n_samples`` draws from
    :func:`sampling_distribution` of model k (``temperature``, ``top_k``, ``top_p``).  Support never
    grows.  Closed forms (replace, temperature 1, no truncation): ``E[p_t] = p0``,
    ``E[sum p_t^2] = 1 - (1 - 1/n)^t (1 - sum p0^2)`` (:func:`collision_probability_theory`), rare-token
    survival (:func:`rare_token_survival_theory`).

    Args:
        key: PRNG key (chain c uses ``split(key, n_chains)[c]``).
        p0: (V,) true probabilities.
        n_generations, n_samples, n_chains: G, n, C.
        temperature, top_k, top_p: sampling of synthetic sources (top_k / top_p are compile-time constants).
        strategy: data strategy name or :class:`~sigma_jax.collapse.strategies.Strategy`.

    Returns:
        (G + 1, C, V) float32 probabilities, row 0 = ``p0``.

    Example:
        >>> p = categorical_chain(jax.random.key(0), jnp.array([0.7, 0.2, 0.1]), n_generations=4,
        ...                       n_samples=20, n_chains=8)
        >>> p.shape
        (5, 8, 3)
    """
    p = _check_probs(p0)
    n_generations = _check_int(n_generations, "n_generations", 1)
    n_samples = _check_int(n_samples, "n_samples", 1)
    n_chains = _check_int(n_chains, "n_chains", 1)
    temperature = _check_temperature(temperature)
    if top_k is not None:
        top_k = _check_int(top_k, "top_k", 1)
        if top_k > p.size:
            raise ValueError(f"`top_k` ({top_k}) must not exceed the vocabulary size ({p.size}); use None to disable.")
    if top_p is not None:
        top_p = float(top_p)
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"`top_p` must lie in (0, 1], got {top_p}; use None to disable.")
    counts = strategy_counts(strategy, n_generations, n_samples)
    ps = _categorical_jit(key, jnp.asarray(p, jnp.float32), jnp.asarray(counts), jnp.float32(temperature),
                          n_chains=n_chains, n_samples=n_samples, top_k=top_k, top_p=top_p,
                          subsample=_needs_subsample(counts, n_samples))
    p0b = jnp.broadcast_to(jnp.asarray(p, jnp.float32), (1, n_chains, p.size))
    return jnp.concatenate([p0b, ps], axis=0)


# --------------------------------------------------------------------------- linear regression relabelling


def _regression_single(key, counts, noise, *, n_samples: int, dim: int, subsample: bool):
    n_steps = counts.shape[0]
    kx, kt, kl = jax.random.split(key, 3)
    x = jax.random.normal(kx, (n_samples, dim), jnp.float32)
    w_star = jax.random.normal(kt, (dim,), jnp.float32) / jnp.sqrt(dim)
    buf0 = jnp.zeros((n_steps, n_samples), jnp.float32)

    def step(carry, xs):
        buf, w = carry
        g, cnt = xs
        ks, kw = jax.random.split(jax.random.fold_in(kl, g))
        y = x @ w + noise * jax.random.normal(ks, (n_samples,), jnp.float32)
        buf = jax.lax.dynamic_update_index_in_dim(buf, y, g, axis=0)
        mult = _selection_weights(kw, cnt, n_samples, subsample)  # (S, T)
        wrow = mult.sum(0)
        lhs = jnp.einsum("t,ti,tj->ij", wrow, x, x)
        rhs = x.T @ (mult * buf).sum(0)
        chol = jnp.linalg.cholesky(lhs)
        w_new = jax.scipy.linalg.cho_solve((chol, True), rhs)
        return (buf, w_new), jnp.sum((w_new - w_star) ** 2)

    _, err = jax.lax.scan(step, (buf0, w_star), (jnp.arange(n_steps), counts))
    return err


@functools.partial(jax.jit, static_argnames=("n_chains", "n_samples", "dim", "subsample"))
def _regression_jit(key, counts, noise, *, n_chains, n_samples, dim, subsample):
    keys = jax.random.split(key, n_chains)
    f = functools.partial(_regression_single, n_samples=n_samples, dim=dim, subsample=subsample)
    return jnp.swapaxes(jax.vmap(f, in_axes=(0, None, None))(keys, counts, noise), 0, 1)


def regression_chain(key, *, n_generations: int, n_samples: int, n_chains: int, dim: int, noise: float = 1.0,
                     strategy="replace"):
    """Linear-regression relabelling: squared parameter error ``||w_t - w*||^2`` per generation.

    Each chain draws a fixed design ``X`` (T x d, i.i.d. N(0, 1)) and ``w* ~ N(0, I/d)``.  Source k is
    ``y_k = X w_k + noise * eps`` (``w_0 = w*``, the real labels); model t is the (weighted) least-squares
    fit on its training set (strategy generation t - 1, all sources sharing the inputs ``X``).
    Closed forms: :func:`regression_error_theory` (Gerstgrasser et al. 2024).

    Args:
        n_samples: T > dim + 1 labelled inputs per source.
        dim: d, the number of features.
        noise: label noise standard deviation s.

    Returns:
        (G + 1, C) squared errors, row 0 = 0.

    Example:
        >>> e = regression_chain(jax.random.key(0), n_generations=3, n_samples=20, n_chains=8, dim=4)
        >>> e.shape
        (4, 8)
    """
    n_generations = _check_int(n_generations, "n_generations", 1)
    n_chains = _check_int(n_chains, "n_chains", 1)
    dim = _check_int(dim, "dim", 1)
    n_samples = _check_int(n_samples, "n_samples", 1)
    if n_samples <= dim + 1:
        raise ValueError(f"`n_samples` (T = {n_samples}) must exceed `dim` + 1 = {dim + 1} (E tr (X^T X)^-1 is finite).")
    noise = float(noise)
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"`noise` must be a finite number >= 0, got {noise}.")
    counts = strategy_counts(strategy, n_generations, n_samples)
    sub = _needs_subsample(counts, n_samples)
    err = _regression_jit(key, jnp.asarray(counts), jnp.float32(noise), n_chains=n_chains, n_samples=n_samples,
                          dim=dim, subsample=sub)
    return jnp.concatenate([jnp.zeros((1, n_chains), jnp.float32), err], axis=0)


# --------------------------------------------------------------------------- closed forms


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


# --------------------------------------------------------------------------- embedding view


class EmbeddingView(NamedTuple):
    """SIGMA and spectral metrics of each generation's Gaussian draws used as "embeddings".

    Shapes: (G + 1, C) NumPy float64 arrays unless stated (G generations, C chains).

    Attributes:
        u_cov: SIGMA's ``u_cov = logdet(G_A + delta I) - d log n_A`` of the (optionally centred) draws.
        drift: ``u_cov[t] - u_cov[0]`` (SIGMA's dU).
        logdet_model: ``log det Sigma_t`` of the model the draws came from.
        effective_rank: eigenvalue-entropy effective rank of the draws' Gram matrix.
        model_effective_rank: effective rank of ``Sigma_t``.
        theory_u_cov: (G + 1,) ``E[u_cov_t]`` for replace (``(t + 1)`` Bartlett drifts, centred draws),
            NaN for other strategies.
        offset: ``E[u_cov_t - log det Sigma_t]`` (the Wishart/Bartlett offset, any strategy, centred draws).
        run: the underlying :class:`GaussianRun` (with samples).
    """

    u_cov: np.ndarray
    drift: np.ndarray
    logdet_model: np.ndarray
    effective_rank: np.ndarray
    model_effective_rank: np.ndarray
    theory_u_cov: np.ndarray
    offset: float
    run: GaussianRun


def embedding_view(key, *, n_generations: int, n_samples: int, n_chains: int, dim: int,
                   strategy="replace", estimator: str = "mle", temperature: float = 1.0,
                   center: bool = True, delta: float = 1e-3) -> EmbeddingView:
    """Run :func:`sigma_jax.sigma` and :mod:`sigma_jax.spectral` on each generation's Gaussian draws.

    The M draws from model t (rows, d columns) are treated as embeddings.  ``sigma`` is called with
    ``normalize=False`` (Gaussian draws are not unit vectors) and ``rho`` = the largest squared row norm
    over all chains and generations (so the norm bound holds; ``rho`` enters only ``g_kf`` and the
    bands, not ``u_cov``), with the whole set observed (``subset=None``).

    Mapping to the log-det law.  With ``center=True`` the draws are centred on their own mean, so
    ``G_A / M`` is the MLE covariance ``Sigma_hat`` of M draws from ``N(mu_t, Sigma_t)`` and
    ``u_cov = log det(Sigma_hat + delta/M I)``.  By Bartlett's decomposition
    ``E[u_cov_t] = E[log det Sigma_t] + sum_j psi((M - j)/2) + d log(2/M)`` (:func:`wishart_logdet_offset`)
    for any strategy, up to the ridge (``sum_i log(1 + delta/(M lambda_i))``), so SIGMA's drift
    ``u_cov_t - u_cov_0`` estimates ``E[log det Sigma_t] - log det Sigma_0``, which under replace is
    ``t`` times the Bartlett drift.  Under replace the centred draws of model t are exactly model t+1's
    training set, so ``u_cov_t = log det Sigma_{t+1}`` (MLE) up to the ridge.  With ``center=False``
    ``u_cov`` measures the uncentred second moment and adds ``log(1 + xbar^T Sigma_hat^-1 xbar)`` (the
    wandering mean), which has no closed form here.

    Returns:
        :class:`EmbeddingView`.

    Example:
        >>> view = embedding_view(jax.random.key(0), n_generations=1, n_samples=40, n_chains=2, dim=3)
        >>> view.u_cov.shape
        (2, 2)
    """
    from sigma_jax.core import sigma as _sigma
    from sigma_jax import spectral as _spectral
    from sigma_jax._x64 import x64

    if delta <= 0:
        raise ValueError(f"`delta` must be > 0, got {delta}.")
    run = gaussian_run(key, n_generations=n_generations, n_samples=n_samples, n_chains=n_chains, dim=dim,
                       estimator=estimator, temperature=temperature, strategy=strategy, return_samples=True)
    x = run.samples  # (G + 1, C, M, d)
    if center:
        x = x - x.mean(axis=2, keepdims=True)
    flat = x.reshape(-1, n_samples, dim)
    rho = float(jnp.max(jnp.sum(flat ** 2, axis=-1))) * (1.0 + 1e-4)

    def one(e):
        rep = _sigma(e, normalize=False, rho=rho, delta=float(delta))
        return rep.u_cov, _spectral.effective_rank(e, normalize=False)

    def model_metrics(cov):
        lam = jnp.linalg.eigvalsh(cov)
        return _spectral.logdet(lam), _spectral.effective_rank(lam)

    with x64():  # float64 results survive (no jit boundary outside the context)
        u_cov, er = jax.vmap(one)(flat)
        covs = jnp.asarray(np.asarray(run.covariances, np.float64)).reshape(-1, dim, dim)
        logdet, model_er = jax.vmap(model_metrics)(covs)
        shape = (n_generations + 1, n_chains)
        u_cov, er, logdet, model_er = (a.reshape(shape) for a in (u_cov, er, logdet, model_er))
        u_cov, er, logdet, model_er = (np.asarray(a, np.float64) for a in (u_cov, er, logdet, model_er))
    drift = u_cov - u_cov[:1]
    offset = wishart_logdet_offset(n_samples, dim)
    if Strategy.parse(strategy).name == "replace" and center:
        theory = gaussian_logdet_theory(n_generations, n_samples, dim, estimator=estimator,
                                        temperature=temperature) + offset
        theory[1:] += dim * math.log(float(temperature) ** 2)
    else:
        theory = np.full(n_generations + 1, np.nan)
    return EmbeddingView(u_cov=u_cov, drift=drift, logdet_model=logdet, effective_rank=er,
                         model_effective_rank=model_er, theory_u_cov=theory, offset=offset, run=run)
