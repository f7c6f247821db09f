"""Texts in: read text files (txt, jsonl, csv, tsv, stdin, folders) and embed them with an on-disk cache.

SIGMA's users hold texts — a model's generations, one file per generation — not arrays.
This module turns them into embedding rows:

* :func:`read_texts` reads one source (a path, ``"-"`` for stdin, or a list of strings)
  into a :class:`TextSet`; :func:`read_text_folder` reads every supported file of a folder
  (one :class:`TextSet` each, in natural name order: ``gen2`` before ``gen10``);
  :func:`is_text_path` tells text inputs from ``.npy``/``.npz`` embedding files.
* :func:`embed_texts` embeds a list of texts with any encoder (an object or a registered
  name, see :mod:`sigma_jax.encoders`), loading from ``cache_dir`` when the same texts were
  embedded with the same encoder settings before.
* :func:`save_embeddings` writes ``<name>.npy`` plus ``<name>.json`` (encoder config, n,
  dim, source) for people who keep embeddings.

Formats (by extension, case-insensitive): ``.txt`` one text per line; ``.jsonl`` one JSON
object per line, the text under ``field`` (default ``"text"``); ``.csv`` / ``.tsv`` a header
row, the text in ``column`` (default ``"text"``; standard CSV quoting, as Python's ``csv``
and pandas write it); ``"-"`` stdin, one text per line.  Files must be UTF-8 (a leading BOM
is dropped).  Texts keep their whitespace except the line terminator.

Bad input is never dropped silently: empty or blank lines/rows are skipped, counted in the
:class:`TextSet` and reported with a :class:`SkippedTextsWarning`; everything else that is
wrong (empty file, invalid UTF-8, malformed JSON, a missing field or column, ragged CSV rows,
unsupported extensions) raises :class:`TextInputError` (a ``ValueError``) whose one-line
message names the file, the line and the fix.

The reading lives in :mod:`sigma_jax.texts.reading`, the embedding and its cache in
:mod:`sigma_jax.texts.embedding`; import both from here.

Example::

    from sigma_jax import texts
    ts = texts.read_texts("gen0.jsonl", field="completion")
    E = texts.embed_texts(ts.texts, "minilm", cache_dir="run/embed_cache")   # (n, 384) float32

Runnable, with the cheap (not semantic) hashing encoder:

>>> ts = read_texts(["In the beginning", "God created the heaven"], name="gen0")
>>> embed_texts(ts, "hashing", progress=False).shape
(2, 384)
"""

from sigma_jax.texts.embedding import CACHE_FORMAT_VERSION, embed_texts, embedding_cache_key, save_embeddings
from sigma_jax.texts.reading import (
    SUPPORTED_EXTENSIONS,
    SkippedTextsWarning,
    TextInputError,
    TextSet,
    is_text_path,
    read_text_folder,
    read_texts,
)

__all__ = [
    "TextSet",
    "TextInputError",
    "SkippedTextsWarning",
    "SUPPORTED_EXTENSIONS",
    "CACHE_FORMAT_VERSION",
    "read_texts",
    "read_text_folder",
    "is_text_path",
    "embed_texts",
    "embedding_cache_key",
    "save_embeddings",
]
