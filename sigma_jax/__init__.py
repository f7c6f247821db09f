"""sigma_jax: SIGMA (Spectral Inequalities for Gram Matrix Analysis) in JAX, for measuring model collapse.

Quickstart::

    import jax, sigma_jax
    emb = ...                                   # (n, m) sentence embeddings
    rep = sigma_jax.sigma(emb, subset=800, key=jax.random.key(0))
    print(rep.summary())                        # logdet, U_cov +/- band, G_KF, sandwich

Topic modules: ``report`` (the SIGMA report, assembled once from a producer's
sufficient statistics), ``gram`` (dense and streamed producers, streaming Gram),
``operators`` (the operator interface, the Gram operator), ``spectral`` (metrics of a
spectrum), ``bounds`` (deterministic inequalities), and, imported on first use,
``estimators`` (matrix-free stochastic estimators), ``sharding`` (the Gram operator
on a device mesh and inside pmap/shard_map steps), ``monitor`` (in-loop spectral
monitor), ``analysis`` (one-call tables), ``encoders`` (frozen MiniLM, registry), ``texts``
(reading text files, embedding them with a cache), ``lm`` (small
Flax LMs), ``collapse`` (strategies, toy chains, the recursive pipeline), ``datasets``.
"""

from __future__ import annotations

import importlib

from sigma_jax import bounds, gram, operators, report, spectral
from sigma_jax.core import sigma, sigma_from_gram
from sigma_jax.gram import q_moments
from sigma_jax.operators import GramOperator, dense_operator, gram_operator
from sigma_jax.report import Drift, SigmaReport, SigmaStats, drift, report_from_stats


def analyze(inputs, **kwargs):
    """One-call table of SIGMA and spectral metrics over several sets of texts or embeddings.

    Imported lazily (it pulls in the text readers and encoders); the arguments are those of
    :func:`sigma_jax.analysis.analyze`.

    Example:
        >>> sets = [jax.random.normal(jax.random.key(i), (200, 6)) for i in range(2)]
        >>> [r["n"] for r in analyze(sets).rows]
        [200, 200]
    """
    from sigma_jax.analysis import analyze as _analyze

    return _analyze(inputs, **kwargs)

__version__ = "0.1.0"

__all__ = [
    "sigma",
    "sigma_from_gram",
    "report_from_stats",
    "SigmaStats",
    "analyze",
    "q_moments",
    "drift",
    "SigmaReport",
    "Drift",
    "GramOperator",
    "gram_operator",
    "dense_operator",
    "gram",
    "report",
    "operators",
    "spectral",
    "bounds",
    "__version__",
]

_LAZY = {"estimators", "sharding", "monitor", "lm", "encoders", "collapse", "datasets", "cli", "analysis", "texts"}


def __getattr__(name):  # topic modules with heavier imports load on first use
    if name in _LAZY:
        return importlib.import_module(f"sigma_jax.{name}")
    raise AttributeError(f"module 'sigma_jax' has no attribute {name!r}")
