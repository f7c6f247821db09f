"""The runner: every arm x seed of a :class:`~sigma_jax.collapse.presets.CollapseConfig`, resumable.

For each seed: generation 0 is trained once on the real set (shared by every arm of the seed),
measured at each temperature with its calibrated null (``null_keys`` re-samples), and its
synthetic set is sampled where an arm reads it.  Then generations 1..G-1 are run
*generation-interleaved* (every arm finishes generation g before any starts g+1, so a partial
run compares arms at equal depth) by :func:`~sigma_jax.collapse.generation.run_generation`.
``control`` arms train on real text only, so their model does not depend on the temperature:
it is trained once per seed and generation and measured at each temperature.

A generation is finished when its row is in ``<arm>/metrics.jsonl`` (written last, atomically,
after its checkpoint and synthetic set), so ``resume=True`` continues from the last finished
generation and reproduces the uninterrupted run's metrics.  The fixed subset indices are
stored in ``base_s<seed>/subset_indices.json`` and read back, never recomputed.

Example (a whole run takes minutes; shown here: an existing run is never overwritten):
    >>> import os, shutil, tempfile
    >>> from sigma_jax.collapse.presets import get_preset
    >>> out = tempfile.mkdtemp()
    >>> _ = open(os.path.join(out, "config.json"), "w").write("{}")
    >>> run_experiment(get_preset("smoke"), out)
    Traceback (most recent call last):
    ...
    FileExistsError: ... already holds a run; pass resume=True (--resume) or another --out.
    >>> shutil.rmtree(out)
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

import jax
import numpy as np

from sigma_jax import _io
from sigma_jax.collapse import persist
from sigma_jax.collapse.context import attach_model, key_for, load_real_text, seed_resources, train_generation0
from sigma_jax.collapse.generation import (Generation0, measure_generation0, resume_arm, run_generation, start_arm,
                                           train_generation, uses_synthetic)
from sigma_jax.collapse.measure import check_regime
from sigma_jax.collapse.presets import CollapseConfig
from sigma_jax.lm.data import CharTokenizer
from sigma_jax.report import SigmaReport, empirical_null

__all__ = ["run_experiment"]


def _bar(progress: bool, total: int, desc: str):
    return _io.progress_bar(progress, total, desc, leave=False, dynamic_ncols=True)


def _generation0(cfg, ctx, base, temps_with_synth, temps, info, log) -> dict:
    """Generation 0 of one seed at every temperature: measured (+ null, + synthetic set) or read back."""
    out = {}
    for t in temps:
        tag = persist.fmt_t(t)
        path = os.path.join(base, f"gen0_T{tag}.json")
        spath = os.path.join(base, f"synthetic_gen0_T{tag}.txt")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                m = json.load(fh)
            null = empirical_null(m["null_u_cov"], m["sigma_sub"]["u_cov"], level=cfg.null_level)
            synth = persist.load_lines(spath) if t in temps_with_synth else None
            out[t] = Generation0(m, SigmaReport.from_dict(m["sigma_sub"]), null, synth, [])
            continue
        g0 = measure_generation0(ctx, cfg, t, final_loss=info["final_loss"], monitor=info["train_monitor"],
                                 with_synthetic=t in temps_with_synth)
        if g0.synthetic is not None:
            persist.save_lines(spath, g0.synthetic)
        _io.write_text_atomic(os.path.join(base, f"samples_gen0_T{tag}.txt"), json.dumps(g0.samples) + "\n")
        _io.write_json_atomic(path, g0.metrics, indent=None)
        out[t] = g0
        m = g0.metrics
        log(f"seed {ctx.seed} T={t:g}: generation 0: U_cov {m['sigma_sub']['u_cov']:.1f} "
            f"(band ±{m['sigma_sub']['ci_halfwidth']:.1f}, null q{100 * cfg.null_level:g} {g0.null.quantile:.1f} "
            f"over {cfg.null_keys} keys), bpc {m['bpc_heldout']:.3f} [{m['time_s']['generation']:.0f} s]")
    return out


def _prepare_seed(cfg: CollapseConfig, seed: int, text, out_dir: str, progress: bool, log):
    """The seed's context (generation 0 trained or restored, encoder attached) and its record."""
    base = os.path.join(out_dir, f"base_s{seed}")
    os.makedirs(base, exist_ok=True)
    root = jax.random.key(int(seed))
    subset = persist.subset_indices(os.path.join(base, "subset_indices.json"), key_for(root, "subset"),
                                    cfg.n_measure, cfg.n_sub)
    ctx = seed_resources(cfg, seed, text=text, subset_idx=subset)
    done, ck0 = os.path.join(base, "gen0_done.json"), os.path.join(base, "ckpt_gen0")
    if os.path.exists(done):
        params0 = persist.load_params(ck0, ctx.template)
        with open(done, encoding="utf-8") as fh:
            info = json.load(fh)
    else:
        bar = _bar(progress, cfg.train.total_steps, f"seed {seed} gen 0 train")
        tr = train_generation0(ctx, cfg, progress=None if bar is None else bar.update)
        if bar is not None:
            bar.close()
        params0 = tr.params
        persist.save_params(ck0, params0)
        info = {"train_s": tr.seconds, "final_loss": tr.final_loss, "train_monitor": tr.monitor}
        _io.write_json_atomic(done, info, indent=None)
        log(f"seed {seed}: generation 0 trained ({tr.seconds:.0f} s, loss {tr.final_loss:.3f} nats)")
    ctx, choice = attach_model(ctx, cfg, params0)
    record = {"encoder": choice.record(), "regime": check_regime(cfg.n_sub, ctx.encoder.dim)}
    if choice.fallback:
        log(f"WARNING seed {seed}: encoder 'auto' fell back to {ctx.encoder.name} ({choice.fallback})")
    return ctx, info, record, base


