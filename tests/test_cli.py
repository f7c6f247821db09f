"""The CLI (analyze on arrays and on texts, embed) and the built-in demo.

Text paths run with a counting 16-dim hashing encoder registered as ``test-hash16`` (fast, and it
proves what was and was not embedded); the MiniLM acceptance run is tests/test_analyze_minilm.py.
"""

import io
import json
import sys

import jax
import numpy as np
import pytest

import sigma_jax as sj
from sigma_jax import cli
from sigma_jax.demo import run_demo
from sigma_jax.encoders import register_encoder
from tests._reference import healthy, ref_sigma
from tests._textgen import CountingEncoder, random_texts, vocabulary, write_csv, write_jsonl, write_txt


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


# --------------------------------------------------------------------------- texts in (fast: a 16-dim hashing encoder)

N_TEXTS = 80


@pytest.fixture
def enc():
    """A fresh counting 16-dim hashing encoder behind the name ``test-hash16``."""
    e = CountingEncoder(dim=16)
    register_encoder("test-hash16", lambda: e, overwrite=True)
    return e


@pytest.fixture
def files(rng, tmp_path):
    vocab = vocabulary(rng)
    t0, t1, t2 = (random_texts(rng, N_TEXTS, v) for v in (vocab, vocab[:40], vocab[:10]))
    return {"texts": (t0, t1, t2),
            "txt": write_txt(tmp_path / "g0.txt", t0, blank_after=5),
            "jsonl": write_jsonl(tmp_path / "g1.jsonl", t1, field="completion"),
            "csv": write_csv(tmp_path / "g2.csv", t2, column="body")}


def _run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _error_line(err: str, prog: str = "sigma-jax analyze") -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith(f"{prog}: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_analyze_texts_mixed_with_arrays_writes_every_output(files, enc, tmp_path, capsys):
    t0, t1, t2 = files["texts"]
    np.save(tmp_path / "g3.npy", enc.encode(t2))
    out = tmp_path / "out"
    rc, text, err = _run(capsys, "analyze", files["txt"], files["jsonl"], files["csv"], str(tmp_path / "g3.npy"),
                         "--encoder", "test-hash16", "--field", "completion", "--column", "body", "--subset", "60",
                         "--seed", "7", "--json", str(out / "r.json"), "--csv", str(out / "r.csv"),
                         "--md", str(out / "r.md"), "--html", str(out / "r.html"), "--no-progress")
    assert rc == 0, err
    assert "warning: " in err and "g0.txt: skipped 2 empty or blank lines (lines 6, 7); kept 80 texts." in err
    assert "encoder: hashing (NOT semantic" in text and f"embeddings cache: {out / 'embed_cache'}" in text
    assert "full-sample U_cov" in text and "drift relative to the first file (g0)" in text
    rep = json.loads((out / "r.json").read_text())
    assert [r["name"] for r in rep["rows"]] == ["g0", "g1", "g2", "g3"]
    assert [r["kind"] for r in rep["rows"]] == ["texts"] * 3 + ["embeddings"] and rep["rows"][0]["n_skipped"] == 2
    assert rep["settings"]["seed"] == 7 and rep["settings"]["encoder"]["dim"] == 16
    assert rep["settings"]["command"].startswith("sigma-jax analyze ")
    for row, x in zip(rep["rows"], [t0, t1, t2, t2]):
        ref = sj.sigma(enc.encode(x), subset=60, key=jax.random.key(7))
        assert abs(row["u_cov"] - float(ref.u_cov)) <= 1e-12 * abs(float(ref.u_cov))
    assert rep["rows"][3]["dU"] == pytest.approx(rep["rows"][2]["dU"], abs=1e-9)   # the same texts, embedded here
    assert len(list((out / "embed_cache").glob("*.npy"))) == 3
    assert (out / "r.png").stat().st_size > 1000 and "data:image/png;base64," in (out / "r.html").read_text()
    assert "![spectra and drift](r.png)" in (out / "r.md").read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]   # atomic writes leave nothing behind


