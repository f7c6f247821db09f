"""One-call analysis: rows equal the individual functions; writers; folder input; CLI with several files."""

import json

import jax
import numpy as np
import pytest

import sigma_jax as sj
from sigma_jax import cli, spectral
from tests._reference import collapsed, healthy


def test_rows_match_library_functions_and_writers(rng, tmp_path):
    sets = {"a": healthy(rng, 300, 10), "b": collapsed(rng, 300, 10, rank=3, noise=1e-2)}
    table = sj.analyze(sets, subset=200, key=jax.random.key(2))
    assert [r["name"] for r in table.rows] == ["a", "b"]
    for row, (name, x) in zip(table.rows, sets.items()):
        rep = sj.sigma(x, subset=200, key=jax.random.key(2))
        assert row["u_cov"] == pytest.approx(float(rep.u_cov), rel=1e-12)
        assert row["effective_rank"] == pytest.approx(float(spectral.effective_rank(x)), rel=1e-10)
        assert row["effective_rank_centered"] == pytest.approx(float(spectral.effective_rank(x, center=True)), rel=1e-10)
        assert row["ws_lambda_max_lower"] <= row["lambda_max"] <= row["ws_lambda_max_upper"]
    assert table.rows[0]["dU"] == 0.0
    assert table.rows[1]["dU"] == pytest.approx(table.rows[1]["u_cov"] - table.rows[0]["u_cov"], rel=1e-12)
    assert table.rows[1]["effective_rank"] < table.rows[0]["effective_rank"]
    table.to_csv(str(tmp_path / "t.csv"))
    table.to_json(str(tmp_path / "t.json"))
    assert json.loads((tmp_path / "t.json").read_text())["rows"][1]["name"] == "b"
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("name,")
    table.plot(str(tmp_path / "t.png"))
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_folder_input_and_cli_with_several_files(rng, tmp_path, capsys):
    for g in range(3):
        np.save(tmp_path / f"gen{g}.npy", (healthy(rng, 200, 6) * (1 + g)).astype(np.float32))
    table = sj.analyze(str(tmp_path))
    assert [r["name"] for r in table.rows] == ["gen0", "gen1", "gen2"]
    files = [str(tmp_path / f"gen{g}.npy") for g in range(3)]
    assert cli.main(["analyze", *files, "--csv", str(tmp_path / "d.csv")]) == 0
    out = capsys.readouterr().out
    assert "drift relative to the first file" in out and "gen2" in out
    with pytest.raises(ValueError, match="no .npy"):
        sj.analyze(str(_empty(tmp_path)))


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d
