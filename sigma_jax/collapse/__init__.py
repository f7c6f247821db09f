"""Recursive-training (model collapse) loops: shared data strategies, toy chains with exact answers, the LM pipeline.

* :mod:`sigma_jax.collapse.strategies` -- replace / accumulate / mix / accumulate-subsample / control.
* :mod:`sigma_jax.collapse.toy` -- Gaussian, Wishart, categorical and regression chains with closed forms.
* :mod:`sigma_jax.collapse.pipeline` -- Flax LMs retrained on their own text (imported on first use;
  its parts: ``data``, ``measure``, ``metrics``, ``context``, ``generation``, ``persist``, ``runner``).
* :mod:`sigma_jax.collapse.study` / :mod:`sigma_jax.collapse.report` -- seed-level intervals, control
  band, early warning, tables and figures of finished runs (NumPy / matplotlib only, no Flax).
"""

import importlib

from sigma_jax.collapse import toy
from sigma_jax.collapse.strategies import STRATEGIES, Strategy, source_counts, source_weights
from sigma_jax.collapse.toy import categorical_chain, embedding_view, gaussian_chain, regression_chain

__all__ = ["STRATEGIES", "Strategy", "source_weights", "source_counts", "toy", "gaussian_chain",
           "categorical_chain", "regression_chain", "embedding_view"]


_SUBMODULES = ("pipeline", "presets", "report", "study", "data", "measure", "metrics", "context", "generation",
               "persist", "runner")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"sigma_jax.collapse.{name}")
    if name == "run_experiment":
        return importlib.import_module("sigma_jax.collapse.runner").run_experiment
    raise AttributeError(f"module 'sigma_jax.collapse' has no attribute {name!r}")