def test_embeddings_cached_next_to_outputs_or_per_user(files, enc, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    args = ["analyze", files["txt"], files["csv"], "--encoder", "test-hash16", "--column", "body", "--no-progress"]
    assert _run(capsys, *args, "--json", str(tmp_path / "a" / "r.json"))[0] == 0
    assert enc.calls == 2
    rc, _, err = _run(capsys, *args[:-1], "--json", str(tmp_path / "a" / "r2.json"))   # with progress lines
    assert rc == 0 and enc.calls == 2                        # second call: nothing re-embedded
    assert f"{files['txt']}: 80 texts, embeddings from the cache" in err
    assert _run(capsys, *args)[0] == 0                       # no outputs: the per-user cache
    assert len(list((tmp_path / "xdg" / "sigma_jax" / "embeddings").glob("*.npy"))) == 2
    assert _run(capsys, *args, "--no-cache", "--json", str(tmp_path / "b" / "r.json"))[0] == 0
    assert enc.calls == 6 and not (tmp_path / "b" / "embed_cache").exists()
    assert _run(capsys, *args, "--cache-dir", str(tmp_path / "c"))[0] == 0
    assert len(list((tmp_path / "c").glob("*.json"))) == 2
    rc, _, err = _run(capsys, *args, "--cache-dir", str(tmp_path / "c"), "--no-cache")
    assert rc == 2 and "contradict" in _error_line(err)


class _Stdin(io.TextIOWrapper):
    def __init__(self, data: bytes, tty: bool):
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self._tty = tty

    def isatty(self):
        return self._tty


def test_stdin_is_read_when_piped_and_refused_from_a_terminal(files, enc, capsys, monkeypatch, tmp_path):
    t0 = files["texts"][0]
    monkeypatch.setattr(sys, "stdin", _Stdin(("\n".join(t0) + "\n").encode(), tty=False))
    rc, text, err = _run(capsys, "analyze", "-", files["txt"], "--encoder", "test-hash16", "--no-progress",
                         "--json", str(tmp_path / "r.json"))
    assert rc == 0, err
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert rows[0]["name"] == "stdin" and rows[0]["source"] == "stdin" and rows[0]["n"] == N_TEXTS
    assert rows[1]["dU"] == pytest.approx(0.0, abs=1e-9)     # the same texts as g0.txt
    monkeypatch.setattr(sys, "stdin", _Stdin(b"", tty=True))
    rc, _, err = _run(capsys, "analyze", "-", "--encoder", "test-hash16")
    assert rc == 2 and "stdin is a terminal; pipe or redirect" in _error_line(err)


def _bad_inputs(tmp_path, files):
    t0 = files["texts"][0]
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "latin1.txt").write_bytes("naïve text\n".encode("latin-1"))
    write_jsonl(tmp_path / "nofield.jsonl", t0, field="completion")
    (tmp_path / "partial.jsonl").write_text('{"text": "a b"}\n{"other": "x"}\n{"text": "c d"}\n')
    np.save(tmp_path / "m8.npy", np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32))
    (tmp_path / "emb.json").write_text("[]")
    return [
        (["empty.txt"], "empty.txt is empty (0 bytes)"),
        (["latin1.txt"], "latin1.txt: invalid UTF-8 at line 1, byte 3 of that line"),
        (["nofield.jsonl"], "no row has a field 'text' (line 1 has keys: 'completion', 'id'); choose the text "
                            "field with `field=` (CLI: --field)"),
        (["partial.jsonl"], "1 of 3 rows lack field 'text' or hold null (first: line 2, keys: 'other'); fix those "
                            "rows, or pass `skip_missing=True` (CLI: --skip-missing)"),
        ([files["csv"]], "no column 'text' in the header (line 1); columns: 'id', 'body'"),
        ([files["txt"], "--subset", "81"], "g0.txt: 80 texts (2 empty skipped), fewer than the subset needs "
                                           "(subset=81)"),
        ([files["txt"], "m8.npy"], "different embedding dimensions"),
        (["emb.json"], "unsupported file type '.json'"),
        (["missing.txt"], "text file 'missing.txt' does not exist"),
        (["-", "-"], "stdin can be read once"),
        ([files["txt"], "--max-length", "128"], "--max-length: encoder 'test-hash16' has no setting 'max_length'"),
        ([files["txt"], "--encoder", "no-such-encoder"], "unknown encoder 'no-such-encoder'; available:"),
    ]


def test_bad_input_gives_one_line_errors_and_exit_2(files, enc, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", _Stdin(b"a\n", tty=False))
    for argv, message in _bad_inputs(tmp_path, files):
        # the case's own --encoder comes last and wins
        rc, out, err = _run(capsys, "analyze", "--encoder", "test-hash16", "--no-cache", "--no-progress", *argv)
        assert rc == 2, (argv, out, err)
        assert message in _error_line(err), (argv, err)
    assert enc.calls == 0   # every case stopped before embedding


def test_skipped_rows_are_warned_with_counts(files, enc, tmp_path, capsys):
    p = tmp_path / "partial.jsonl"
    p.write_text("".join(json.dumps({"text": t} if i % 10 else {"other": 1}) + "\n"
                         for i, t in enumerate(files["texts"][0])))
    rc, text, err = _run(capsys, "analyze", str(p), "--skip-missing", "--encoder", "test-hash16", "--no-cache",
                         "--no-progress", "--ridge-only")
    assert rc == 0, err
    assert "partial.jsonl: skipped 8 of 80 lines without field 'text' (lines 1, 11, 21, 31, 41 and 3 more); kept " \
           "72 texts." in err
    assert "(n=72, m=16; texts, 8 skipped)" in text


def test_embed_writes_npy_and_encoder_json_per_input(files, enc, tmp_path, capsys):
    t0, t1, _ = files["texts"]
    out = tmp_path / "emb"
    rc, text, err = _run(capsys, "embed", files["txt"], files["jsonl"], "--field", "completion", "--out", str(out),
                         "--encoder", "test-hash16", "--no-progress")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["g0.json", "g0.npy", "g1.json", "g1.npy"]
    for name, texts in (("g0", t0), ("g1", t1)):
        assert np.array_equal(np.load(out / f"{name}.npy"), enc.encode(texts))
    meta = json.loads((out / "g0.json").read_text())
    assert meta["encoder"]["dim"] == 16 and meta["encoder"]["kind"] == "hashing" and meta["n"] == N_TEXTS
    assert meta["n_skipped_empty"] == 2 and meta["skipped_lines_first"] == [6, 7] and meta["format"] == "txt"
    assert meta["source"] == files["txt"] and json.loads((out / "g1.json").read_text())["field"] == "completion"
    # the written embeddings analyze like the texts they came from
    rc, _, _ = _run(capsys, "analyze", str(out / "g0.npy"), files["txt"], "--encoder", "test-hash16", "--no-cache",
                    "--json", str(tmp_path / "r.json"))
    assert rc == 0 and json.loads((tmp_path / "r.json").read_text())["rows"][1]["dU"] == pytest.approx(0, abs=1e-9)
    rc, _, err = _run(capsys, "embed", str(out / "g0.npy"), "--out", str(out))
    assert rc == 2 and "already holds embeddings" in _error_line(err, "sigma-jax embed")
