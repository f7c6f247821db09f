"""Sizes of the recursive-training experiment: ``smoke`` | ``small`` | ``study`` | ``paper``.

Every field is recorded in the run's ``config.json``; a resumed run must match it.

* ``smoke`` -- 1-layer, d_model 32 LM on the stdlib ``pydoc`` corpus, 3 generations, arms
  replace / accumulate / control, the LM-state encoder: an end-to-end check of the plumbing
  (tests use it).
* ``small`` -- README's main command (``make demo``) on a 2-core CPU in <= 15 minutes: 2-layer
  d_model 128 char LM on the KJV, 4 generations (0..3), arms replace / accumulate / control at
  T = 0.7, one seed, MiniLM (m = 384) on n_k = 2000 continuations, fixed subset n_A = 1600
  (>= 4 m), 20 null re-samples of generation 0.
* ``study`` -- the referee-facing study: the ``small`` protocol with 3 seeds x {replace,
  accumulate, control} x T in {0.7, 1.0}, sized for <= 90 minutes on 2 CPU cores.
* ``paper`` -- sized for a GPU/TPU: 4-layer d_model 256 LM, 10 generations, every strategy
  at T = 0.7 and 1.0, 3 seeds, n_k = 4000, n_A = 2000.

Budgets: generation 0, every ``replace`` and ``control`` generation and each synthetic set hold
exactly ``train_chars`` characters; ``accumulate`` pools real + every synthetic set so far
((g + 1) x ``train_chars``); every generation of every arm takes ``train.steps`` optimiser steps.
"""

from __future__ import annotations

import dataclasses
import math

from sigma_jax.lm.model import ModelConfig
from sigma_jax.lm.train import TrainConfig

__all__ = ["CollapseConfig", "PRESETS", "get_preset"]

INITS = ("fresh", "carry-forward", "base-reset")
ENCODERS = ("auto", "minilm", "lm")


@dataclasses.dataclass(frozen=True)
class CollapseConfig:
    """One recursive-training experiment (all arms x seeds).

    Generation 0 trains on a real set of ``train_chars`` characters; generation g >= 1 on the
    data a strategy picks from the real set and the synthetic sets of generations 0..g-1
    (``control``: a fresh real set of the same size).  Every generation then samples
    ``n_measure`` continuations of ``measure_len`` characters from a fixed prompt bank with
    fixed keys, embeds them and measures SIGMA on a fixed subset of ``n_sub`` rows.
    Generation 0 is also re-sampled with ``null_keys`` other keys: the calibrated null of dU.
    """

    name: str = "custom"
    corpus: str = "kjv"
    heldout_every: int = 10
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    generations: int = 4                     # including generation 0
    strategies: tuple = ("replace", "accumulate", "control")
    temperatures: tuple = (0.7,)
    seeds: tuple = (0,)
    init: str = "fresh"                      # fresh | carry-forward | base-reset
    top_k: int = 0
    top_p: float = 1.0
    train_chars: int = 200_000               # characters of every fixed-size training set
    # synthetic sets: rounds of streams started after a newline, cut at the last newline, then to train_chars
    synth_streams: int = 1000
    synth_len: int = 256
    synth_prompt_len: int = 32
    # measurement: fixed prompt bank of held-out text, fixed keys (common random numbers)
    n_measure: int = 2000                    # n_k
    n_sub: int = 1600                        # n_A (fixed indices, stored with the run)
    measure_prompt_len: int = 16
    measure_len: int = 32
    measure_temperature: float | None = None  # None: the arm's temperature
    null_keys: int = 20                      # re-samples of generation 0 with other keys
    null_level: float = 0.95
    delta: float = 1e-3
    encoder: str = "auto"                    # auto (MiniLM if it loads, else LM, with a warning) | minilm | lm
    n_eval_windows: int = 256                # held-out windows for bpc
    sample_batch: int = 500
    encode_batch: int = 64

    def __post_init__(self):
        if self.generations < 1:
            raise ValueError(f"`generations` must be >= 1, got {self.generations}.")
        if self.init not in INITS:
            raise ValueError(f"`init` must be one of {INITS}, got {self.init!r}.")
        if self.encoder not in ENCODERS:
            raise ValueError(f"`encoder` must be one of {ENCODERS}, got {self.encoder!r}.")
        if not 0 < self.n_sub <= self.n_measure:
            raise ValueError(f"need 0 < n_sub <= n_measure, got n_sub={self.n_sub}, n_measure={self.n_measure}.")
        if any(t < 0 for t in self.temperatures):
            raise ValueError(f"`temperatures` must be >= 0, got {self.temperatures}.")
        if self.measure_prompt_len + self.measure_len > self.model.block_size:
            raise ValueError("measure_prompt_len + measure_len must fit the model's block_size "
                             f"({self.measure_prompt_len} + {self.measure_len} > {self.model.block_size}).")
        if self.synth_prompt_len >= self.model.block_size:
            raise ValueError(f"`synth_prompt_len` must be < block_size ({self.model.block_size}).")
        if not self.strategies or not self.temperatures or not self.seeds:
            raise ValueError("`strategies`, `temperatures` and `seeds` must be non-empty.")
        if len(set(self.seeds)) != len(self.seeds) or len(set(self.temperatures)) != len(self.temperatures) \
                or len(set(self.strategies)) != len(self.strategies):
            raise ValueError("`strategies`, `temperatures` and `seeds` must not repeat an entry.")
        if self.train_chars < 1000:
            raise ValueError(f"`train_chars` must be >= 1000, got {self.train_chars}.")
        if not 0.0 < self.null_level < 1.0:
            raise ValueError(f"`null_level` must lie in (0, 1), got {self.null_level}.")
        need = math.ceil(1.0 / (1.0 - self.null_level)) - 1
        if self.null_keys < need:
            raise ValueError(f"a {100 * self.null_level:g}% null needs null_keys >= {need} re-samples of generation 0, "
                             f"got {self.null_keys}.")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "CollapseConfig":
        d = dict(d)
        d["model"] = ModelConfig(**d["model"])
        d["train"] = TrainConfig(**d["train"])
        for k in ("strategies", "temperatures", "seeds"):
            d[k] = tuple(d[k])
        return cls(**d)


