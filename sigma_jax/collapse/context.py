"""A seed's frozen resources, shared by all its arms: :class:`SeedContext`.

Built in two steps, because the LM encoder needs the generation-0 model:

1. :func:`seed_resources` -- the model definition, the real training sets
   (:func:`~sigma_jax.collapse.data.real_sets`), held-out evaluation windows and measurement
   prompts, the fixed subset;
2. :func:`attach_model` -- the generation-0 weights (trained by :func:`train_generation0` or
   restored from a checkpoint) and the frozen encoder chosen by
   :func:`~sigma_jax.collapse.measure.choose_encoder`.

Keys: everything here comes from the seed's root key ``PRNGKey(seed)`` through
``fold_in(root, TAGS[purpose])``; generation g's key is ``fold_in(root, g)`` (generation 0's
training included).

Example:
    >>> from sigma_jax.collapse.presets import get_preset
    >>> cfg = get_preset("smoke")
    >>> ctx = seed_resources(cfg, 0)
    >>> len(ctx.real), ctx.prompts.shape, ctx.subset_idx.shape
    (3, (160, 8), (128,))
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from sigma_jax.collapse.data import real_sets, training_mix, window_sampler
from sigma_jax.collapse.measure import EncoderChoice, choose_encoder
from sigma_jax.collapse.presets import CollapseConfig
from sigma_jax.lm.data import CharTokenizer, join_lines, lines_of, load_corpus
from sigma_jax.lm.model import ModelConfig, Transformer
from sigma_jax.lm.train import eval_windows, train

__all__ = ["TAGS", "SeedContext", "Trained", "load_real_text", "seed_resources", "train_generation0",
           "attach_model", "fit"]

#: ``fold_in`` tags: the purpose of each sub-key.
TAGS = dict(prompts=101, subset=102, eval=103, measure=104, null=105, train=106, init=107, synth=108, mix=109,
            real=110)


def key_for(root, tag: str, *more):
    """``fold_in(root, TAGS[tag])`` folded with ``more`` (private helper of the collapse modules)."""
    k = jax.random.fold_in(root, TAGS[tag])
    for m in more:
        k = jax.random.fold_in(k, m)
    return k


class SeedContext(NamedTuple):
    """The frozen resources of one seed, shared by all its arms.

    Attributes:
        seed, root: the seed and its PRNG key.
        tokenizer, graphdef, template, model_cfg: the character LM's definition (``template``:
            a parameter state of the right structure, for checkpoints).
        params0: generation-0 weights (None until :func:`attach_model`).
        real: real training sets of ``train_chars`` characters (``real[0]``: generation 0's;
            ``real[g]``: the control arm's fresh set of generation g).
        eval_windows: (n_eval, L+1) held-out windows for bits per character.
        prompts: (n_k, P) held-out measurement prompts.
        subset_idx: (n_A,) the fixed subset (stored with the run).
        encoder: the frozen text encoder (None until :func:`attach_model`).
        window: training window length (context + 1).
    """

    seed: int
    root: Any
    tokenizer: CharTokenizer
    graphdef: Any
    template: Any
    model_cfg: ModelConfig
    params0: Any
    real: tuple
    eval_windows: np.ndarray
    prompts: np.ndarray
    subset_idx: np.ndarray
    encoder: Any
    window: int


class Trained(NamedTuple):
    """A generation's trained model: weights, the data it saw, final loss (nats), in-step monitor log, seconds."""

    params: Any
    mix: Any
    final_loss: float
    monitor: list
    seconds: float


def load_real_text(cfg: CollapseConfig, tok: CharTokenizer | None = None) -> tuple[list, np.ndarray]:
    """The corpus's real training lines and its held-out text as token ids (split by document).

    Example:
        >>> from sigma_jax.collapse.presets import get_preset
        >>> lines, heldout = load_real_text(get_preset("smoke"))
        >>> len(lines) > 1000, heldout.dtype
        (True, dtype('int32'))
    """
    tok = tok or CharTokenizer()
    corpus = load_corpus(cfg.corpus, cfg.heldout_every)
    return lines_of(corpus.train), tok.encode(join_lines(lines_of(corpus.heldout)))


def seed_resources(cfg: CollapseConfig, seed: int, *, text: tuple | None = None,
                   subset_idx: np.ndarray | None = None) -> SeedContext:
    """Everything a seed needs before generation 0 exists (``params0`` and ``encoder`` are None).

    Args:
        cfg: the experiment.
        seed: the seed.
        text: ``(real_lines, heldout_tokens)`` from :func:`load_real_text` (loaded when None).
        subset_idx: the stored fixed subset; drawn from the seed's key when None.

    Example:
        >>> from sigma_jax.collapse.data import n_chars
        >>> from sigma_jax.collapse.presets import get_preset
        >>> cfg = get_preset("smoke")
        >>> ctx = seed_resources(cfg, 1)
        >>> [n_chars(s) for s in ctx.real] == [cfg.train_chars] * cfg.generations, ctx.params0 is None
        (True, True)
    """
    tok = CharTokenizer()
    real_lines, heldout = load_real_text(cfg, tok) if text is None else text
    root = jax.random.key(int(seed))
    mcfg = dataclasses.replace(cfg.model, vocab_size=tok.vocab_size)
    graphdef, template = nnx.split(Transformer(mcfg, rngs=nnx.Rngs(int(seed))))
    window = (cfg.train.seq_len or mcfg.block_size) + 1
    real = real_sets(key_for(root, "real"), real_lines, cfg.train_chars, cfg.generations)
    ev = eval_windows(key_for(root, "eval"), heldout, cfg.n_eval_windows, window)
    prompts = eval_windows(key_for(root, "prompts"), heldout, cfg.n_measure, cfg.measure_prompt_len)
    if subset_idx is None:
        subset_idx = np.sort(np.asarray(jax.random.permutation(key_for(root, "subset"), cfg.n_measure))[: cfg.n_sub])
    return SeedContext(int(seed), root, tok, graphdef, template, mcfg, None, tuple(tuple(s) for s in real), ev,
                       prompts, np.asarray(subset_idx), None, window)


def fit(ctx: SeedContext, cfg: CollapseConfig, init, mix, key, *, progress=None) -> Trained:
    """Train ``init`` on ``mix`` (a :class:`~sigma_jax.collapse.data.TrainingMix`) for
    ``cfg.train.steps`` steps with a fresh optimiser; ``progress(n)`` after each fused chunk.

    Example:
        >>> import dataclasses
        >>> from sigma_jax.collapse.presets import get_preset
        >>> cfg = get_preset("smoke")
        >>> ctx = seed_resources(cfg, 0)
        >>> tr = fit(ctx, cfg, ctx.template, training_mix(None, "replace", 0, [ctx.real[0]]), jax.random.key(1))
        >>> tr.mix.chars == cfg.train_chars, len(tr.monitor) == cfg.train.steps // cfg.train.monitor_every
        (True, True)
    """
    import time

    t0 = time.time()
    sampler = window_sampler(mix, ctx.tokenizer, ctx.window)[0]
    mlog: list = []  # the in-step spectral monitor of the LM's own hidden states
    params, losses = train(key, ctx.graphdef, init, sampler, cfg.train, progress, monitor_log=mlog)
    return Trained(params, mix, float(losses[-10:].mean()), mlog, time.time() - t0)


def train_generation0(ctx: SeedContext, cfg: CollapseConfig, *, progress=None) -> Trained:
    """Generation 0: a fresh model trained on the real set ``ctx.real[0]`` (``train_chars`` characters).

    Example:
        >>> from sigma_jax.collapse.presets import get_preset
        >>> cfg = get_preset("smoke")
        >>> tr = train_generation0(seed_resources(cfg, 0), cfg)
        >>> tr.mix.counts.tolist() == [len(seed_resources(cfg, 0).real[0])], tr.final_loss < 4.6
        (True, True)
    """
    k0 = jax.random.fold_in(ctx.root, 0)
    init = nnx.split(Transformer(ctx.model_cfg, rngs=nnx.Rngs(params=jax.random.fold_in(k0, TAGS["init"]))))[1]
    mix = training_mix(None, "replace", 0, [list(ctx.real[0])])
    return fit(ctx, cfg, init, mix, jax.random.fold_in(k0, TAGS["train"]), progress=progress)


def attach_model(ctx: SeedContext, cfg: CollapseConfig, params0) -> tuple[SeedContext, EncoderChoice]:
    """The context with generation 0's weights and the frozen encoder (``cfg.encoder``).

    ``params0=None`` uses the untrained template (examples and tests only).

    Example:
        >>> from sigma_jax.collapse.presets import get_preset
        >>> cfg = get_preset("smoke")
        >>> ctx, choice = attach_model(seed_resources(cfg, 0), cfg, None)
        >>> choice.record()["used"], ctx.encoder.dim
        ('lm-gen0-meanpool', 32)
    """
    params0 = ctx.template if params0 is None else params0
    choice = choose_encoder(cfg.encoder, ctx.graphdef, params0, ctx.tokenizer, ctx.model_cfg)
    return ctx._replace(params0=params0, encoder=choice.encoder), choice
