"""Toy model collapse with exact answers: Gaussian, Wishart, token-frequency and regression chains.

Recursive fitting on simple models has closed-form answers (Shumailov et al. 2024; Gerstgrasser et al.
2024; the "Exact oracles" of ``docs/collapse-references.md``).  This package simulates many independent
chains at once (``jit`` + ``vmap``) and returns the matching closed forms, so the loop logic and the
spectral code can be checked against known truths.  It is laid out by concern:

* :mod:`~sigma_jax.collapse.toy.counts` -- data strategies as integer counts and per-item multiplicities;
* :mod:`~sigma_jax.collapse.toy.simulators` -- the Gaussian, categorical and regression chains;
* :mod:`~sigma_jax.collapse.toy.theory` -- their closed forms;
* :mod:`~sigma_jax.collapse.toy.embedding` -- SIGMA and spectral metrics of the Gaussian draws.

Every public name is re-exported here (``from sigma_jax.collapse import toy; toy.gaussian_chain(...)``).

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

Strategies run inside ``jit`` as integer counts and per-item multiplicities, so every generation has the
same array shapes and one ``lax.scan`` compiles once (:mod:`~sigma_jax.collapse.toy.counts`).

Example:
    >>> import jax
    >>> var = gaussian_chain(jax.random.key(0), n_generations=5, n_samples=10, n_chains=4000)
    >>> var.shape
    (6, 4000)
    >>> bool(abs(var[5].mean() - gaussian_variance_theory(5, 10)[5]) < 0.05)
    True
"""

from __future__ import annotations

from sigma_jax.collapse.toy import counts, embedding, simulators, theory  # noqa: F401 (toy.theory etc.)
from sigma_jax.collapse.toy.counts import strategy_counts
from sigma_jax.collapse.toy.embedding import EmbeddingView, embedding_view
from sigma_jax.collapse.toy.simulators import (GaussianRun, categorical_chain, gaussian_chain, gaussian_run,
                                               regression_chain, sampling_distribution)
from sigma_jax.collapse.toy.theory import (collision_probability_theory, expected_support_theory,
                                           gaussian_eigenvalue_rates, gaussian_logdet_theory,
                                           gaussian_marginal_variance_theory, gaussian_variance_theory,
                                           rare_token_survival_theory, regression_error_theory,
                                           temperature_recursion_theory, wishart_logdet_offset)

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
