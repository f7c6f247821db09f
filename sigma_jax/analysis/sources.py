"""What an analysis reads: embedding arrays and files, and texts (lists, TextSets, files, folders, stdin).

Inputs are collected first (texts read and counted, arrays opened memory-mapped), checked
against the analysis' settings (same dimension everywhere, enough texts for the subset,
``n_A > m``) *before* anything is embedded, and only then embedded -- so a bad input costs
seconds, not an embedding pass.  Used by :func:`sigma_jax.analyze` and by ``sigma-jax embed``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

from sigma_jax import _checks, _io
from sigma_jax.encoders import Encoder, get_encoder
from sigma_jax.texts import TextSet, embed_texts, embedding_cache_key, is_text_path, read_text_folder, read_texts
from sigma_jax.texts.reading import natural_key

__all__ = ["InputSet", "collect_inputs", "check_inputs", "embed_inputs", "user_cache_dir", "EMBEDDING_EXTENSIONS"]

EMBEDDING_EXTENSIONS = (".npy", ".npz")


class InputSet(NamedTuple):
    """One set of an analysis: embeddings, or texts to embed.

    Attributes:
        name: its row label (unique within an analysis).
        kind: ``"embeddings"`` or ``"texts"``.
        source: the file read (as given), ``"stdin"``, ``"list"`` or ``"array"``.
        texts: the :class:`~sigma_jax.texts.TextSet` (texts and skipped counts) for texts, else None.
        embeddings: (n, m) array (``np.memmap`` for ``.npy`` files); None for texts not yet embedded.
    """

    name: str
    kind: str
    source: str
    texts: TextSet | None = None
    embeddings: Any = None

    @property
    def n(self) -> int:
        """Rows: texts kept, or embedding rows."""
        return len(self.texts.texts) if self.embeddings is None else int(self.embeddings.shape[0])

    @property
    def label(self) -> str:
        """How messages name the set: its file, else its name."""
        return self.source if self.source not in ("list", "array", "stdin") else f"{self.name} ({self.source})"


def user_cache_dir() -> Path:
    """The per-user embedding cache: ``$XDG_CACHE_HOME/sigma_jax/embeddings`` (default ``~/.cache/...``).

    Example:
        >>> user_cache_dir().parts[-2:]
        ('sigma_jax', 'embeddings')
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sigma_jax" / "embeddings"


# --------------------------------------------------------------------------- collecting


def collect_inputs(inputs, *, field: str = "text", column: str = "text", skip_missing: bool = False,
                   texts_only: bool = False) -> list[InputSet]:
    """The sets named by ``inputs``, texts read (not embedded) and arrays opened, with unique names.

    Args:
        inputs: one input or a sequence or a ``{name: input}`` mapping of inputs.  An input is an
            (n, m) array, a ``.npy``/``.npz`` path, a text file (``.txt``, ``.jsonl``, ``.csv``,
            ``.tsv``), ``"-"`` (stdin), a folder of embedding files or of text files (one set per
            file, natural name order: ``gen2`` before ``gen10``), a list of str (the texts of one
            set) or a :class:`~sigma_jax.texts.TextSet`.  A flat list of str is a list of *paths*;
            wrap one list of texts as ``[texts]`` or ``{"gen0": texts}``.
        field, column, skip_missing: as in :func:`sigma_jax.texts.read_texts`.
        texts_only: refuse embedding inputs (``sigma-jax embed``).

    Example:
        >>> sets = collect_inputs({"gen0": ["a text", "another"], "emb": np.ones((3, 4), np.float32)})
        >>> [(s.name, s.kind, s.n) for s in sets]
        [('gen0', 'texts', 2), ('emb', 'embeddings', 3)]
    """
    if isinstance(inputs, Mapping):
        entries = [(str(k), v) for k, v in inputs.items()]
    elif isinstance(inputs, (str, os.PathLike, TextSet)) or hasattr(inputs, "shape"):
        entries = [(None, inputs)]
    else:
        try:
            entries = [(None, x) for x in inputs]
        except TypeError:
            raise TypeError(f"`inputs` must be arrays, paths, lists of texts or a mapping of them, got "
                            f"{type(inputs).__name__}.") from None
    if not entries:
        raise ValueError("`inputs` is empty; pass embedding arrays or files, text files, a folder, or lists of texts.")
    flat_strs = all(isinstance(x, str) for _, x in entries) and not isinstance(inputs, Mapping)
    if sum(1 for _, x in entries if isinstance(x, str) and x == "-") > 1:
        raise ValueError("'-' (stdin) is given more than once; stdin can be read once.")
    opts = dict(field=field, column=column, skip_missing=skip_missing)
    sets: list[InputSet] = []
    for i, (name, x) in enumerate(entries):
        sets += _one(name, x, i, flat_strs, opts)
    if texts_only:
        arrays = [s.label for s in sets if s.kind != "texts"]
        if arrays:
            raise ValueError(f"{arrays[0]} already holds embeddings; pass text files (.txt, .jsonl, .csv, .tsv), "
                             "a folder of them or '-' (stdin).")
    return _unique_names(sets)


