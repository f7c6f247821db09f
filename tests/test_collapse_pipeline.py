"""End-to-end tests of the recursive-training pipeline (smoke preset on the stdlib corpus).

The smoke run (1-layer d_model 32 LM, 3 generations, arms replace / accumulate / control,
LM-state encoder, 20 null re-samples) is run once uninterrupted and once interrupted after
generation 1 and resumed; both share the compiled functions of this process.
"""

import dataclasses
import json
import os
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest

from sigma_jax.collapse import persist
from sigma_jax.collapse.context import attach_model, load_real_text, seed_resources
from sigma_jax.collapse.data import n_chars, real_sets, take_chars, training_mix
from sigma_jax.collapse.generation import ArmState, train_generation
from sigma_jax.collapse.measure import check_regime, choose_encoder
from sigma_jax.collapse.pipeline import cut_streams, lexical_stats, read_metrics, run_experiment
from sigma_jax.collapse.presets import CollapseConfig, get_preset
from sigma_jax.collapse.report import write_report
from sigma_jax.collapse.strategies import source_counts
from sigma_jax.collapse.study import SUMMARY_COLUMNS, read_table
from sigma_jax.report import SigmaReport, drift, empirical_null

CFG = get_preset("smoke")
ARMS = ["accumulate_T0.7_s0", "control_T0.7_s0", "replace_T0.7_s0"]


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k != "time_s"}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _strip_times(obj) -> str:
    """Metrics without wall-clock fields (``time_s``, which legitimately differ between runs), as
    canonical JSON text (NaN fields -- an interval SIGMA marks invalid -- compare equal as text)."""
    return json.dumps(_strip(obj), sort_keys=True)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("full"))
    return out, run_experiment(CFG, out)


@pytest.fixture
def sources():
    real = [f"real line {i}" for i in range(200)]
    s1 = [f"synthetic one {i}" for i in range(50)]
    s2 = [f"synthetic two {i}" for i in range(40)]
    return [real, s1, s2]


def test_smoke_run_writes_everything(full_run):
    out, res = full_run
    assert sorted(res) == ARMS  # the smoke preset exercises every arm of the study
    for arm, rows in res.items():
        assert [r["generation"] for r in rows] == [0, 1, 2]
        assert json.dumps(read_metrics(os.path.join(out, arm, "metrics.jsonl")), sort_keys=True) == \
            json.dumps(rows, sort_keys=True)
        for g in (1, 2):
            assert os.path.isdir(os.path.join(out, arm, "ckpt", f"gen{g}"))
            assert os.path.exists(os.path.join(out, arm, "samples", f"gen{g}.txt"))
        # control never samples training text; the others write the next generation's source
        assert os.path.exists(os.path.join(out, arm, "synthetic", "gen1.txt")) == (not arm.startswith("control"))
        r0, r2 = rows[0], rows[2]
        assert r0["dU"] == 0.0 and len(r0["null_u_cov"]) == CFG.null_keys == 20
        assert r2["dU"] == pytest.approx(r2["sigma_sub"]["u_cov"] - r0["sigma_sub"]["u_cov"], abs=1e-9)
        d = drift([SigmaReport.from_dict(r0["sigma_sub"]), SigmaReport.from_dict(r2["sigma_sub"])])
        band = float(d.band[1])  # SIGMA's own band of dU, as sigma_jax.drift computes it
        assert r2["band"] == pytest.approx(band, nan_ok=True)
        assert r2["threshold"] == pytest.approx(r2["null_q95"] if np.isnan(band) else max(band, r2["null_q95"]))
        assert r2["binding"] == ("band" if band > r2["null_q95"] else "null")
        assert r2["below_band"] == (r2["dU"] < -r2["threshold"])
        assert r2["sigma_sub"]["n_sub"] == CFG.n_sub and r2["sigma_full"]["n_sub"] == CFG.n_measure
        assert sum(r2["nll_gen0_bits"]["hist"]) == CFG.n_measure
        for tag in ("uncentred", "centred"):
            assert 1.0 <= r2[f"eff_rank_{tag}"] <= CFG.model.d_model
        # the LM's own hidden states, monitored inside the jitted training step every monitor_every steps
        mon = r2["train_monitor"]
        every, rows_per_step = CFG.train.monitor_every, CFG.train.batch_size * CFG.model.block_size
        assert [e["step"] for e in mon] == list(range(0, CFG.train.steps, every))
        assert all(e["n_rows"] == (e["step"] + 1) * rows_per_step for e in mon)
        assert all(1.0 <= e["effective_rank"] <= CFG.model.d_model and np.isfinite(e["u_cov"]) for e in mon)
    # equal budgets: every row records the training-set size and the steps
    for g in range(3):
        rep, ctl, acc = (res[a][g] for a in ("replace_T0.7_s0", "control_T0.7_s0", "accumulate_T0.7_s0"))
        assert rep["train_chars"] == ctl["train_chars"] == CFG.train_chars
        assert acc["train_chars"] == (g + 1) * CFG.train_chars  # the pooled data set
        assert rep["train_steps"] == ctl["train_steps"] == acc["train_steps"] == CFG.train.total_steps
    # generation 0 is shared by the arms (same seed and temperature)
    a, b, c = (res[k][0] for k in ARMS)
    assert _strip_times(a["sigma_sub"]) == _strip_times(b["sigma_sub"]) == _strip_times(c["sigma_sub"])
    assert a["bpc_heldout"] == c["bpc_heldout"]
    cfg = json.load(open(os.path.join(out, "config.json")))
    enc = cfg["seeds"]["0"]["encoder"]
    assert cfg["experiment"]["name"] == "smoke" and enc["name"] == enc["used"] == "lm-gen0-meanpool"
    assert enc["requested"] == "lm" and enc["fallback"] is None
    assert cfg["seeds"]["0"]["regime"] == {"n_sub": 128, "dim": 32, "ratio": 4.0, "ok": True}
    report, figs = write_report(out)
    assert all(os.path.getsize(f) > 1000 for f in figs)
    assert "replace_T0.7_s0" in open(report).read()
    summary = read_table(os.path.join(out, "summary.csv"))
    assert len(summary) == 9 and set(SUMMARY_COLUMNS) <= set(summary[0])
    assert {r["arm"] for r in summary} == {"replace", "accumulate", "control"}