_KJV_LM = ModelConfig(n_layers=2, d_model=128, n_heads=4, block_size=64)

PRESETS = {
    "smoke": CollapseConfig(
        name="smoke", corpus="pydoc",
        model=ModelConfig(n_layers=1, d_model=32, n_heads=2, block_size=32),
        train=TrainConfig(steps=20, batch_size=8, warmup_steps=4, steps_per_call=10, peak_lr=1e-2, monitor_every=10),
        generations=3, strategies=("replace", "accumulate", "control"), temperatures=(0.7,),
        train_chars=6000, synth_streams=96, synth_len=96, synth_prompt_len=8,
        n_measure=160, n_sub=128, measure_prompt_len=8, measure_len=16, null_keys=20,
        encoder="lm", n_eval_windows=16, sample_batch=160, encode_batch=160),
    "small": CollapseConfig(
        name="small", corpus="kjv", model=_KJV_LM,
        train=TrainConfig(steps=500, batch_size=32, warmup_steps=50, steps_per_call=20, peak_lr=3e-3,
                          monitor_every=100),
        generations=4, strategies=("replace", "accumulate", "control"), temperatures=(0.7,),
        train_chars=200_000, synth_streams=1000, synth_len=256, synth_prompt_len=32,
        n_measure=2000, n_sub=1600, measure_prompt_len=16, measure_len=32, null_keys=20,
        encoder="auto", n_eval_windows=256, sample_batch=500),
    "paper": CollapseConfig(
        name="paper", corpus="kjv",
        model=ModelConfig(n_layers=4, d_model=256, n_heads=8, block_size=128),
        train=TrainConfig(steps=5000, batch_size=64, warmup_steps=250, steps_per_call=50, peak_lr=1e-3,
                          monitor_every=500),
        generations=10, strategies=("replace", "accumulate", "control", "mix:0.1", "accumulate-subsample"),
        temperatures=(0.7, 1.0), seeds=(0, 1, 2), train_chars=300_000,
        synth_streams=1500, synth_len=512, synth_prompt_len=64,
        n_measure=4000, n_sub=2000, measure_prompt_len=16, measure_len=32, null_keys=39,
        encoder="minilm", n_eval_windows=2048, sample_batch=1000, encode_batch=128),
}
PRESETS["study"] = dataclasses.replace(PRESETS["small"], name="study", temperatures=(0.7, 1.0), seeds=(0, 1, 2),
                                       encoder="minilm")


def get_preset(name: str, **overrides) -> CollapseConfig:
    """A preset by name, with fields replaced by ``overrides`` (e.g. ``strategies=("mix:0.1",)``).

    Example:
        >>> get_preset("smoke").generations, get_preset("smoke").model.d_model
        (3, 32)
        >>> get_preset("small", strategies=("mix:0.1",), seeds=(0, 1)).strategies
        ('mix:0.1',)
        >>> get_preset("study").seeds, get_preset("study").strategies
        ((0, 1, 2), ('replace', 'accumulate', 'control'))
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    return dataclasses.replace(PRESETS[name], **overrides)