def _one(name, x, i: int, flat_strs: bool, opts) -> list[InputSet]:
    if isinstance(x, TextSet):
        return [InputSet(name or x.name, "texts", x.path or x.format, x)]
    if isinstance(x, (str, os.PathLike)):
        return _from_path(name, x, flat_strs, opts)
    if isinstance(x, (list, tuple)) and not x:
        raise ValueError(f"input {name or i!r} is an empty list; pass its texts (or an (n, m) array).")
    if isinstance(x, (list, tuple)) and all(isinstance(t, str) for t in x):
        ts = read_texts(list(x), name=name or f"set{i}")
        return [InputSet(ts.name, "texts", "list", ts)]
    if hasattr(x, "shape") or isinstance(x, (list, tuple)):
        arr = _checks.check_float_array(x, f"inputs[{name!r}]" if name else f"inputs[{i}]")
        return [InputSet(name or f"set{i}", "embeddings", "array", None, arr)]
    raise TypeError(f"input {i} is a {type(x).__name__}; pass an (n, m) array, a path, a list of str (texts) or a "
                    "TextSet.")


def _from_path(name, x, flat_strs: bool, opts) -> list[InputSet]:
    if isinstance(x, str) and x == "-":
        ts = read_texts("-", name=name, **opts)
        return [InputSet(ts.name, "texts", "stdin", ts)]
    path = Path(x)
    if path.is_dir():
        return _from_folder(name, path, opts)
    if _is_array_file(path):
        return [InputSet(name or path.stem, "embeddings", str(x), None, _io.load_embeddings(path))]
    if not path.exists() and not is_text_path(path):
        hint = ""
        if flat_strs and any(c.isspace() for c in str(x)):
            hint = "; if it is a text, note that a list of texts is one input: wrap it, e.g. `analyze([texts])`"
        raise FileNotFoundError(f"input {str(x)!r:.80} does not exist{hint}.")
    ts = read_texts(path, name=name, **opts)  # names unsupported types and missing files
    return [InputSet(ts.name, "texts", str(x), ts)]


def _is_array_file(path: Path) -> bool:
    if path.suffix.lower() in EMBEDDING_EXTENSIONS:
        return True
    if is_text_path(path) or not path.is_file():
        return False
    with open(path, "rb") as f:  # an embedding file without its extension
        magic = f.read(6)
    return magic == b"\x93NUMPY" or magic.startswith(b"PK")


def _from_folder(name, folder: Path, opts) -> list[InputSet]:
    arrays = sorted((e for e in folder.iterdir() if e.is_file() and e.suffix.lower() in EMBEDDING_EXTENSIONS
                     and not e.name.startswith(".")), key=lambda e: natural_key(e.name))
    if is_text_path(folder):
        if arrays:
            raise ValueError(f"folder {str(folder)!r} holds both embedding files ({arrays[0].name}, ...) and text "
                             "files; pass the files you mean, or separate them into two folders.")
        prefix = f"{name}/" if name else ""
        return [InputSet(prefix + ts.name, "texts", ts.path, ts) for ts in read_text_folder(folder, **opts)]
    if not arrays:
        raise ValueError(f"folder {str(folder)!r} holds no .npy/.npz embedding files and no text files (.txt, "
                         ".jsonl, .csv, .tsv).")
    prefix = f"{name}/" if name else ""
    return [InputSet(prefix + e.stem, "embeddings", str(e), None, _io.load_embeddings(e)) for e in arrays]


def _unique_names(sets: list[InputSet]) -> list[InputSet]:
    """Sets sharing a name are renamed to their file names, then numbered (``g0.txt``, ``g0.npy``; ``a#2``)."""
    names = [s.name for s in sets]
    out = []
    for s in sets:
        if names.count(s.name) > 1 and s.source not in ("list", "array", "stdin"):
            s = s._replace(name=os.path.basename(s.source))
        out.append(s)
    seen: dict[str, int] = {}
    final = []
    for s in out:
        k = seen[s.name] = seen.get(s.name, 0) + 1
        final.append(s if k == 1 else s._replace(name=f"{s.name}#{k}"))
    return final


