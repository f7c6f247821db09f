"""One-call analysis: rows equal the individual functions; writers; folder input; CLI with several files; texts in
(every input kind, mixed with arrays, checked before embedding, cached) with a fast 16-dim hashing encoder."""

import json
import warnings

import jax
import numpy as np
import pytest

import sigma_jax as sj
from sigma_jax import cli, encoders, spectral
from sigma_jax.texts import read_texts, save_embeddings
from tests._reference import collapsed, healthy
from tests._textgen import CountingEncoder, random_texts, vocabulary, write_csv, write_jsonl, write_txt


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


# --------------------------------------------------------------------------- texts in (hashing encoder: fast)

N_TEXTS, SUBSET = 80, 60   # m = 16: n_A = 60 > 3 m, so the calibrated interval can be valid


@pytest.fixture
def gens(rng):
    vocab = vocabulary(rng)
    return [random_texts(rng, N_TEXTS, vocab), random_texts(rng, N_TEXTS, vocab[:12])]   # g1: 12 words only


def test_text_inputs_of_every_kind_equal_sigma_of_the_encoder_output(gens, tmp_path):
    enc = CountingEncoder(dim=16)
    t0, t1 = gens
    inputs = {"list": t0, "textset": read_texts(t1, name="ts"), "txt": write_txt(tmp_path / "g.txt", t0),
              "jsonl": write_jsonl(tmp_path / "g.jsonl", t1, field="completion"),
              "csv": write_csv(tmp_path / "g.csv", t0, column="body")}
    table = sj.analyze(inputs, encoder=enc, subset=SUBSET, key=jax.random.key(5), field="completion", column="body",
                       progress=False)
    assert [r["name"] for r in table.rows] == list(inputs)
    assert [r["source"] for r in table.rows] == ["list", "list", inputs["txt"], inputs["jsonl"], inputs["csv"]]
    assert {r["kind"] for r in table.rows} == {"texts"} and enc.calls == 5
    for row, texts in zip(table.rows, [t0, t1, t0, t1, t0]):
        ref = sj.sigma(enc.encode(texts), subset=SUBSET, key=jax.random.key(5))
        for k in ("u_cov", "ci_halfwidth", "g_kf", "logdet"):
            assert row[k] == pytest.approx(float(getattr(ref, k)), rel=1e-12, abs=1e-12), k
        assert row["valid"] == bool(ref.valid) and row["interval_reason"] == "; ".join(ref.reasons())
        if row["valid"]:
            assert row["ci_low"] == pytest.approx(float(ref.ci_low), rel=1e-12)
    assert table.rows[1]["dU"] < 0 and table.rows[1]["effective_rank"] < table.rows[0]["effective_rank"]
    assert table.rows[0]["dU"] == 0.0 and table.rows[2]["dU"] == pytest.approx(0.0, abs=1e-9)   # same texts
    assert table.settings["encoder"] == encoders.encoder_config(enc) and table.settings["subset"] == SUBSET
    assert table.settings["key_data"] == np.asarray(jax.random.key_data(jax.random.key(5))).tolist()


def test_mixed_arrays_and_texts_and_a_dimension_mismatch_caught_before_embedding(gens, tmp_path):
    enc = CountingEncoder(dim=16)
    t0, t1 = gens
    npy = save_embeddings(enc.encode(t0), tmp_path, "g0", enc)
    table = sj.analyze([str(npy), t1], encoder=enc, progress=False)
    assert [r["kind"] for r in table.rows] == ["embeddings", "texts"] and [r["name"] for r in table.rows] == ["g0",
                                                                                                            "set1"]
    assert table.rows[1]["u_cov"] == pytest.approx(float(sj.sigma(enc.encode(t1)).u_cov), rel=1e-12)
    np.save(tmp_path / "m8.npy", rng_rows(8))
    calls = enc.calls
    with pytest.raises(ValueError, match=r"different embedding dimensions: .*m8.npy: m=8; set1 \(list\): m=16"):
        sj.analyze([str(tmp_path / "m8.npy"), t1], encoder=enc, progress=False)
    assert enc.calls == calls   # nothing embedded


