"""Recursive-fitting chains simulated many at a time (``jit`` + ``vmap`` over chains, ``lax.scan`` over generations).

Gaussian (:func:`gaussian_run`, :func:`gaussian_chain`), token-frequency (:func:`categorical_chain`, with
:func:`sampling_distribution` for temperature / top-k / top-p) and linear-regression relabelling
(:func:`regression_chain`) chains.  Indexing and strategies as in :mod:`sigma_jax.collapse.toy`; the
matching closed forms are in :mod:`sigma_jax.collapse.toy.theory`.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sigma_jax._linalg import HIGHEST, mm as _mm
from sigma_jax.collapse.toy._checks import _check_estimator, _check_int, _check_probs, _check_temperature
from sigma_jax.collapse.toy.counts import _needs_subsample, _selection_weights, strategy_counts

__all__ = [
    "GaussianRun",
    "gaussian_run",
    "gaussian_chain",
    "sampling_distribution",
    "categorical_chain",
    "regression_chain",
]


# --------------------------------------------------------------------------- Gaussian chains


class GaussianRun(NamedTuple):
    """Result of :func:`gaussian_run` (G = n_generations, C = n_chains, d = dim, M = n_samples).

    Attributes:
        means: (G + 1, C, d) fitted means, row 0 the truth (0).
        covariances: (G + 1, C, d, d) fitted covariances, row 0 the truth (I).
        samples: (G + 1, C, M, d) the ``M`` draws from each model (row t: model t, tempered for
            t >= 1), or ``None`` unless ``return_samples=True``.  Row t < G is source t of the chain.
        counts: (G, G) host-side strategy counts used (:func:`~sigma_jax.collapse.toy.counts.strategy_counts`).
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
        x = mu + scale * _mm(jax.random.normal(ks, (n_samples, dim), jnp.float32), root.T)
        buf = jax.lax.dynamic_update_index_in_dim(buf, x, g, axis=0)
        w = _selection_weights(kw, cnt, n_samples, subsample)  # (S, M)
        total = w.sum()
        mu_new = jnp.einsum("sm,smd->d", w, buf, precision=HIGHEST) / total
        xc = buf - mu_new
        cov = jnp.einsum("sm,smi,smj->ij", w, xc, xc, precision=HIGHEST) / (total - unbiased)
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
    set (strategy generation ``t - 1``, see :mod:`sigma_jax.collapse.toy`).  Synthetic sources are drawn from
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

    Closed forms (replace, MLE, r = (M - 1)/M): ``E[sigma_t^2] = r^t``
    (:func:`~sigma_jax.collapse.toy.theory.gaussian_variance_theory`),
    ``E[log det Sigma_t] = t [sum_j psi((M - j)/2) + d log(2/M)]``
    (:func:`~sigma_jax.collapse.toy.theory.gaussian_logdet_theory`).

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
    ``E[sum p_t^2] = 1 - (1 - 1/n)^t (1 - sum p0^2)``
    (:func:`~sigma_jax.collapse.toy.theory.collision_probability_theory`), rare-token survival
    (:func:`~sigma_jax.collapse.toy.theory.rare_token_survival_theory`).

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
        y = _mm(x, w) + noise * jax.random.normal(ks, (n_samples,), jnp.float32)
        buf = jax.lax.dynamic_update_index_in_dim(buf, y, g, axis=0)
        mult = _selection_weights(kw, cnt, n_samples, subsample)  # (S, T)
        wrow = mult.sum(0)
        lhs = jnp.einsum("t,ti,tj->ij", wrow, x, x, precision=HIGHEST)
        rhs = _mm(x.T, (mult * buf).sum(0))
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
    Closed forms: :func:`~sigma_jax.collapse.toy.theory.regression_error_theory` (Gerstgrasser et al. 2024).

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
