"""Recursive-training (model collapse) loops: shared data strategies, toy chains, LM pipeline."""

from sigma_jax.collapse.strategies import STRATEGIES, Strategy, source_weights, source_counts

__all__ = ["STRATEGIES", "Strategy", "source_weights", "source_counts"]
