"""Recursive-training (model collapse) loops: shared data strategies, toy chains with exact answers, the LM pipeline.

* :mod:`sigma_jax.collapse.strategies` -- replace / accumulate / mix / accumulate-subsample.
* :mod:`sigma_jax.collapse.toy` -- Gaussian, Wishart, categorical and regression chains with closed forms.
* :mod:`sigma_jax.collapse.pipeline` -- Flax LMs retrained on their own text (imported on first use).
"""

import importlib

from sigma_jax.collapse import toy
from sigma_jax.collapse.strategies import STRATEGIES, Strategy, source_counts, source_weights
from sigma_jax.collapse.toy import categorical_chain, embedding_view, gaussian_chain, regression_chain

__all__ = ["STRATEGIES", "Strategy", "source_weights", "source_counts", "toy", "gaussian_chain",
           "categorical_chain", "regression_chain", "embedding_view"]


def __getattr__(name):
    if name in ("pipeline", "presets", "report"):
        return importlib.import_module(f"sigma_jax.collapse.{name}")
    if name == "run_experiment":
        return importlib.import_module("sigma_jax.collapse.pipeline").run_experiment
        return importlib.import_module(f"sigma_jax.collapse.{name}")
    raise AttributeError(f"module 'sigma_jax.collapse' has no attribute {name!r}")