def test_null_is_the_calibrated_quantile_of_generation0_resamples(full_run):
    _, res = full_run
    r0 = res["replace_T0.7_s0"][0]
    dev = np.abs(np.asarray(r0["null_u_cov"]) - r0["sigma_sub"]["u_cov"])
    # 20 re-samples at 95%: the ceil(21 * 0.95) = 20th smallest |dU|, i.e. their maximum
    assert r0["null_q95"] == pytest.approx(np.sort(dev)[19], abs=0)
    assert r0["null_q95"] == empirical_null(r0["null_u_cov"], r0["sigma_sub"]["u_cov"]).quantile
    assert len(set(r0["null_u_cov"])) == CFG.null_keys  # other keys: other samples
    for arm in ARMS:
        assert all(r["null_q95"] == r0["null_q95"] and r["null_level"] == 0.95 for r in res[arm])
    with pytest.raises(ValueError, match="null_keys >= 19"):
        get_preset("smoke", null_keys=2)


def test_stored_subset_indices(full_run, tmp_path):
    out, res = full_run
    path = os.path.join(out, "base_s0", "subset_indices.json")
    stored = json.load(open(path))
    idx = np.asarray(stored["indices"])
    assert stored["n_measure"] == CFG.n_measure and idx.shape == (CFG.n_sub,)
    assert np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < CFG.n_measure
    # read back, never redrawn: another key returns the stored indices
    np.testing.assert_array_equal(persist.subset_indices(path, jax.random.key(12345), CFG.n_measure, CFG.n_sub), idx)
    bad = tmp_path / "subset_indices.json"
    bad.write_text(json.dumps({"n_measure": CFG.n_measure + 1, "indices": idx.tolist()}))
    with pytest.raises(ValueError, match="another configuration"):
        persist.subset_indices(str(bad), jax.random.key(0), CFG.n_measure, CFG.n_sub)


def test_resume_after_interruption_gives_identical_metrics(full_run, tmp_path):
    out_full, res_full = full_run
    out = str(tmp_path / "resumed")
    part = run_experiment(CFG, out, stop_after=1)
    assert sorted(part) == ARMS and all(len(rows) == 2 for rows in part.values())
    with pytest.raises(FileExistsError):
        run_experiment(CFG, out)  # refuses to overwrite without --resume
    with pytest.raises(ValueError, match="differs"):
        run_experiment(dataclasses.replace(CFG, generations=4), out, resume=True)
    # the resumed run reads the stored subset: a damaged file stops it instead of being redrawn
    path = os.path.join(out, "base_s0", "subset_indices.json")
    good = open(path).read()
    with open(path, "w") as fh:
        json.dump({"n_measure": CFG.n_measure, "indices": [0, 0]}, fh)
    with pytest.raises(ValueError, match="subset_indices.json"):
        run_experiment(CFG, out, resume=True)
    with open(path, "w") as fh:
        fh.write(good)
    res = run_experiment(CFG, out, resume=True)
    assert open(path).read() == good
    for arm in res_full:
        assert _strip_times(res[arm]) == _strip_times(res_full[arm])
        assert _strip_times(read_metrics(os.path.join(out, arm, "metrics.jsonl"))) == \
            _strip_times(read_metrics(os.path.join(out_full, arm, "metrics.jsonl")))