def rng_rows(m, n=100):
    return np.random.default_rng(m).normal(size=(n, m)).astype(np.float32)


def test_inputs_are_checked_before_anything_is_embedded(gens, tmp_path):
    enc = CountingEncoder(dim=16)
    p = write_txt(tmp_path / "g1.txt", gens[1][:50], blank_after=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"g1.txt: 50 texts \(2 empty skipped\), fewer than the subset needs "
                                             r"\(subset=60\).*--subset"):
            sj.analyze([gens[0], p], encoder=enc, subset=SUBSET, key=jax.random.key(0))
        with pytest.raises(ValueError, match=r"n_A=12 observed texts <= m=16 .*--ridge-only"):
            sj.analyze([gens[0][:12]], encoder=enc)
        with pytest.raises(ValueError, match=r"more than n_total=70"):
            sj.analyze([gens[0]], encoder=enc, n_total=70)
        with pytest.raises(ValueError, match="needs `key`"):
            sj.analyze([gens[0]], encoder=enc, subset=SUBSET)
    assert enc.calls == 0
    small = sj.analyze([gens[0][:12]], encoder=enc, ridge_only=True, progress=False)   # opted in
    assert small.rows[0]["n_sub"] == 12


def test_cache_dir_reuses_embeddings(gens, tmp_path):
    enc = CountingEncoder(dim=16)
    kw = dict(encoder=enc, cache_dir=tmp_path / "cache", progress=False)
    first = sj.analyze({"a": gens[0], "b": gens[1]}, **kw)
    assert enc.calls == 2 and len(list((tmp_path / "cache").glob("*.npy"))) == 2
    again = sj.analyze({"a": gens[0], "b": gens[1]}, **kw)
    assert enc.calls == 2 and json.dumps(again.rows) == json.dumps(first.rows)   # NaN-aware equality
    assert first.settings["cache_dir"] == str(tmp_path / "cache")


def test_text_folders_read_in_natural_order_and_mixed_folders_refused(gens, tmp_path):
    d = tmp_path / "gens"
    d.mkdir()
    for g in (10, 2):
        write_txt(d / f"gen{g}.txt", gens[g == 10])
    table = sj.analyze(str(d), encoder=CountingEncoder(dim=16), progress=False)
    assert [r["name"] for r in table.rows] == ["gen2", "gen10"]
    np.save(d / "gen3.npy", rng_rows(16))
    with pytest.raises(ValueError, match="both embedding files .* and text files"):
        sj.analyze(str(d), encoder=CountingEncoder(dim=16))


def test_names_made_unique_and_bad_input_kinds(gens, tmp_path):
    enc = CountingEncoder(dim=16)
    a = write_txt(tmp_path / "g0.txt", gens[0])
    b = write_jsonl(tmp_path / "g0.jsonl", gens[1])
    table = sj.analyze([a, b, gens[0], gens[0]], encoder=enc, progress=False)
    assert [r["name"] for r in table.rows] == ["g0.txt", "g0.jsonl", "set2", "set3"]
    with pytest.raises(FileNotFoundError, match="does not exist; if it is a text, .* wrap it"):
        sj.analyze(gens[0], encoder=enc)           # a flat list of str is a list of paths
    with pytest.raises(ValueError, match="empty list"):
        sj.analyze([[]], encoder=enc)
    with pytest.raises(ValueError, match="stdin can be read once"):
        sj.analyze(["-", "-"], encoder=enc)
    with pytest.warns(UserWarning, match="`encoder` is not used"):
        sj.analyze([rng_rows(4)], encoder=enc)


def test_default_encoder_is_minilm(gens, monkeypatch):
    made = []

    def fake_minilm(**settings):
        made.append(settings)
        return CountingEncoder(dim=16)

    monkeypatch.setitem(encoders._REGISTRY, "minilm", fake_minilm)   # the registry entry the default resolves to
    sj.analyze([gens[0]], progress=False)
    assert made == [{}]   # built at its default (reference) settings
