"""One generation of one arm: ``run_generation(state, cfg, key) -> (state, row)``.

A seed's frozen resources (model definition, generation-0 weights, real sets, prompts,
evaluation windows, fixed subset, encoder) form a :class:`SeedContext`; an arm (strategy x
temperature of one seed) is an :class:`ArmState` that points at it.  A generation g >= 1:

1. **data** -- :func:`~sigma_jax.collapse.data.training_mix` by strategy; ``control`` takes the
   fresh real set g of the seed (same ``train_chars`` as ``replace``'s synthetic set);
2. **train** -- ``fresh`` (new init), ``carry-forward`` or ``base-reset`` init, a fresh optimiser
   and ``cfg.train.steps`` steps for every arm (:func:`train_generation`);
3. **measure** -- ``n_k`` continuations of fixed held-out prompts with fixed keys (common random
   numbers across generations and arms), embedded and measured once
   (:func:`~sigma_jax.collapse.measure.measure`); drift against generation 0 with the
   Theorem-3 band and the calibrated null (:func:`drift_fields`);
4. **synthesise** (arms that read synthetic data, not in the last generation) -- rounds of
   streams sampled after a newline of the generation's own training text, cut to complete
   lines and then to exactly ``train_chars`` characters: the next generation's source.

Keys: the runner passes ``key = fold_in(PRNGKey(seed), g)`` (the same for every arm of a seed);
it is split by purpose with ``fold_in`` tags.  Prompts, subset, evaluation windows, real sets,
measurement and null keys come from the seed's root key alone.

Example (see :func:`run_generation`; the runner is :func:`sigma_jax.collapse.runner.run_experiment`)::

    state, row = run_generation(state, cfg, jax.random.fold_in(ctx.root, state.generation + 1))
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from sigma_jax.collapse.context import TAGS, SeedContext, Trained, fit, key_for
from sigma_jax.collapse.data import TrainingMix, cut_streams, n_chars, stream_prompts, take_chars, training_mix, \
    window_sampler
from sigma_jax.collapse.measure import Measurement, measure, subset_report
from sigma_jax.collapse.persist import arm_name
from sigma_jax.collapse.presets import CollapseConfig
from sigma_jax.collapse.strategies import Strategy
from sigma_jax.lm.model import Transformer
from sigma_jax.lm.sample import generate, generate_stream
from sigma_jax.lm.train import continuation_nll, eval_bpc
from sigma_jax.report import NullSpread, SigmaReport, drift, empirical_null

__all__ = ["ArmState", "Generation0", "uses_synthetic", "measure_model", "null_resamples", "synthesize",
           "train_generation", "measure_generation0", "start_arm", "resume_arm", "run_generation", "drift_fields"]

_MAX_SYNTH_ROUNDS = 20


class ArmState(NamedTuple):
    """One arm after its last finished generation.

    Attributes:
        ctx: the seed's :class:`SeedContext`.
        strategy, temperature: the arm.
        generation: last finished generation.
        synthetic: ``synthetic[k]`` = the synthetic set generation k produced (source k + 1);
            empty for ``control``.
        reports: :class:`~sigma_jax.report.SigmaReport` on the fixed subset, generations 0..generation.
        null: the calibrated null of generation 0 at the arm's measurement temperature.
        params: the last generation's weights (None after a resume unless ``carry-forward`` needs them).
        samples: the last generation's measured continuations (the runner stores them).
    """

    ctx: SeedContext
    strategy: str
    temperature: float
    generation: int
    synthetic: tuple
    reports: tuple
    null: NullSpread
    params: Any
    samples: tuple


class Generation0(NamedTuple):
    """Generation 0 of one seed measured at one temperature.

    Attributes:
        metrics: JSON-ready fields (the measurement, the null, training and timing).
        report: SIGMA on the fixed subset.
        null: the calibrated null (``null_keys`` re-samples with other keys).
        synthetic: its synthetic set at that temperature (None when no arm reads it).
        samples: the measured continuations.
    """

    metrics: dict
    report: SigmaReport
    null: NullSpread
    synthetic: list | None
    samples: list


def uses_synthetic(strategy) -> bool:
    """False for ``control`` (trains on real text only), True for every other strategy.

    Example:
        >>> uses_synthetic("control"), uses_synthetic("accumulate:equal")
        (False, True)
    """
    return Strategy.parse(strategy).name != "control"


def _measure_t(cfg: CollapseConfig, temperature: float) -> float:
    return float(temperature if cfg.measure_temperature is None else cfg.measure_temperature)


# --------------------------------------------------------------------------- stages


def measure_model(ctx: SeedContext, cfg: CollapseConfig, params, temperature: float) -> tuple[Measurement, list]:
    """Sample the fixed prompts with the fixed measurement key, embed, and :func:`measure`
    (plus held-out bpc and the NLL of each continuation under generation 0).

    Example:
        >>> from sigma_jax.collapse.context import attach_model, seed_resources
        >>> from sigma_jax.collapse.presets import get_preset
        >>> cfg = get_preset("smoke")
        >>> ctx, _ = attach_model(seed_resources(cfg, 0), cfg, None)      # untrained generation 0, for speed
        >>> meas, texts = measure_model(ctx, cfg, ctx.params0, 0.7)
        >>> len(texts), meas.metrics["sigma_sub"]["n_sub"], int(meas.sigma_full.n_sub)
        (160, 128, 160)
    """
    t0 = time.time()
    conts = generate(key_for(ctx.root, "measure"), ctx.graphdef, params, ctx.prompts, cfg.measure_len, temperature,
                     cfg.top_k, cfg.top_p, batch_size=cfg.sample_batch)
    texts = [ctx.tokenizer.decode(c) for c in conts]
    t1 = time.time()
    emb = ctx.encoder.encode(texts, batch_size=cfg.encode_batch)
    t2 = time.time()
    bpc = eval_bpc(ctx.graphdef, params, ctx.eval_windows)
    nll = continuation_nll(ctx.graphdef, ctx.params0, ctx.prompts, conts) / math.log(2.0)
    meas = measure(texts=texts, emb=emb, subset_idx=ctx.subset_idx, delta=cfg.delta, nll_bits=nll, bpc=bpc)
    meas.metrics["time_s"] = {"sample": t1 - t0, "encode": t2 - t1, "metrics": time.time() - t2}
    return meas, texts


def null_resamples(ctx: SeedContext, cfg: CollapseConfig, temperature: float) -> np.ndarray:
    """U_cov (fixed subset) of generation 0 re-sampled with ``cfg.null_keys`` other sampling keys.

    Example:
        >>> from sigma_jax.collapse.context import attach_model, seed_resources
        >>> from sigma_jax.collapse.presets import get_preset
        >>> cfg = get_preset("smoke")
        >>> ctx, _ = attach_model(seed_resources(cfg, 0), cfg, None)      # untrained generation 0, for speed
        >>> u = null_resamples(ctx, cfg, 0.7)
        >>> u.shape, bool(np.isfinite(u).all())
        ((20,), True)
    """
    out = []
    for i in range(cfg.null_keys):
        conts = generate(key_for(ctx.root, "null", i), ctx.graphdef, ctx.params0, ctx.prompts, cfg.measure_len,
                         temperature, cfg.top_k, cfg.top_p, batch_size=cfg.sample_batch)
        emb = ctx.encoder.encode([ctx.tokenizer.decode(c) for c in conts], batch_size=cfg.encode_batch)
        out.append(float(subset_report(emb, ctx.subset_idx, cfg.delta).u_cov))
    return np.asarray(out, np.float64)


def synthesize(ctx: SeedContext, cfg: CollapseConfig, params, temperature: float, mix: TrainingMix, key) -> list:
    """A synthetic set of exactly ``cfg.train_chars`` characters: rounds of ``synth_streams``
    streams of ``synth_len`` characters, each started after a newline of the training text
    (``mix``), cut to complete lines, until the budget is reached.

    Example:
        >>> from sigma_jax.collapse.context import attach_model, seed_resources
        >>> from sigma_jax.collapse.presets import get_preset
        >>> cfg = get_preset("smoke")
        >>> ctx, _ = attach_model(seed_resources(cfg, 0), cfg, None)      # untrained generation 0, for speed
        >>> mix = training_mix(None, "replace", 0, [list(ctx.real[0])])
        >>> lines = synthesize(ctx, cfg, ctx.params0, 1.0, mix, jax.random.key(3))
        >>> n_chars(lines) == cfg.train_chars
        True
    """
    arrays = window_sampler(mix, ctx.tokenizer, ctx.window)[1]
    w = np.asarray([x for x in mix.weights if x > 0])
    lines: list = []
    for r in range(_MAX_SYNTH_ROUNDS):
        if n_chars(lines) >= cfg.train_chars:
            break
        kr = jax.random.fold_in(key, r)
        pr = stream_prompts(jax.random.fold_in(kr, 0), arrays, w / w.sum(), cfg.synth_streams, cfg.synth_prompt_len,
                            ctx.tokenizer.newline_id)
        streams = generate_stream(jax.random.fold_in(kr, 1), ctx.graphdef, params, pr, cfg.synth_len,
                                  ctx.model_cfg.block_size, temperature, cfg.top_k, cfg.top_p,
                                  batch_size=min(cfg.sample_batch, cfg.synth_streams))
        lines += cut_streams([ctx.tokenizer.decode(s) for s in streams])
    if n_chars(lines) < cfg.train_chars:
        raise RuntimeError(f"{_MAX_SYNTH_ROUNDS} rounds of synthetic streams gave {n_chars(lines)} characters, fewer "
                           f"than train_chars={cfg.train_chars}; raise synth_streams or synth_len.")
    return take_chars(lines, cfg.train_chars)


def train_generation(state: ArmState, cfg: CollapseConfig, key, *, progress=None) -> Trained:
    """Step 1-2 of generation ``state.generation + 1``: its training data and model.

    ``control``'s model does not depend on the temperature: the runner trains it once per
    seed and generation and hands it to every control arm (``run_generation(trained=...)``).

    Example:
        >>> from sigma_jax.collapse.context import attach_model, seed_resources
        >>> from sigma_jax.collapse.presets import get_preset
        >>> cfg = get_preset("smoke")
        >>> ctx, _ = attach_model(seed_resources(cfg, 0), cfg, None)      # untrained generation 0, for speed
        >>> state = ArmState(ctx, "control", 0.7, 0, (), (), None, ctx.params0, ())
        >>> tr = train_generation(state, cfg, jax.random.fold_in(ctx.root, 1))
        >>> tr.mix.chars == cfg.train_chars, tr.mix.lines[0] == list(ctx.real[1])   # control: fresh real set 1
        (True, True)
    """
    ctx, g = state.ctx, state.generation + 1
    sources = [ctx.real[0]] + [list(s) for s in state.synthetic[:g]]
    fresh = ctx.real[g] if Strategy.parse(state.strategy).name == "control" else None
    mix = training_mix(jax.random.fold_in(key, TAGS["mix"]), state.strategy, g, sources, fresh_real=fresh)
    if cfg.init == "fresh":
        init = nnx.split(Transformer(ctx.model_cfg, rngs=nnx.Rngs(params=jax.random.fold_in(key, TAGS["init"]))))[1]
    elif cfg.init == "base-reset":
        init = ctx.params0
    else:
        if state.params is None:
            raise ValueError("init='carry-forward' needs the previous generation's weights in `state.params`.")
        init = state.params
    return fit(ctx, cfg, init, mix, jax.random.fold_in(key, TAGS["train"]), progress=progress)


def drift_fields(report0: SigmaReport, report: SigmaReport, null: NullSpread) -> dict:
    """dU and dG against generation 0, SIGMA's band of dU, the calibrated null, the threshold
    ``max(band, null_q95)`` (from :func:`sigma_jax.drift`), which of the two binds, and the verdict.

    ``below_band`` / ``above_band`` compare the raw ``dU`` (the quantity the null re-samples
    measure) with the threshold; ``significant`` is :func:`sigma_jax.drift`'s own call (which uses
    the bias-corrected difference ``dU_estimate`` where SIGMA's interval is valid).  A non-finite
    band (an interval the report marks invalid) leaves the null alone.

    Example:
        >>> from sigma_jax.report import SigmaStats, report_from_stats
        >>> r0, r1 = (report_from_stats(SigmaStats(np.eye(2) * g, None, None, 0, 9, 9, 2)) for g in (9.0, 8.0))
        >>> null = empirical_null(np.linspace(-0.1, 0.1, 20), 0.0)
        >>> d = drift_fields(r0, r1, null)
        >>> round(d["dU"], 4), d["binding"], d["below_band"]
        (-0.2355, 'null', True)
    """
    q = float(null.quantile)
    d = drift([report0, report], null_spread=q)
    du = float(d.dU[1])
    if hasattr(d, "threshold"):  # the calibrated drift of sigma_jax.report: band and threshold apart
        band, thr = float(d.band[1]), float(d.threshold[1])
        extra = {"dU_estimate": float(d.dU_estimate[1]), "significant": bool(d.significant[1])}
    else:  # older drift: `band` is already max(Theorem-3 band, null)
        band, thr = float(drift([report0, report]).band[1]), float(d.band[1])
        extra = {"significant": bool(d.significant[1])}
    if not np.isfinite(thr):
        thr = q
    binding = "band" if np.isfinite(band) and band > q else "null"
    return {"dU": du, "dG": float(d.dG[1]), "band": band, "null_q95": q, "null_level": float(null.level),
            "threshold": thr, "binding": binding, "below_band": bool(du < -thr), "above_band": bool(du > thr),
            **extra}


def _train_fields(cfg: CollapseConfig, trained_mix: TrainingMix, final_loss: float, monitor: list) -> dict:
    chars = trained_mix.chars
    seen = cfg.train.total_steps * cfg.train.batch_size * (cfg.train.seq_len or cfg.model.block_size)
    out = {"train_chars": int(chars), "train_steps": int(cfg.train.total_steps),
           "train_epochs": round(seen / chars, 4),
           "train_mix": {"counts": trained_mix.counts.tolist(), "weights": np.round(trained_mix.weights, 6).tolist(),
                         "chars": [n_chars(x) for x in trained_mix.lines]},
           "train_final_loss": float(final_loss)}
    if monitor:
        out["train_monitor"] = monitor
    return out


# --------------------------------------------------------------------------- generation 0 and the arms


def measure_generation0(ctx: SeedContext, cfg: CollapseConfig, temperature: float, *, final_loss: float,
                        monitor: list, with_synthetic: bool) -> Generation0:
    """Measure generation 0 at ``temperature``, re-sample it with ``null_keys`` other keys
    (:func:`~sigma_jax.report.empirical_null`) and, when an arm reads it, synthesise its set.

    Example:
        >>> from sigma_jax.collapse.context import attach_model, seed_resources
        >>> from sigma_jax.collapse.presets import get_preset
        >>> cfg = get_preset("smoke")
        >>> ctx, _ = attach_model(seed_resources(cfg, 0), cfg, None)      # untrained generation 0, for speed
        >>> g0 = measure_generation0(ctx, cfg, 0.7, final_loss=4.6, monitor=[], with_synthetic=True)
        >>> g0.null.num_resamples, n_chars(g0.synthetic) == cfg.train_chars, g0.metrics["train_chars"]
        (20, True, 6000)
    """
    t0 = time.time()
    mt = _measure_t(cfg, temperature)
    meas, texts = measure_model(ctx, cfg, ctx.params0, mt)
    t1 = time.time()
    u_null = null_resamples(ctx, cfg, mt)
    null = empirical_null(u_null, float(meas.sigma_sub.u_cov), level=cfg.null_level)
    m = meas.metrics
    m["time_s"]["null"] = time.time() - t1
    m.update(null_u_cov=u_null.tolist(), null_keys=int(cfg.null_keys))
    synth = None
    mix0 = training_mix(None, "replace", 0, [ctx.real[0]])
    if with_synthetic:
        t2 = time.time()
        synth = synthesize(ctx, cfg, ctx.params0, float(temperature), mix0,
                           jax.random.fold_in(jax.random.fold_in(ctx.root, 0), TAGS["synth"]))
        m["synthetic"] = {"lines": len(synth), "chars": n_chars(synth), "time_s": time.time() - t2}
    m.update(_train_fields(cfg, mix0, final_loss, monitor))
    m["time_s"]["generation"] = time.time() - t0
    return Generation0(m, meas.sigma_sub, null, synth, texts)


def _row(metrics: dict, state: ArmState, g: int, drift_row: dict) -> dict:
    row = dict(metrics)
    row.update(generation=g, arm=arm_name(state.strategy, state.temperature, state.ctx.seed),
               strategy=state.strategy, temperature=state.temperature, seed=int(state.ctx.seed))
    row.update(drift_row)
    return row


def start_arm(ctx: SeedContext, cfg: CollapseConfig, strategy: str, temperature: float,
              gen0: Generation0) -> tuple[ArmState, dict]:
    """A new arm at generation 0 and its first metrics row.

    Example:
        >>> from sigma_jax.collapse.context import attach_model, seed_resources
        >>> from sigma_jax.collapse.presets import get_preset
        >>> cfg = get_preset("smoke")
        >>> ctx, _ = attach_model(seed_resources(cfg, 0), cfg, None)      # untrained generation 0, for speed
        >>> g0 = measure_generation0(ctx, cfg, 0.7, final_loss=4.6, monitor=[], with_synthetic=True)
        >>> state, row0 = start_arm(ctx, cfg, "replace", 0.7, g0)
        >>> row0["arm"], row0["dU"], len(state.synthetic), state.generation
        ('replace_T0.7_s0', 0.0, 1, 0)
    """
    synth = (tuple(gen0.synthetic),) if uses_synthetic(strategy) else ()
    state = ArmState(ctx, strategy, float(temperature), 0, synth, (gen0.report,), gen0.null, ctx.params0,
                     tuple(gen0.samples))
    return state, _row(gen0.metrics, state, 0, drift_fields(gen0.report, gen0.report, gen0.null))


def resume_arm(ctx: SeedContext, strategy: str, temperature: float, rows: list, synthetic: list, null: NullSpread,
               params=None) -> ArmState:
    """An arm rebuilt from its stored rows (reports via ``SigmaReport.from_dict``) and synthetic sets.

    Example:
        >>> import json
        >>> from sigma_jax.collapse.context import attach_model, seed_resources
        >>> from sigma_jax.collapse.presets import get_preset
        >>> cfg = get_preset("smoke")
        >>> ctx, _ = attach_model(seed_resources(cfg, 0), cfg, None)      # untrained generation 0, for speed
        >>> g0 = measure_generation0(ctx, cfg, 0.7, final_loss=4.6, monitor=[], with_synthetic=False)
        >>> state, row0 = start_arm(ctx, cfg, "control", 0.7, g0)
        >>> back = resume_arm(ctx, "control", 0.7, [json.loads(json.dumps(row0))], [], g0.null)
        >>> float(back.reports[0].u_cov) == float(state.reports[0].u_cov), back.generation
        (True, 0)
    """
    reports = tuple(SigmaReport.from_dict(r["sigma_sub"]) for r in rows)
    return ArmState(ctx, strategy, float(temperature), len(rows) - 1, tuple(tuple(s) for s in synthetic), reports,
                    null, params, ())


def run_generation(state: ArmState, cfg: CollapseConfig, key, *, trained: Trained | None = None,
                   progress=None) -> tuple[ArmState, dict]:
    """Generation ``state.generation + 1`` of one arm: train, measure, drift, synthesise.

    Args:
        state: the arm after its last finished generation.
        cfg: the experiment.
        key: the generation's key, ``fold_in(PRNGKey(seed), g)`` (shared by the seed's arms).
        trained: a model already trained for this arm and generation (a control twin at
            another temperature); trained here when None.

    Returns:
        ``(state, row)``: the arm after generation g and its metrics row (JSON-ready).

    Example:
        >>> from sigma_jax.collapse.context import attach_model, seed_resources
        >>> from sigma_jax.collapse.presets import get_preset
        >>> cfg = get_preset("smoke")
        >>> ctx, _ = attach_model(seed_resources(cfg, 0), cfg, None)      # untrained generation 0, for speed
        >>> g0 = measure_generation0(ctx, cfg, 0.7, final_loss=4.6, monitor=[], with_synthetic=True)
        >>> state, row0 = start_arm(ctx, cfg, "replace", 0.7, g0)
        >>> state, row1 = run_generation(state, cfg, jax.random.fold_in(ctx.root, 1))
        >>> row1["generation"], row1["train_chars"] == cfg.train_chars, len(state.reports), len(state.synthetic)
        (1, True, 2, 2)
    """
    g = state.generation + 1
    if g >= cfg.generations:
        raise ValueError(f"the arm already finished generation {state.generation} of {cfg.generations}.")
    t0 = time.time()
    tr = train_generation(state, cfg, key, progress=progress) if trained is None else trained
    meas, texts = measure_model(state.ctx, cfg, tr.params, _measure_t(cfg, state.temperature))
    metrics = meas.metrics
    synthetic = state.synthetic
    if uses_synthetic(state.strategy) and g < cfg.generations - 1:
        t1 = time.time()
        new = synthesize(state.ctx, cfg, tr.params, state.temperature, tr.mix, jax.random.fold_in(key, TAGS["synth"]))
        synthetic = synthetic + (tuple(new),)
        metrics["synthetic"] = {"lines": len(new), "chars": n_chars(new), "time_s": time.time() - t1}
    metrics.update(_train_fields(cfg, tr.mix, tr.final_loss, tr.monitor))
    metrics["time_s"].update(train=tr.seconds, generation=time.time() - t0)
    new_state = state._replace(generation=g, synthetic=synthetic, reports=state.reports + (meas.sigma_sub,),
                               params=tr.params, samples=tuple(texts))
    return new_state, _row(metrics, new_state, g, drift_fields(state.reports[0], meas.sigma_sub, state.null))