def test_control_trains_on_fresh_real_text_of_replace_size(full_run):
    out, _ = full_run
    ctx, _ = attach_model(seed_resources(CFG, 0), CFG, None)
    corpus = "\n".join(ln for s in ctx.real for ln in s)
    corpus_lines = set(load_real_text(CFG)[0])
    for g in (1, 2):
        state = ArmState(ctx, "control", 0.7, g - 1, (), (), None, None, ())
        mix = train_generation(state, dataclasses.replace(CFG, train=dataclasses.replace(CFG.train, steps=1,
                                                                                          monitor_every=0)),
                               jax.random.fold_in(ctx.root, g)).mix
        assert mix.lines[0] == list(ctx.real[g]) and mix.weights[0] == 1.0 and mix.chars == CFG.train_chars
        assert ctx.real[g] != ctx.real[0]  # fresh (disjoint slices of the shuffled corpus: see test_take_chars...)
        assert set(ctx.real[g][:-1]) <= corpus_lines  # real text: corpus lines (only the last one is cut)
        assert any(ln.startswith(ctx.real[g][-1]) for ln in corpus_lines)
    # the replace arm's synthetic sources have exactly the same size
    synth0 = persist.load_lines(os.path.join(out, "base_s0", "synthetic_gen0_T0.7.txt"))
    synth1 = persist.load_lines(os.path.join(out, "replace_T0.7_s0", "synthetic", "gen1.txt"))
    assert n_chars(synth0) == n_chars(synth1) == CFG.train_chars
    assert not any(ln in corpus for ln in synth1[:5] if len(ln) > 40)  # model text, not copied real lines


def test_take_chars_and_real_sets():
    lines = ["abc", "de", "fghij", "k"]
    for budget in range(1, n_chars(lines) + 1):
        got = take_chars(lines, budget)
        assert n_chars(got) == budget and got[:-1] == lines[: len(got) - 1]
        assert lines[len(got) - 1].startswith(got[-1])  # only the last line is cut (maybe to "")
    with pytest.raises(ValueError, match="not enough text"):
        take_chars(lines, n_chars(lines) + 1)
    corpus = [f"verse {i} " + "x" * (i % 17) for i in range(500)]
    sets = real_sets(jax.random.key(3), corpus, 700, 4)
    assert [n_chars(s) for s in sets] == [700] * 4
    assert all(set(a[:-1]).isdisjoint(b[:-1]) for i, a in enumerate(sets) for b in sets[i + 1:])
    assert sets == real_sets(jax.random.key(3), corpus, 700, 4)  # a pure function of the key
    assert sets != real_sets(jax.random.key(4), corpus, 700, 4)
    with pytest.raises(ValueError, match="lower `train_chars`"):
        real_sets(jax.random.key(3), corpus, 10_000, 4)


def test_replace_accumulate_and_control_sets(sources):
    rep = training_mix(jax.random.key(0), "replace", 2, sources)
    assert rep.lines[2] == sources[2] and rep.lines[0] == [] and rep.lines[1] == []
    assert rep.weights.tolist() == [0.0, 0.0, 1.0]
    acc = training_mix(jax.random.key(0), "accumulate:equal", 2, sources)
    assert acc.lines == sources and np.allclose(acc.weights, 1 / 3)
    acc_s = training_mix(jax.random.key(0), "accumulate:size", 2, sources)
    chars = np.array([sum(len(x) + 1 for x in s) for s in sources], float)
    assert acc_s.lines == sources and np.allclose(acc_s.weights, chars / chars.sum())
    fresh = [f"fresh {i}" for i in range(30)]
    ctl = training_mix(jax.random.key(0), "control", 2, sources[:1], fresh_real=fresh)
    assert ctl.lines == [fresh, [], []] and ctl.weights.tolist() == [1.0, 0.0, 0.0] and ctl.chars == n_chars(fresh)
    with pytest.raises(ValueError, match="fresh_real"):
        training_mix(jax.random.key(0), "control", 1, sources)
    g0 = training_mix(jax.random.key(0), "mix", 0, sources[:1])
    assert g0.lines == [sources[0]] and g0.weights.tolist() == [1.0]


