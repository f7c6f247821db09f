"""Per-stage costs of one collapse generation at a preset's sizes (to size the presets).

Times, for one seed at the preset's sizes: training (``--steps`` steps; steps/s, compile excluded),
the measurement (sampling n_k continuations, encoding, metrics), one null re-sample, one synthetic
set of ``train_chars`` characters and one checkpoint.  Prints wall and process-CPU seconds (the
machine may be shared: CPU seconds / cores is the uncontended estimate) and an estimate of the
whole preset.

Usage (about two minutes on 2 cores)::

    .venv/bin/python experiments/collapse_timing.py --preset study --steps 120
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


class _Clock:
    def __init__(self):
        self.rows = {}

    def __call__(self, name):
        clock = self

        class _Ctx:
            def __enter__(self):
                self.w, self.c = time.perf_counter(), time.process_time()

            def __exit__(self, *exc):
                clock.rows[name] = (time.perf_counter() - self.w, time.process_time() - self.c)

        return _Ctx()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="study")
    p.add_argument("--steps", type=int, default=120, help="training steps to time (after one compiled chunk)")
    args = p.parse_args(argv)

    import dataclasses

    import jax

    from sigma_jax.collapse import persist
    from sigma_jax.collapse.context import attach_model, fit, seed_resources
    from sigma_jax.collapse.data import training_mix
    from sigma_jax.collapse.generation import measure_model, synthesize
    from sigma_jax.collapse.measure import subset_report
    from sigma_jax.collapse.presets import get_preset
    from sigma_jax.lm.sample import generate

    cfg = get_preset(args.preset)
    clock = _Clock()
    with clock("setup (corpus, real sets, prompts)"):
        ctx = seed_resources(cfg, 0)
    mix = training_mix(None, "replace", 0, [list(ctx.real[0])])
    chunk = cfg.train.steps_per_call
    short = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=chunk, monitor_every=0))
    with clock("train: compile + first chunk"):
        fit(ctx, short, ctx.template, mix, jax.random.key(1))
    timed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=args.steps))
    with clock(f"train: {timed.train.total_steps} steps (with monitor)"):
        tr = fit(ctx, timed, ctx.template, mix, jax.random.key(2))
    with clock("encoder load"):
        ctx, choice = attach_model(ctx, cfg, tr.params)
    t = max(cfg.temperatures)
    with clock("measure, first (compiles)"):
        measure_model(ctx, cfg, tr.params, t)
    with clock("measure (sample + encode + metrics + bpc + NLL)"):
        meas, _ = measure_model(ctx, cfg, tr.params, t)
    with clock("null re-sample (sample + encode + SIGMA)"):
        conts = generate(jax.random.key(9), ctx.graphdef, tr.params, ctx.prompts, cfg.measure_len, t, cfg.top_k,
                         cfg.top_p, batch_size=cfg.sample_batch)
        emb = ctx.encoder.encode([ctx.tokenizer.decode(c) for c in conts], batch_size=cfg.encode_batch)
        subset_report(emb, ctx.subset_idx, cfg.delta)
    with clock(f"synthetic set ({cfg.train_chars} chars)"):
        synthesize(ctx, cfg, tr.params, t, mix, jax.random.key(5))
    with clock("checkpoint"):
        persist.save_params(os.path.join(tempfile.mkdtemp(), "ckpt"), tr.params)

    r = clock.rows
    train_name = f"train: {timed.train.total_steps} steps (with monitor)"
    sps = timed.train.total_steps / r[train_name][0]
    meas_s = r["measure (sample + encode + metrics + bpc + NLL)"][0]
    null_s = r["null re-sample (sample + encode + SIGMA)"][0]
    synth_s = r[f"synthetic set ({cfg.train_chars} chars)"][0]
    ck_s = r["checkpoint"][0]
    train_s = cfg.train.total_steps / sps
    n_t, n_seeds, G = len(cfg.temperatures), len(cfg.seeds), cfg.generations
    strategies = list(cfg.strategies)
    synth_arms = sum(s != "control" for s in strategies)
    ctrl = "control" in strategies
    per_seed = (train_s + ck_s + n_t * (meas_s + cfg.null_keys * null_s + (synth_s if synth_arms else 0))
                + (G - 1) * (synth_arms * n_t * train_s + (train_s if ctrl else 0)
                             + len(strategies) * n_t * (meas_s + ck_s))
                + max(G - 2, 0) * synth_arms * n_t * synth_s)
    out = {"preset": cfg.name, "encoder": choice.record()["used"], "stages": {k: {"wall_s": round(w, 2),
                                                                                 "cpu_s": round(c, 2)}
                                                                             for k, (w, c) in r.items()},
           "train_steps_per_s": round(sps, 2), "estimate_min": round(n_seeds * per_seed / 60, 1),
           "load_avg": os.getloadavg()}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
