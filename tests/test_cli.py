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


def test_analyze_passes_rho_and_ridge_only(rng, tmp_path):
    # --rho changes G_KF (beta = (n_total - n_A) rho) and --ridge-only admits n_A <= m (both were once ignored)
    a = healthy(rng, 300, 8).astype(np.float32)
    np.save(tmp_path / "e.npy", a)
    rows = {}
    for rho in ("1", "4"):
        out = tmp_path / f"r{rho}.json"
        assert cli.main(["analyze", str(tmp_path / "e.npy"), "--n-total", "900", "--rho", rho, "--json", str(out)]) == 0
        rows[rho] = json.loads(out.read_text())["rows"][0]
    ref1, ref4 = ref_sigma(a.astype(np.float64), n_total=900), ref_sigma(a.astype(np.float64), n_total=900, rho=4.0)
    assert abs(rows["1"]["g_kf"] - ref1["g_kf"]) < 1e-8 and abs(rows["4"]["g_kf"] - ref4["g_kf"]) < 1e-8
    assert abs(rows["4"]["g_kf"] - rows["1"]["g_kf"]) > 0.1 and rows["4"]["beta"] == 4 * rows["1"]["beta"]
    np.save(tmp_path / "small.npy", a[:6])   # n_A = 6 <= m = 8
    out = tmp_path / "small.json"
    assert cli.main(["analyze", str(tmp_path / "small.npy"), "--ridge-only", "--json", str(out)]) == 0
    small = json.loads(out.read_text())["rows"][0]
    assert small["n_sub"] == 6 and abs(small["logdet"] - ref_sigma(a[:6].astype(np.float64))["logdet"]) < 1e-8
