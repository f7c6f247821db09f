"""The recursive-training loop: small LMs retrained on their own text, measured by SIGMA.

This module gathers the pipeline's public names; each concern lives in its own module:

=================================  ====================================================================
:mod:`~sigma_jax.collapse.data`    real sets of a fixed character budget, strategies' training mixes,
                                   synthetic streams (``control`` = fresh real text, same size)
:mod:`~sigma_jax.collapse.measure` frozen encoders, the spectrum stage, SIGMA on the fixed subset
:mod:`~sigma_jax.collapse.metrics` lexical statistics and NLL tails (NumPy only)
:mod:`~sigma_jax.collapse.context` a seed's frozen resources and generation 0
:mod:`~sigma_jax.collapse.generation` ``run_generation(state, cfg, key) -> (state, row)``
:mod:`~sigma_jax.collapse.persist` the run folder, stored subset indices, checkpoints, resume
:mod:`~sigma_jax.collapse.runner`  ``run_experiment``: every arm x seed, resumable
:mod:`~sigma_jax.collapse.study`   seed-level intervals, control band, early warning (NumPy only)
=================================  ====================================================================

Example:
    >>> arm_name("control", 0.7, 0), NLL_BINS[:3]
    ('control_T0.7_s0', (0.0, 0.25, 0.5))
"""

from __future__ import annotations

from sigma_jax.collapse.context import SeedContext, Trained, attach_model, seed_resources, train_generation0
from sigma_jax.collapse.data import TrainingMix, cut_streams, n_chars, real_sets, take_chars, training_mix
from sigma_jax.collapse.generation import ArmState, drift_fields, run_generation, train_generation
from sigma_jax.collapse.measure import LMEncoder, choose_encoder, make_encoder, measure
from sigma_jax.collapse.metrics import NLL_BINS, lexical_stats
from sigma_jax.collapse.persist import arm_name, read_metrics
from sigma_jax.collapse.runner import run_experiment

__all__ = ["TrainingMix", "training_mix", "real_sets", "take_chars", "n_chars", "LMEncoder", "make_encoder",
           "choose_encoder", "measure", "lexical_stats", "cut_streams", "run_experiment", "run_generation",
           "train_generation", "train_generation0", "seed_resources", "attach_model", "drift_fields", "ArmState",
           "SeedContext", "Trained", "arm_name", "read_metrics", "NLL_BINS"]
