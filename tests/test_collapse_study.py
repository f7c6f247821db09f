"""The study's statistics (control band, drift calls, seed intervals, early warning), its tables, and
README's collapse-study section regenerated from the committed artefacts."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from sigma_jax.collapse.study import (SUMMARY_COLUMNS, early_warning, prediction_interval, read_table,
                                      seed_intervals, summary_table, t_interval, verdicts, write_tables)
from sigma_jax.collapse.study_report import MARKERS, plot_study, readme_section, section_between_markers

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "docs" / "results" / "collapse-study"
FIGURE = "docs/figures/collapse_study.png"


def _row(arm, seed, g, du, bpc=2.0, d2=0.5, t=0.7, null=2.0, band=0.5):
    return {"strategy": arm, "seed": seed, "temperature": t, "generation": g, "dU": du, "band": band,
            "null_q95": null, "threshold": max(null, band), "sigma_sub": {"u_cov": -100.0 + du}, "bpc_heldout": bpc,
            "distinct_2": d2, "eff_rank_centred": 50.0, "nll_gen0_bits": {"p50": 2.0, "p99": 4.0},
            "train_chars": 1000 * (g + 1 if arm == "accumulate" else 1), "train_steps": 10}


def _control(seeds=3, gens=4, scale=3.0, key=0):
    rng = np.random.default_rng(key)
    return {f"control_s{s}": [_row("control", s, g, 0.0 if g == 0 else float(rng.normal(0, scale)),
                                   bpc=2.0 + 0.01 * float(rng.normal()), d2=0.5 + 0.01 * float(rng.normal()))
                              for g in range(gens)] for s in range(seeds)}


def test_prediction_interval_covers_one_more_draw_at_its_level():
    rng = np.random.default_rng(0)
    k, reps = 9, 4000
    x = rng.normal(size=(reps, k + 1))
    miss = 0
    for row in x:
        lo, hi = prediction_interval(row[:k])
        miss += not lo <= row[k] <= hi
    se = math.sqrt(0.05 * 0.95 / reps)
    assert abs(miss / reps - 0.05) < 3.5 * se  # neither too narrow nor too wide
    assert all(math.isnan(v) for v in prediction_interval([1.0]))


def test_t_interval_matches_scipy():
    v = [1.0, 2.5, 4.0, 3.0]
    m, hw = t_interval(v)
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert m == pytest.approx(np.mean(v), abs=1e-12) and hw == pytest.approx((hi - lo) / 2, rel=1e-12)
    assert math.isnan(t_interval([1.0])[1])


def test_a_generation_drifts_only_beyond_both_nulls():
    res = _control()
    lo, hi = prediction_interval([r["dU"] for rows in res.values() for r in rows if r["generation"] >= 1])
    assert -15 < lo < -2.5 and 2.5 < hi < 15
    res["replace_s0"] = [_row("replace", 0, 0, 0.0),
                         _row("replace", 0, 1, lo + 0.5, null=abs(lo) - 1.0),   # beyond the null, inside control
                         _row("replace", 0, 2, lo - 0.5, null=abs(lo) + 1.0),   # beyond control, inside the null
                         _row("replace", 0, 3, lo - 1.5, null=abs(lo) + 1.0)]   # beyond both
    rep = [r for r in summary_table(res) if r["arm"] == "replace"]
    assert [r["drifting"] for r in rep] == [False, False, False, True]
    assert [r["margin"] > 1 for r in rep[1:]] == [False, False, True]  # the margin is > 1 exactly when drifting
    assert [r["binding"] for r in rep] == ["-", "control", "null", "null"]
    assert rep[1]["ctrl_lo"] == pytest.approx(lo)
    # upward drift is judged against the upper bounds
    res["replace_s0"][1] = _row("replace", 0, 1, hi + 1.0, null=0.5)
    up = [r for r in summary_table(res) if r["arm"] == "replace"][1]
    assert up["drifting"] and up["binding"] == "control"


def test_bpc_and_distinct2_leave_the_control_range():
    res = _control()
    res["replace_s0"] = [_row("replace", 0, g, -1.0 * g, bpc=2.0 + 0.5 * (g >= 2), d2=0.5 - 0.2 * (g >= 3))
                         for g in range(4)]
    rep = [r for r in summary_table(res) if r["arm"] == "replace"]
    assert [r["bpc_out"] for r in rep] == [False, False, True, True]
    assert [r["bpc_margin"] > 1 for r in rep[1:]] == [False, True, True]
    assert [r["d2_out"] for r in rep] == [False, False, False, True]
    ew = early_warning(summary_table(res))
    assert len(ew) == 1 and ew[0]["g_sigma"] is None and ew[0]["g_bpc"] == 2 and ew[0]["g_distinct2"] == 3
    assert ew[0]["lead_bpc"] is None


def test_early_warning_lead_and_lag():
    summ = []
    for seed, (gs, gb) in enumerate([(1, 3), (2, 2), (3, 1)]):
        for g in range(4):
            summ.append({"arm": "replace", "temperature": 0.7, "seed": seed, "generation": g, "drifting": g >= gs,
                         "du": -g, "bpc_out": g >= gb, "d2_out": False})
    ew = early_warning(summ)
    assert [e["lead_bpc"] for e in ew] == [2, 0, -2]
    assert all(e["sigma_direction"] == "down" and e["g_distinct2"] is None for e in ew)


def test_seed_intervals_and_verdicts():
    res = _control()
    for s in range(3):
        res[f"replace_s{s}"] = [_row("replace", s, g, -20.0 * g + s, bpc=2.0 + g) for g in range(4)]
        res[f"accumulate_s{s}"] = [_row("accumulate", s, g, 0.1 * s) for g in range(4)]
    summ = summary_table(res)
    iv = {(r["arm"], r["generation"]): r for r in seed_intervals(summ)}
    r = iv[("replace", 3)]
    assert r["n_seeds"] == 3 and r["du_mean"] == pytest.approx(-59.0)
    assert r["du_hw"] == pytest.approx(stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3))
    assert r["n_drifting"] == 3 and iv[("accumulate", 3)]["n_drifting"] == 0
    v = {arm: text for arm, _, text in verdicts(seed_intervals(summ), early_warning(summ))}
    assert v["replace"].startswith("collapse detected in 3 of 3 seeds (first at generation 1")
    assert v["accumulate"].startswith("no detectable drift")
    assert v["control"].startswith("the retraining null itself")


def test_tables_round_trip(tmp_path):
    res = _control(seeds=2, gens=3)
    res["replace_s0"] = [_row("replace", 0, g, -3.0 * g) for g in range(3)]
    paths = write_tables(res, str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["summary.csv", "seed_intervals.csv", "early_warning.csv"]
    back = read_table(paths[0])
    summ = summary_table(res)
    assert list(back[0]) == SUMMARY_COLUMNS and len(back) == len(summ)
    for a, b in zip(summ, back):
        for k in SUMMARY_COLUMNS:
            assert (a[k] == b[k]) or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])), k
    (tmp_path / "config.json").write_text("{}")
    md = readme_section(str(tmp_path))
    assert md == readme_section(str(tmp_path))  # deterministic
    assert section_between_markers(f"x{MARKERS[0]}{md}{MARKERS[1]}y") == md


def test_readme_collapse_section_matches_the_committed_study(tmp_path):
    for name in ("config.json", "summary.csv", "seed_intervals.csv", "early_warning.csv"):
        assert (STUDY / name).exists(), name
    summary = read_table(str(STUDY / "summary.csv"))
    arms = {r["arm"] for r in summary}
    assert {"replace", "accumulate", "control"} <= arms and len({r["seed"] for r in summary}) >= 3
    for g in {r["generation"] for r in summary}:  # equal training-set sizes for replace and control
        sizes = {r["train_chars"] for r in summary if r["generation"] == g and r["arm"] in ("replace", "control")}
        assert len(sizes) == 1
    # the tables are derived from the committed metrics rows
    from sigma_jax.collapse.report import load_results

    results = load_results(str(STUDY))
    assert len(results) >= 9
    for path in write_tables(results, str(tmp_path)):
        assert Path(path).read_text() == (STUDY / os.path.basename(path)).read_text(), path
    expected = readme_section(str(STUDY), rel=str(STUDY.relative_to(ROOT)), figure=FIGURE)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    got = section_between_markers(readme)
    assert got is not None, (f"README.md lacks the markers {MARKERS}; paste the output of "
                             "`python experiments/collapse_readme.py` between them")
    assert got == expected, "README's collapse-study section differs from the committed study: rerun " \
                            "`python experiments/collapse_readme.py --write-readme` and commit"


def test_study_figure_is_drawn(tmp_path):
    pytest.importorskip("matplotlib", reason="figures need the optional `plots` extra")
    res = _control(seeds=2, gens=3)
    res["replace_s0"] = [_row("replace", 0, g, -3.0 * g) for g in range(3)]
    write_tables(res, str(tmp_path))
    p = plot_study(str(tmp_path), str(tmp_path / "f.png"))
    assert os.path.getsize(p) > 5000