def _open_arm(cfg, ctx, strategy, temp, g0: Generation0, out_dir, resume, record):
    name = persist.arm_name(strategy, temp, ctx.seed)
    adir = os.path.join(out_dir, name)
    for sub in ("ckpt", "synthetic", "samples"):
        os.makedirs(os.path.join(adir, sub), exist_ok=True)
    mpath = os.path.join(adir, "metrics.jsonl")
    rows = persist.read_metrics(mpath) if resume else []
    if not rows:
        state, row0 = start_arm(ctx, cfg, strategy, temp, g0)
        _io.write_jsonl_atomic(mpath, [row0])
        rows = [row0]
    else:
        last = len(rows) - 1
        synth = []
        if uses_synthetic(strategy):
            synth = [g0.synthetic] + [persist.load_lines(os.path.join(adir, "synthetic", f"gen{k}.txt"))
                                      for k in range(1, min(last, cfg.generations - 2) + 1)]
        params = ctx.params0 if last == 0 else (
            persist.load_params(os.path.join(adir, "ckpt", f"gen{last}"), ctx.template)
            if cfg.init == "carry-forward" else None)
        state = resume_arm(ctx, strategy, temp, rows, synth, g0.null, params)
    _io.write_json_atomic(os.path.join(adir, "config.json"),
                          {"arm": name, "strategy": strategy, "temperature": temp, "seed": ctx.seed, "init": cfg.init,
                           **record, "experiment": cfg.to_json()}, indent=1)
    return name, state, rows


def _finish(out_dir, name, state, row, mpath):
    adir = os.path.join(out_dir, name)
    g = state.generation
    if len(state.synthetic) > g:  # this generation produced the next one's source
        persist.save_lines(os.path.join(adir, "synthetic", f"gen{g}.txt"), state.synthetic[g])
    persist.save_params(os.path.join(adir, "ckpt", f"gen{g}"), state.params)
    _io.write_text_atomic(os.path.join(adir, "samples", f"gen{g}.txt"), json.dumps(list(state.samples)) + "\n")
    _io.append_jsonl(mpath, row)  # last: the generation is finished


