"""Reading texts (every format, every bad input) and embedding them with a cache (sigma_jax.texts).

Reading is checked by round trips of fresh random texts (commas, quotes, tabs, newlines,
non-ASCII) written with the standard writers (``json.dumps``, ``csv.writer``) and read back
exactly; every bad input must raise (or warn) with a message naming the file, the line and
the fix.  The cache is checked with a fake encoder that counts its calls.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
import warnings

import numpy as np
import pytest

from sigma_jax.encoders import HashingEncoder
from sigma_jax.texts import (
    CACHE_FORMAT_VERSION,
    SkippedTextsWarning,
    TextInputError,
    TextSet,
    embed_texts,
    embedding_cache_key,
    is_text_path,
    read_text_folder,
    read_texts,
    save_embeddings,
)

_ALPHABET = list("abcdefghij klmnopqrstuvwxyz,,;\"'\t.!?éüñß中文Жж🙂") + ["\u2028", "\r"]


def _random_texts(rng, n, *, newlines=False):
    alphabet = _ALPHABET + (["\n"] if newlines else [])
    out = []
    for _ in range(n):
        t = "".join(rng.choice(alphabet, size=int(rng.integers(1, 40))))
        if not t.strip() or t.endswith("\r"):
            t = "x" + t + "y"  # blank texts are skipped and a final \r is a line terminator, by design
        out.append(t)
    return out


def _write(path, data: str | bytes):
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(path, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8", "newline": ""})) as f:
        f.write(data)
    return str(path)


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg, f"error message must be one line: {msg!r}"
    return msg


# --------------------------------------------------------------------------- formats (round trips)


def test_txt_round_trip_crlf_bom_and_unicode_separators(tmp_path, rng):
    texts = [t.replace("\r", "") for t in _random_texts(rng, int(rng.integers(20, 40)))]
    p = _write(tmp_path / "gen0.txt", "\n".join(texts) + "\n")
    ts = read_texts(p)
    assert ts.texts == texts and ts.name == "gen0" and ts.path == p and ts.format == "txt"
    assert ts.n_records == len(texts) and ts.n_skipped == 0 and ts.skipped_lines == ()
    # CRLF line ends, a UTF-8 BOM and no final newline give the same texts
    q = _write(tmp_path / "crlf.txt", "\ufeff" + "\r\n".join(texts))
    assert read_texts(q).texts == texts
    assert "\u2028" in "".join(texts)  # Unicode line separators stay inside texts (only \n splits)


def test_jsonl_round_trip_default_and_chosen_field(tmp_path, rng):
    texts = _random_texts(rng, int(rng.integers(20, 40)), newlines=True)
    rows = [{"text": t, "prompt": f"p{i}", "n": i} for i, t in enumerate(texts)]
    p = _write(tmp_path / "gen1.jsonl", "".join(json.dumps(r, ensure_ascii=bool(i % 2)) + "\n"
                                               for i, r in enumerate(rows)))
    ts = read_texts(p)
    assert ts.texts == texts and ts.format == "jsonl" and ts.name == "gen1"
    assert read_texts(p, field="prompt").texts == [f"p{i}" for i in range(len(texts))]


@pytest.mark.parametrize("ext,delim", [(".csv", ","), (".tsv", "\t")])
def test_csv_tsv_round_trip_with_quoting(tmp_path, rng, ext, delim):
    texts = _random_texts(rng, int(rng.integers(20, 40)), newlines=True)
    buf = io.StringIO(newline="")
    w = csv.writer(buf, delimiter=delim)
    w.writerow(["id", "completion", "text"])
    for i, t in enumerate(texts):
        w.writerow([i, t, f"other {i}"])
    p = _write(tmp_path / f"gen2{ext}", buf.getvalue())
    ts = read_texts(p, column="completion")
    assert ts.texts == texts and ts.format == ext[1:] and ts.n_records == len(texts)
    assert read_texts(p).texts == [f"other {i}" for i in range(len(texts))]  # default column "text"


def test_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("one\n\ntwo é\n".encode()), encoding="utf-8"))
    with pytest.warns(SkippedTextsWarning, match=r"<stdin>: skipped 1 empty or blank line \(line 2\)"):
        ts = read_texts("-")
    assert ts == TextSet(["one", "two é"], "stdin", None, "stdin", 3, 1, 0, (2,))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"ok\nbad \xff\n"), encoding="utf-8"))
    with pytest.raises(TextInputError, match=r"<stdin>: invalid UTF-8 at line 2"):
        read_texts("-")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no .buffer (e.g. a notebook), nothing piped
    with pytest.raises(TextInputError, match=r"<stdin> is empty \(0 bytes\)"):
        read_texts("-")


def test_list_input(rng):
    texts = _random_texts(rng, 10)
    assert read_texts(texts).texts == texts and read_texts(texts).name == "texts"
    assert read_texts(np.array(texts), name="g").texts == texts
    with pytest.warns(SkippedTextsWarning, match=r"list: skipped 2 empty or blank items \(indices 0, 3\); kept 2"):
        ts = read_texts(["", "a", "b", " \t"])
    assert ts.skipped_lines == (0, 3) and ts.n_skipped_empty == 2 and ts.n_records == 4
    with pytest.raises(TypeError, match=r"item 1 is int"):
        read_texts(["a", 3])
    with pytest.raises(TypeError, match=r"`source` is bytes"):
        read_texts(b"a.txt")
    with pytest.raises(TextInputError, match=r"list holds no texts \(2 empty or blank item\(s\)\)"):
        read_texts(["", " "])


def test_folder_natural_order_ignored_files_and_duplicate_stems(tmp_path):
    for g in (10, 2, 1):
        _write(tmp_path / f"gen{g}.txt", f"generation {g}\n")
    _write(tmp_path / "gen1.jsonl", '{"text": "json one"}\n')
    _write(tmp_path / "notes.md", "x")
    np.save(tmp_path / "emb.npy", np.zeros((2, 2)))
    (tmp_path / "sub").mkdir()
    _write(tmp_path / ".hidden.txt", "x\n")
    with pytest.warns(SkippedTextsWarning, match=r"not read .*'emb.npy', 'notes.md', 'sub/'"):
        sets = read_text_folder(tmp_path)
    assert [s.name for s in sets] == ["gen1.jsonl", "gen1.txt", "gen2", "gen10"]
    assert [s.texts for s in sets][2:] == [["generation 2"], ["generation 10"]]
    assert is_text_path(tmp_path) and not is_text_path(tmp_path / "sub")
    with pytest.raises(TextInputError, match=r"sub holds no text files .*it is empty"):
        read_text_folder(tmp_path / "sub")
    np.save(tmp_path / "sub" / "e.npy", np.zeros(2))
    with pytest.raises(TextInputError, match=r"holds no text files \(supported: .txt, .jsonl, .csv, .tsv\); "
                                             r"it has: 'e.npy'"):
        read_text_folder(tmp_path / "sub")
    with pytest.raises(TextInputError, match=r"is a folder; read it with `read_text_folder"):
        read_texts(tmp_path)
    with pytest.raises(TextInputError, match=r"gen2.txt is not a folder"):
        read_text_folder(tmp_path / "gen2.txt")


def test_is_text_path():
    assert all(map(is_text_path, ["-", "a.txt", "B.JSONL", "c.csv", "d.tsv", "missing/e.txt"]))
    assert not any(map(is_text_path, ["e.npy", "e.npz", "e.json", "e", "txt"]))


# --------------------------------------------------------------------------- bad input


def test_blank_lines_skipped_counted_and_warned(tmp_path):
    p = _write(tmp_path / "g.txt", "a\n\n  \nb\n\t\nc\n\n\n\n")
    with pytest.warns(SkippedTextsWarning) as rec:
        ts = read_texts(p)
    msg = str(rec[0].message)
    assert msg == f"{p}: skipped 6 empty or blank lines (lines 2, 3, 5, 7, 8 and 1 more); kept 3 texts."
    assert ts.texts == ["a", "b", "c"] and ts.n_skipped_empty == 6 and ts.skipped_lines == (2, 3, 5, 7, 8, 9)
    assert ts.n_records == 9 and ts.summary() == "g: 3 texts (6 empty skipped)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean file warns about nothing
        read_texts(_write(tmp_path / "clean.txt", "a\nb\n"))


@pytest.mark.parametrize("content,what", [(b"", r"0 bytes"), (b"  \n\n\t\r\n", r"only whitespace")])
def test_empty_file_errors(tmp_path, content, what):
    for ext in (".txt", ".jsonl", ".csv"):
        p = _write(tmp_path / f"empty{ext}", content)
        with pytest.raises(TextInputError) as err:
            read_texts(p)
        assert re.fullmatch(rf"{re.escape(p)} is empty \({what}\); it holds no texts: check the path.*",
                            _one_line(err))


def test_invalid_utf8_names_line_and_byte(tmp_path):
    p = _write(tmp_path / "latin.txt", "first\nsecond\n".encode() + "caf\u00e9 ok\n".encode("latin-1"))
    with pytest.raises(TextInputError) as err:
        read_texts(p)
    msg = _one_line(err)
    assert msg.startswith(f"{p}: invalid UTF-8 at line 3, byte 4 of that line (byte offset 16 of the file: b'\\xe9")
    assert "save the file as UTF-8" in msg and "iconv" in msg


def test_jsonl_bad_input(tmp_path):
    p = _write(tmp_path / "bad.jsonl", '{"text": "a"}\n{"text": "b",}\n')
    with pytest.raises(TextInputError) as err:
        read_texts(p)
    assert _one_line(err).startswith(f"{p}:2: not valid JSON (") and 'such as {"text": "..."}' in str(err.value)

    p = _write(tmp_path / "list.jsonl", '{"text": "a"}\n["b"]\n')
    with pytest.raises(TextInputError, match=rf"{re.escape(p)}:2: a JSON list, not an object"):
        read_texts(p)

    p = _write(tmp_path / "nofield.jsonl", '{"prompt": "p", "completion": "a"}\n{"prompt": "q", "completion": "b"}\n')
    with pytest.raises(TextInputError) as err:
        read_texts(p)
    assert _one_line(err) == (f"{p}:1: no row has a field 'text' (line 1 has keys: 'prompt', 'completion'); "
                              "choose the text field with `field=` (CLI: --field).")
    assert read_texts(p, field="completion").texts == ["a", "b"]

    p = _write(tmp_path / "some.jsonl", '{"text": "a"}\n\n{"txt": "b"}\n{"text": null}\n{"text": "c"}\n')
    with pytest.raises(TextInputError) as err:
        read_texts(p)
    assert _one_line(err) == (f"{p}: 2 of 4 rows lack field 'text' or hold null (first: line 3, keys: 'txt'); "
                              "fix those rows, or pass `skip_missing=True` (CLI: --skip-missing) to skip them.")
    with pytest.warns(SkippedTextsWarning) as rec:
        ts = read_texts(p, skip_missing=True)
    msgs = [str(w.message) for w in rec]
    assert f"{p}: skipped 2 of 4 lines without field 'text' (lines 3, 4); kept 2 texts." in msgs
    assert f"{p}: skipped 1 empty or blank line (line 2); kept 2 texts." in msgs
    assert ts.texts == ["a", "c"] and (ts.n_skipped_missing, ts.n_skipped_empty) == (2, 1)
    assert ts.skipped_lines == (2, 3, 4) and ts.n_records == 5

    p = _write(tmp_path / "num.jsonl", '{"text": "a"}\n{"text": 3}\n')
    with pytest.raises(TextInputError, match=rf"{re.escape(p)}:2: field 'text' is a JSON int, not a string"):
        read_texts(p)

    p = _write(tmp_path / "blankfield.jsonl", '{"text": "a"}\n{"text": "  "}\n')
    with pytest.warns(SkippedTextsWarning, match=r"skipped 1 empty or blank line \(line 2\)"):
        assert read_texts(p).texts == ["a"]


def test_csv_bad_input(tmp_path):
    p = _write(tmp_path / "cols.csv", "id,Text,prompt\n1,a,b\n")
    with pytest.raises(TextInputError) as err:
        read_texts(p)
    assert _one_line(err) == (f"{p}: no column 'text' in the header (line 1); columns: 'id', 'Text', 'prompt' "
                              "(did you mean 'Text'?); choose one with `column=` (CLI: --column).")

    p = _write(tmp_path / "ragged.csv", "id,text\n1,fine\n2,an unquoted, comma\n")
    with pytest.raises(TextInputError) as err:
        read_texts(p)
    assert _one_line(err).startswith(f"{p}:3: row has 3 fields, the header has 2; quote fields")

    p = _write(tmp_path / "multi.csv", 'id,text\n1,"two\nlines"\n2,"x,y"\n\n3,\n4,"z"\n')
    with pytest.warns(SkippedTextsWarning, match=r"skipped 2 empty or blank rows \(lines 5, 6\); kept 3 texts"):
        ts = read_texts(p)
    assert ts.texts == ["two\nlines", "x,y", "z"] and ts.skipped_lines == (5, 6) and ts.n_records == 5

    p = _write(tmp_path / "dup.tsv", "text\ttext\na\tb\n")
    with pytest.raises(TextInputError, match=r"names column 'text' 2 times"):
        read_texts(p)

    p = _write(tmp_path / "header_only.csv", "id,text\n")
    with pytest.raises(TextInputError, match=rf"{re.escape(p)} holds no texts \(nothing\)"):
        read_texts(p)


def test_unsupported_extension_and_missing_file(tmp_path):
    for name, hint in [("g.json", "json.load"), ("e.npy", "embedding files are not texts"), ("noext", "(no extension)"),
                       ("g.parquet", "")]:
        with pytest.raises(TextInputError) as err:
            read_texts(tmp_path / name)
        msg = _one_line(err)
        assert msg.startswith(f"{tmp_path / name}: unsupported file type") and hint in msg
        assert "supported: .txt, .jsonl, .csv, .tsv, '-' for stdin, or a folder of them" in msg
    with pytest.raises(FileNotFoundError, match=r"missing.txt' does not exist"):
        read_texts(tmp_path / "missing.txt")
    with pytest.raises(TypeError, match=r"`field`"):
        read_texts(["a"], field="")


# --------------------------------------------------------------------------- embedding with a cache


class CountingEncoder:
    """Fake encoder: rows from the hashing encoder times ``scale``; counts calls and texts embedded."""

    name = "counting"

    def __init__(self, scale=1.0, dim=8):
        self.scale, self._inner, self.calls, self.seen = scale, HashingEncoder(dim=dim), 0, []
        self.last_progress = None

    @property
    def dim(self):
        return self._inner.dim

    def encode(self, texts, batch_size=64, progress=False):
        self.calls += 1
        self.seen.append(list(texts))
        self.last_progress = progress
        return self._inner.encode(texts) * self.scale

    def encoder_config(self):
        return {"name": self.name, "dim": self.dim, "scale": self.scale, "model_dir": "/somewhere"}


def test_cache_hit_skips_encoder_and_settings_invalidate(tmp_path, rng):
    texts = _random_texts(rng, 12)
    enc = CountingEncoder()
    e1 = embed_texts(texts, enc, cache_dir=tmp_path / "cache", progress=False)
    assert enc.calls == 1 and e1.dtype == np.float32 and e1.shape == (12, 8) and enc.last_progress is False
    key = embedding_cache_key(texts, enc)
    files = sorted(os.listdir(tmp_path / "cache"))
    assert files == [f"{key}.json", f"{key}.npy"]  # nothing else (no temporary files left behind)
    meta = json.loads((tmp_path / "cache" / f"{key}.json").read_text())
    assert meta["n"] == 12 and meta["dim"] == 8 and meta["encoder"]["scale"] == 1.0
    assert meta["format_version"] == CACHE_FORMAT_VERSION and meta["key"] == key and meta["created"]

    e2 = embed_texts(texts, enc, cache_dir=tmp_path / "cache", batch_size=3)  # batch_size is not in the key
    assert enc.calls == 1 and np.array_equal(e1, e2)
    e3 = embed_texts(TextSet(texts, "g"), enc, cache_dir=tmp_path / "cache")
    assert enc.calls == 1 and np.array_equal(e1, e3)

    enc2 = CountingEncoder(scale=2.0)  # a setting changed: new key, embedded again
    np.testing.assert_allclose(embed_texts(texts, enc2, cache_dir=tmp_path / "cache"), 2 * e1, rtol=1e-6)
    assert enc2.calls == 1
    perm = texts[::-1]  # same texts, other order: new key, rows follow the new order
    np.testing.assert_array_equal(embed_texts(perm, enc, cache_dir=tmp_path / "cache"), e1[::-1])
    assert enc.calls == 2
    embed_texts(texts[:-1] + [texts[-1] + " "], enc, cache_dir=tmp_path / "cache")  # one character more
    assert enc.calls == 3 and len(os.listdir(tmp_path / "cache")) == 8

    embed_texts(texts, enc)  # no cache: always embeds
    embed_texts(texts, enc)
    assert enc.calls == 5 and enc.last_progress is True


def test_cache_key_recipe():
    enc = CountingEncoder()
    k = embedding_cache_key(["ab", "c"], enc)
    assert k != embedding_cache_key(["a", "bc"], enc) and k != embedding_cache_key(["c", "ab"], enc)
    moved = CountingEncoder()
    moved.encoder_config = lambda: {**enc.encoder_config(), "model_dir": "/elsewhere"}
    assert embedding_cache_key(["ab", "c"], moved) == k  # location is not content
    assert embedding_cache_key(["ab", "c"], CountingEncoder(dim=9)) != k
    assert embedding_cache_key(["\ud800 lone surrogate"], enc) != k  # hashable, no UnicodeEncodeError


def test_damaged_cache_entry_is_recomputed(tmp_path):
    enc, texts = CountingEncoder(), ["a", "b", "c"]
    e1 = embed_texts(texts, enc, cache_dir=tmp_path)
    npy = tmp_path / f"{embedding_cache_key(texts, enc)}.npy"
    np.save(npy, np.zeros((2, 8), np.float32))
    with pytest.warns(RuntimeWarning, match=r"is damaged \(shape \(2, 8\).*re-embedding"):
        e2 = embed_texts(texts, enc, cache_dir=tmp_path)
    assert enc.calls == 2 and np.array_equal(e1, e2) and np.load(npy).shape == (3, 8)
    npy.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match=r"is damaged"):
        embed_texts(texts, enc, cache_dir=tmp_path)
    assert enc.calls == 3


def test_embed_texts_errors(tmp_path):
    class NoConfig:
        name, dim = "noconfig", 2

        def encode(self, texts, batch_size=64, progress=False):
            return np.ones((len(texts), 2), np.float32)

    assert embed_texts(["a"], NoConfig()).shape == (1, 2)
    with pytest.raises(TypeError, match=r"caching embeddings needs `NoConfig.encoder_config\(\)`.*cache_dir=None"):
        embed_texts(["a"], NoConfig(), cache_dir=tmp_path)

    class Wrong(NoConfig):
        def __init__(self, out):
            self.out = out

        def encode(self, texts, batch_size=64, progress=False):
            return self.out

    with pytest.raises(ValueError, match=r"returned shape \(3, 2\) for 2 texts; expected \(2, 2\)"):
        embed_texts(["a", "b"], Wrong(np.zeros((3, 2))))
    with pytest.raises(ValueError, match=r"non-finite values in rows \[1\]"):
        embed_texts(["a", "b"], Wrong(np.array([[1.0, 0], [np.nan, 0]])))
    with pytest.raises(ValueError, match=r"unknown encoder 'nope'; available: .*hashing"):
        embed_texts(["a"], "nope")
    with pytest.raises(TypeError, match=r"wrap it"):
        embed_texts("a", "hashing")
    with pytest.raises(ValueError, match=r"`batch_size`"):
        embed_texts(["a"], "hashing", batch_size=0)
    assert embed_texts(["a"], "hashing", progress=False).shape == (1, 384)


def test_save_embeddings(tmp_path, rng):
    enc = CountingEncoder()
    emb = rng.normal(size=(5, 8))
    p = save_embeddings(emb, tmp_path / "out", "gen0", enc, source="g/gen0.txt", meta={"n_skipped_empty": 2})
    assert p == tmp_path / "out" / "gen0.npy" and sorted(os.listdir(tmp_path / "out")) == ["gen0.json", "gen0.npy"]
    back = np.load(p)
    assert back.dtype == np.float32 and np.array_equal(back, emb.astype(np.float32))
    meta = json.loads((tmp_path / "out" / "gen0.json").read_text())
    assert meta["encoder"]["scale"] == 1.0 and (meta["n"], meta["dim"]) == (5, 8)
    assert meta["source"] == "g/gen0.txt" and meta["n_skipped_empty"] == 2 and meta["name"] == "gen0"
    save_embeddings(emb, tmp_path / "out", "gen0b", enc.encoder_config())  # a config dict works too
    for bad in ("", "a/b", ".hidden", None):
        with pytest.raises(ValueError, match=r"`name` must be a plain file name"):
            save_embeddings(emb, tmp_path, bad, enc)
    with pytest.raises(ValueError, match=r"has 3 columns but the encoder's dim is 8"):
        save_embeddings(emb[:, :3], tmp_path, "x", enc)
    with pytest.raises(ValueError, match=r"`emb` holds 5 non-finite values"):
        save_embeddings(np.where(np.arange(8) == 3, np.inf, emb), tmp_path, "x", enc)
    with pytest.raises(ValueError, match=r"non-empty \(n, dim\)"):
        save_embeddings(np.zeros(8), tmp_path, "x", enc)


def test_docstring_examples_run():
    """The examples of sigma_jax.texts' modules, with tests/test_docs.py's own check."""
    import tests.test_docs as docs

    for mod in ("sigma_jax.texts", "sigma_jax.texts.reading", "sigma_jax.texts.embedding"):
        docs.test_public_functions_have_examples_that_run(mod)