# --------------------------------------------------------------------------- checking, embedding


def check_inputs(sets: list[InputSet], *, text_dim: int | None, subset=None, n_total: int | None = None,
                 ridge_only: bool = False, encoder_name: str = "the encoder") -> None:
    """Raise, naming the set and the fix, unless every set can be measured as asked.

    Checked before anything is embedded: every set has the same dimension m (texts get
    ``text_dim``, the encoder's), at least ``subset`` rows, no more than ``n_total``, and
    ``n_A > m`` (unless ``ridge_only``).

    Example:
        >>> sets = collect_inputs({"g0": np.ones((5, 4), np.float32), "g1": ["a", "b"]})
        >>> check_inputs(sets, text_dim=8, encoder_name="hashing")
        Traceback (most recent call last):
        ...
        ValueError: the inputs have different embedding dimensions: g0 (array): m=4; g1 (list): m=8 (hashing); ...
    """
    counted = isinstance(subset, (int, np.integer)) and not isinstance(subset, bool)
    if counted and subset < 1:
        raise ValueError(f"`subset` must be a positive number of rows (CLI: --subset), got {subset}.")
    dims = [(s, text_dim if s.kind == "texts" else int(s.embeddings.shape[1])) for s in sets]
    if len({m for _, m in dims}) > 1:
        shown = "; ".join(f"{s.label}: m={m}" + (f" ({encoder_name})" if s.kind == "texts" else "")
                          for s, m in dims[:6])
        raise ValueError(f"the inputs have different embedding dimensions: {shown}; SIGMA compares sets embedded "
                         "by the same encoder: embed every set with one encoder (pass the texts, or make all "
                         "arrays with `sigma-jax embed`).")
    for s, m in dims:
        what = "texts" if s.kind == "texts" else "rows"
        have = s.texts.summary().split(": ", 1)[1] if s.kind == "texts" else f"{s.n} rows"
        if counted and s.n < subset:
            raise ValueError(f"{s.label}: {have}, fewer than the subset needs (subset={int(subset)}); lower the "
                             f"subset (`subset=`, CLI: --subset) or supply at least {int(subset)} {what}.")
        if n_total is not None and int(n_total) < s.n:
            raise ValueError(f"{s.label}: {have}, more than n_total={int(n_total)}; n_total counts all {what} the "
                             "set was drawn from: raise it (`n_total=`, CLI: --n-total) or leave it out.")
        n_a = s.n if subset is None else (int(subset) if np.ndim(subset) == 0 else int(np.shape(subset)[0]))
        if n_a <= m and not ridge_only:
            raise ValueError(f"{s.label}: n_A={n_a} observed {what} <= m={m} embedding dimensions; SIGMA needs "
                             f"n_A > m: supply more {what} (or a larger subset, CLI: --subset), or opt in to the "
                             "ridge-only regime with `ridge_only=True` (CLI: --ridge-only).")


def embed_inputs(sets: list[InputSet], encoder: Encoder | str, *, cache_dir: str | os.PathLike | None = None,
                 batch_size: int = 64, progress: bool = True) -> list[InputSet]:
    """The sets with every text set embedded (:func:`sigma_jax.texts.embed_texts`, cached in ``cache_dir``).

    With ``progress``, a line on stderr names each set before its progress bar (or says that its
    embeddings come from the cache).

    Example:
        >>> from sigma_jax.encoders import HashingEncoder
        >>> sets = embed_inputs(collect_inputs([["a text", "another"]]), HashingEncoder(dim=8), progress=False)
        >>> sets[0].embeddings.shape
        (2, 8)
    """
    encoder = get_encoder(encoder)
    out = []
    for s in sets:
        if s.kind == "texts":
            if progress:
                hit = cache_dir is not None and (Path(cache_dir) / f"{embedding_cache_key(s.texts.texts, encoder)}.npy"
                                                 ).exists()
                print(f"{s.label}: {s.n} texts, " + ("embeddings from the cache" if hit else
                                                      f"embedding with {getattr(encoder, 'name', 'the encoder')}"),
                      file=sys.stderr)
            s = s._replace(embeddings=embed_texts(s.texts, encoder, cache_dir=cache_dir, batch_size=batch_size,
                                                  progress=progress))
        out.append(s)
    return out
