"""Acceptance of "texts in, report out" with the paper's encoder (issue 14).

``sigma-jax analyze g0.txt g1.jsonl --subset 450 --json r.json`` on 600 short texts per file gives
the same U_cov as ``sigma(MiniLMEncoder.load().encode(texts), subset=450, key=jax.random.key(seed))``
with the CLI's ``--seed``.  One CLI run (1,200 texts) and one reference embedding of the same texts
are shared by the tests of this module (~25 s on 2 shared cores).  Needs the optional encoder extra.
"""

import json

import jax
import numpy as np
import pytest

import sigma_jax as sj
from sigma_jax import cli
from tests._reference import MINILM_EXTRA, missing_minilm_extra
from tests._textgen import random_texts, vocabulary, write_jsonl, write_txt


_MISSING = missing_minilm_extra()
pytestmark = pytest.mark.skipif(_MISSING is not None,
                                reason=f"optional encoder extra not installed ({_MISSING} missing): {MINILM_EXTRA}")

N, SUBSET, SEED = 600, 450, 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two files of 600 short texts, the CLI's report on them, and the reference embeddings."""
    from sigma_jax.encoders import MiniLMEncoder

    d = tmp_path_factory.mktemp("acceptance")
    rng = np.random.default_rng(14)
    vocab = [w for w in "the a of and to in that was he for it with as his on be at by had not are but from or have an "
             "they which one you were her all she there would their we him been has when who will more no if out so "
             "said what up its about into than them can only other new some could time these two may then do first "
             "any my now such like our over man me even most made after also did many before must through back "
             "years where much your way well down should because each just those people how too little state good "
             "very make world still own see men work long get here between both life being under never day same "
             "another know while last might us great old year off come since against go came right used take three "
             "river stone light king land sea house field city night water".split()]
    texts = [random_texts(rng, N, vocab, words=(4, 10)), random_texts(rng, N, vocab[:40], words=(4, 10))]
    files = [write_txt(d / "g0.txt", texts[0]), write_jsonl(d / "g1.jsonl", texts[1])]
    argv = ["analyze", *files, "--subset", str(SUBSET), "--seed", str(SEED), "--json", str(d / "r.json"),
            "--md", str(d / "r.md"), "--no-progress"]
    assert cli.main(argv) == 0
    enc = MiniLMEncoder.load()
    return {"dir": d, "argv": argv, "texts": texts, "ref": [enc.encode(t) for t in texts],
            "report": json.loads((d / "r.json").read_text())}


def test_cli_u_cov_equals_sigma_of_minilm_encode(run):
    rows = run["report"]["rows"]
    assert [r["n"] for r in rows] == [N, N] and [r["n_sub"] for r in rows] == [SUBSET, SUBSET]
    for row, emb in zip(rows, run["ref"]):
        ref = sj.sigma(emb, subset=SUBSET, key=jax.random.key(SEED))
        assert row["u_cov"] == float(ref.u_cov)        # the same embeddings, bit for bit: the same number
        assert row["g_kf"] == float(ref.g_kf) and row["ci_halfwidth"] == float(ref.ci_halfwidth)
    assert run["report"]["sigma"]["u_cov"] == rows[0]["u_cov"]
    # the cached embeddings are MiniLMEncoder.load().encode(texts), bit for bit
    cached = sorted((run["dir"] / "embed_cache").glob("*.npy"))
    assert len(cached) == 2
    for emb in run["ref"]:
        assert any(np.array_equal(np.load(p), emb) for p in cached)
    assert rows[1]["dU"] < 0   # the narrower vocabulary


def test_encoder_settings_recorded_at_the_reference(run):
    cfg = run["report"]["settings"]["encoder"]
    assert cfg["kind"] == "minilm" and cfg["max_length"] == 256 and cfg["reference_settings"] is True
    assert run["report"]["settings"]["seed"] == SEED and run["report"]["settings"]["subset"] == SUBSET
    md = (run["dir"] / "r.md").read_text()
    assert "| encoder | all-MiniLM-L6-v2 (minilm) |" in md
    assert "| encoder: reference settings | yes: sentence-transformers' settings" in md
    assert (run["dir"] / "r.png").exists()


def test_second_run_reads_the_cache(run, monkeypatch, capsys):
    from sigma_jax.encoders import MiniLMEncoder

    def no_encoding(self, *a, **k):
        raise AssertionError("re-embedded texts that are in the cache")

    monkeypatch.setattr(MiniLMEncoder, "encode", no_encoding)
    argv = [a if not a.endswith("r.json") else str(run["dir"] / "r2.json") for a in run["argv"]]
    assert cli.main(argv) == 0
    again = json.loads((run["dir"] / "r2.json").read_text())
    assert [r["u_cov"] for r in again["rows"]] == [r["u_cov"] for r in run["report"]["rows"]]


def test_fast_setting_is_explicit_and_recorded(run, tmp_path, capsys):
    short = run["texts"][0][:20]
    out = tmp_path / "emb"
    assert cli.main(["embed", write_txt(tmp_path / "s.txt", short), "--out", str(out), "--max-length", "128",
                     "--no-progress"]) == 0
    meta = json.loads((out / "s.json").read_text())
    assert meta["encoder"]["max_length"] == 128 and meta["encoder"]["reference_settings"] is False
    # texts of at most 128 tokens embed as at 256 (up to float32 round-off of a different batch)
    assert np.abs(np.load(out / "s.npy") - run["ref"][0][:20]).max() < 1e-6
