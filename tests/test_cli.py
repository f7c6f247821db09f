"""The CLI (analyze) and the built-in demo."""

import json

import numpy as np

from sigma_jax import cli
from sigma_jax.demo import run_demo
from tests._reference import healthy, ref_sigma


def test_analyze_prints_table_and_writes_json(rng, tmp_path, capsys):
    a = healthy(rng, 400, 8).astype(np.float32)
    np.save(tmp_path / "e.npy", a)
    out = tmp_path / "r.json"
    assert cli.main(["analyze", str(tmp_path / "e.npy"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "U_cov" in text and "effective_rank" in text
    rep = json.loads(out.read_text())
    assert abs(rep["sigma"]["u_cov"] - ref_sigma(a.astype(np.float64))["u_cov"]) < 1e-8


def test_analyze_refuses_pickles_and_reports_bad_input(tmp_path, capsys):
    np.save(tmp_path / "o.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    assert cli.main(["analyze", str(tmp_path / "o.npy")]) == 2
    assert "pickle" in capsys.readouterr().err
    np.save(tmp_path / "small.npy", np.ones((3, 8), np.float32))
    assert cli.main(["analyze", str(tmp_path / "small.npy")]) == 2
    assert "ridge_only" in capsys.readouterr().err


def test_demo_shows_collapse_beyond_band(tmp_path):
    res = run_demo(out=str(tmp_path), n_generations=2, n_samples=300, dim=16, n_sub=200, fit_samples=40)
    gens = res["generations"]
    assert (tmp_path / "report.json").exists()
    # the refit chain contracts log det by ~ sum psi((M-j)/2) + d log(2/M) per generation (strongly negative)
    assert gens[2]["dU"] < -gens[2]["drift_band"] < 0