@pytest.mark.parametrize("spec", ["mix:0.1", "mix:0.5", "accumulate-subsample"])
def test_fixed_size_strategies(sources, spec):
    g = 2
    m = training_mix(jax.random.key(1), spec, g, sources)
    sizes = [len(s) for s in sources]
    expect = source_counts(spec, g, sizes, total=sizes[g])
    assert m.counts.tolist() == expect.tolist() and sum(len(x) for x in m.lines) == sizes[g]
    for lines, src in zip(m.lines, sources):
        assert set(lines) <= set(src) and len(set(lines)) == len(lines)  # subsets, without replacement
    if spec.startswith("mix"):
        frac = float(spec.split(":")[1])
        assert m.counts[0] == round(frac * sizes[g]) and m.counts[1] == 0
    else:
        assert np.allclose(m.counts / sizes[g], np.array(sizes) / sum(sizes), atol=1 / sizes[g])
    chars = np.array([sum(len(x) + 1 for x in lines) for lines in m.lines], float)
    assert np.allclose(m.weights, chars / chars.sum())
    again = training_mix(jax.random.key(1), spec, g, sources)
    assert again.lines == m.lines  # a pure function of the key


def test_encoder_auto_fallback_is_loud_and_minilm_is_strict(monkeypatch):
    from flax import nnx

    from sigma_jax import encoders
    from sigma_jax.lm.data import CharTokenizer
    from sigma_jax.lm.model import ModelConfig, Transformer

    def broken(*a, **k):
        raise FileNotFoundError("no weights here")

    monkeypatch.setattr(encoders.MiniLMEncoder, "load", classmethod(lambda cls, *a, **k: broken()))
    mcfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, block_size=8)
    graphdef, params = nnx.split(Transformer(mcfg, rngs=nnx.Rngs(0)))
    with pytest.warns(RuntimeWarning, match="FALLING BACK"):
        ch = choose_encoder("auto", graphdef, params, CharTokenizer(), mcfg)
    rec = ch.record()
    assert rec["requested"] == "auto" and rec["used"] == "lm-gen0-meanpool" and "no weights here" in rec["fallback"]
    with pytest.raises(ImportError, match="--encoder lm"):
        choose_encoder("minilm", graphdef, params, CharTokenizer(), mcfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_encoder("lm", graphdef, params, CharTokenizer(), mcfg).fallback is None


def test_regime_check():
    assert check_regime(1600, 384)["ok"]
    with pytest.warns(RuntimeWarning, match="not trustworthy"):
        assert not check_regime(450, 384)["ok"]
    with pytest.raises(ValueError, match="n_sub = 384 <= m = 384"):
        check_regime(384, 384)


def test_presets_measure_in_the_regime_and_balance_budgets():
    for name in ("small", "study", "paper"):
        cfg = get_preset(name)
        assert cfg.n_sub >= 4 * 384 or (name == "paper" and cfg.n_sub >= 5 * 384)
        assert cfg.null_keys >= 20 and "control" in cfg.strategies
    study = get_preset("study")
    assert len(study.seeds) >= 3 and set(study.temperatures) == {0.7, 1.0}
    assert {"replace", "accumulate", "control"} <= set(study.strategies) and study.encoder == "minilm"
    cfg = CollapseConfig.from_json(json.loads(json.dumps(study.to_json())))
    assert cfg == study


def test_readers_import_no_flax_and_no_pipeline():
    code = ("import sys, sigma_jax.collapse.report, sigma_jax.collapse.study, sigma_jax.collapse.study_report; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('flax', 'optax', 'orbax') or m in "
            "('sigma_jax.collapse.pipeline', 'sigma_jax.collapse.runner', 'sigma_jax.lm')]; print(bad); "
            "sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cut_streams_and_lexical_stats():
    assert cut_streams(["abc\ndef\ngh", "no newline", "x\n\ny\n"]) == ["abc", "def", "no newline", "x", "y"]
    st = lexical_stats(["a b a b", "a b c"])
    assert st["distinct_1"] == pytest.approx(3 / 7) and st["distinct_2"] == pytest.approx(3 / 5)
    p = np.array([3, 3, 1]) / 7
    assert st["unigram_entropy_bits"] == pytest.approx(-(p * np.log2(p)).sum())
    assert st["newlines_per_text"] == 0.0