def run_experiment(cfg: CollapseConfig, out_dir: str, *, resume: bool = False, progress: bool = False,
                   stop_after: int | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Run (or resume) every arm x seed of ``cfg`` into ``out_dir``; returns ``{arm: [metrics rows]}``.

    ``stop_after``: finish generations 0..stop_after and return (simulates an interruption).

    Example (a whole run takes minutes; shown here: a resumed run must keep its config):
        >>> import os, shutil, tempfile
        >>> from sigma_jax.collapse.presets import get_preset
        >>> out = tempfile.mkdtemp()
        >>> _ = open(os.path.join(out, "config.json"), "w").write('{"experiment": {"name": "other"}}')
        >>> run_experiment(get_preset("smoke"), out, resume=True)
        Traceback (most recent call last):
        ...
        ValueError: --resume: the config in ... differs from the requested one; ...
        >>> shutil.rmtree(out)
    """
    log = log or (lambda s: None)
    cfg_json = cfg.to_json()
    persist.open_run(out_dir, cfg_json, resume)
    text = load_real_text(cfg, CharTokenizer())
    arms = [(s, float(t)) for s in cfg.strategies for t in cfg.temperatures]
    temps = sorted({t for _, t in arms})
    temps_with_synth = {t for s, t in arms if uses_synthetic(s)}
    results, records = {}, {}
    t_start = time.time()
    for seed in cfg.seeds:
        ctx, info, record, base = _prepare_seed(cfg, seed, text, out_dir, progress, log)
        records[str(seed)] = record
        gen0 = _generation0(cfg, ctx, base, temps_with_synth, temps, info, log)
        states, rows = {}, {}
        for s, t in arms:
            name, states[name], rows[name] = _open_arm(cfg, ctx, s, t, gen0[t], out_dir, resume, record)
        for g in range(1, cfg.generations):
            if stop_after is not None and g > stop_after:
                break
            key = jax.random.fold_in(ctx.root, g)
            control_model = None  # the control arms' model of this generation (temperature-free)
            for name, st in states.items():
                if st.generation >= g:
                    continue
                trained = None
                if not uses_synthetic(st.strategy):
                    reused = control_model is not None
                    if not reused:
                        bar = _bar(progress, cfg.train.total_steps, f"s{seed} control gen {g} train")
                        control_model = train_generation(st, cfg, key, progress=None if bar is None else bar.update)
                        if bar is not None:
                            bar.close()
                    trained = control_model
                bar = _bar(progress and trained is None, cfg.train.total_steps, f"{name} gen {g} train")
                st, row = run_generation(st, cfg, key, trained=trained, progress=None if bar is None else bar.update)
                if bar is not None:
                    bar.close()
                if trained is not None:
                    row["time_s"]["train_reused"] = reused
                _finish(out_dir, name, st, row, os.path.join(out_dir, name, "metrics.jsonl"))
                states[name] = st
                rows[name].append(row)
                log(f"{name} gen {g}: U_cov {row['sigma_sub']['u_cov']:.1f} (dU {row['dU']:+.1f}; threshold "
                    f"{row['threshold']:.1f} = {row['binding']}), bpc {row['bpc_heldout']:.3f}, distinct-2 "
                    f"{row['distinct_2']:.3f}, eff.rank(c) {row['eff_rank_centred']:.1f}, train_chars "
                    f"{row['train_chars']} [{row['time_s']['generation']:.0f} s]")
        results.update(rows)
    _io.write_json_atomic(os.path.join(out_dir, "config.json"),
                          {"experiment": cfg_json, "seeds": records, "arms": sorted(results), "jax": jax.__version__,
                           "numpy": np.__version__, "wall_s_last_invocation": time.time() - t_start}, indent=1)
    return results
