"""End-to-end tests of the recursive-training pipeline (smoke preset on the stdlib corpus).

The smoke run (1-layer d_model 32 LM, 3 generations, 2 arms, LM-state encoder) is run
once uninterrupted and once interrupted after generation 1 and resumed; both share the
compiled functions of this process.
"""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from sigma_jax.collapse.pipeline import (cut_streams, lexical_stats, read_metrics, run_experiment, training_mix)
from sigma_jax.collapse.presets import get_preset
from sigma_jax.collapse.report import write_report
from sigma_jax.collapse.strategies import source_counts

CFG = get_preset("smoke")


def _strip_times(obj):
    """Metrics without wall-clock fields (``time_s``), which legitimately differ between runs."""
    if isinstance(obj, dict):
        return {k: _strip_times(v) for k, v in obj.items() if k != "time_s"}
    if isinstance(obj, list):
        return [_strip_times(v) for v in obj]
    return obj


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
    assert sorted(res) == ["accumulate-equal_T0.7_s0", "replace_T0.7_s0"]
    for arm, rows in res.items():
        assert [r["generation"] for r in rows] == [0, 1, 2]
        assert read_metrics(os.path.join(out, arm, "metrics.jsonl")) == json.loads(json.dumps(rows))
        for g in (1, 2):
            assert os.path.isdir(os.path.join(out, arm, "ckpt", f"gen{g}"))
            assert os.path.exists(os.path.join(out, arm, "samples", f"gen{g}.txt"))
        assert os.path.exists(os.path.join(out, arm, "synthetic", "gen1.txt"))
        r0, r2 = rows[0], rows[2]
        assert r0["dU"] == 0.0 and len(r0["null_u_cov"]) == CFG.null_keys
        assert r2["dU"] == pytest.approx(r2["sigma_sub"]["u_cov"] - r0["sigma_sub"]["u_cov"], abs=1e-9)
        assert r2["band"] == pytest.approx(np.hypot(r2["sigma_sub"]["ci_halfwidth"], r0["sigma_sub"]["ci_halfwidth"]))
        assert r2["threshold"] == pytest.approx(max(r2["band"], r0["null_spread"]))
        assert r2["sigma_sub"]["n_sub"] == CFG.n_sub and r2["sigma_full"]["n_sub"] == CFG.n_measure
        assert sum(r2["nll_gen0_bits"]["hist"]) == CFG.n_measure
        assert 1.0 <= r2["eff_rank_uncentred"] <= CFG.model.d_model and 1.0 <= r2["eff_rank_centred"] <= CFG.model.d_model
        # the LM's own hidden states, monitored inside the jitted training step every monitor_every steps
        mon = r2["train_monitor"]
        every, rows_per_step = CFG.train.monitor_every, CFG.train.batch_size * CFG.model.block_size
        assert [e["step"] for e in mon] == list(range(0, CFG.train.steps, every))
        assert all(e["n_rows"] == (e["step"] + 1) * rows_per_step for e in mon)
        assert all(1.0 <= e["effective_rank"] <= CFG.model.d_model and np.isfinite(e["u_cov"]) for e in mon)
    # generation 0 is shared by the arms (same seed and temperature)
    a, b = (res[k][0] for k in sorted(res))
    assert a["sigma_sub"] == b["sigma_sub"] and a["bpc_heldout"] == b["bpc_heldout"]
    # the measurement prompts and keys are common: replace's generation-1 samples differ from generation 0's
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["experiment"]["name"] == "smoke" and cfg["encoders"]["0"]["name"] == "lm-gen0-meanpool"
    report, figs = write_report(out)
    assert all(os.path.getsize(f) > 1000 for f in figs)
    assert "replace_T0.7_s0" in open(report).read()


def test_resume_after_interruption_gives_identical_metrics(full_run, tmp_path):
    out_full, res_full = full_run
    out = str(tmp_path / "resumed")
    part = run_experiment(CFG, out, stop_after=1)
    assert all(len(rows) == 2 for rows in part.values())
    with pytest.raises(FileExistsError):
        run_experiment(CFG, out)  # refuses to overwrite without --resume
    with pytest.raises(ValueError, match="differs"):
        run_experiment(dataclasses.replace(CFG, generations=4), out, resume=True)
    res = run_experiment(CFG, out, resume=True)
    for arm in res_full:
        assert _strip_times(res[arm]) == _strip_times(res_full[arm])
        assert _strip_times(read_metrics(os.path.join(out, arm, "metrics.jsonl"))) == \
            _strip_times(read_metrics(os.path.join(out_full, arm, "metrics.jsonl")))


def test_replace_and_accumulate_sets(sources):
    rep = training_mix(jax.random.key(0), "replace", 2, sources)
    assert rep.lines[2] == sources[2] and rep.lines[0] == [] and rep.lines[1] == []
    assert rep.weights.tolist() == [0.0, 0.0, 1.0]
    acc = training_mix(jax.random.key(0), "accumulate:equal", 2, sources)
    assert acc.lines == sources and np.allclose(acc.weights, 1 / 3)
    acc_s = training_mix(jax.random.key(0), "accumulate:size", 2, sources)
    chars = np.array([sum(len(x) + 1 for x in s) for s in sources], float)
    assert acc_s.lines == sources and np.allclose(acc_s.weights, chars / chars.sum())
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


def test_cut_streams_and_lexical_stats():
    assert cut_streams(["abc\ndef\ngh", "no newline", "x\n\ny\n"]) == ["abc", "def", "no newline", "x", "y"]
    st = lexical_stats(["a b a b", "a b c"])
    assert st["distinct_1"] == pytest.approx(3 / 7) and st["distinct_2"] == pytest.approx(3 / 5)
    p = np.array([3, 3, 1]) / 7
    assert st["unigram_entropy_bits"] == pytest.approx(-(p * np.log2(p)).sum())
    assert st["newlines_per_text"] == 0.0
