"""Reading texts from files (txt, jsonl, csv, tsv), stdin, folders and lists, with honest bad-input handling.

See :mod:`sigma_jax.texts` for the formats and the error policy.  Imports nothing of ours.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np

__all__ = ["TextSet", "TextInputError", "SkippedTextsWarning", "SUPPORTED_EXTENSIONS", "read_texts",
           "read_text_folder", "is_text_path", "natural_key"]

SUPPORTED_EXTENSIONS = (".txt", ".jsonl", ".csv", ".tsv")
_SHOW = 5  # line numbers quoted in a message


class TextInputError(ValueError):
    """A text source that cannot be read as asked; the message names the file, the line and the fix."""


class SkippedTextsWarning(UserWarning):
    """Some lines/rows of a text source were skipped (empty, blank, or without the field); counts in the message."""


class TextSet(NamedTuple):
    """Texts read from one source, with what was skipped.

    Attributes:
        texts: the texts, in file order, skipped ones left out.
        name: a short label: the file name without extension, ``"stdin"``, or the ``name=``
            given for a list.
        path: the file read, ``None`` for stdin and lists.
        format: ``"txt"``, ``"jsonl"``, ``"csv"``, ``"tsv"``, ``"stdin"`` or ``"list"``.
        n_records: lines/rows read (header excluded), kept plus skipped.
        n_skipped_empty: empty or blank lines/rows/fields skipped.
        n_skipped_missing: JSONL rows without the field, skipped under ``skip_missing=True``.
        skipped_lines: 1-based line numbers of every skipped record (0-based item
            indices for a list).
    """

    texts: list[str]
    name: str
    path: str | None = None
    format: str = "list"
    n_records: int = 0
    n_skipped_empty: int = 0
    n_skipped_missing: int = 0
    skipped_lines: tuple[int, ...] = ()

    @property
    def n_skipped(self) -> int:
        """All skipped records."""
        return self.n_skipped_empty + self.n_skipped_missing

    def summary(self) -> str:
        """One line: ``name: n texts (k skipped: ...)``."""
        parts = []
        if self.n_skipped_empty:
            parts.append(f"{self.n_skipped_empty} empty")
        if self.n_skipped_missing:
            parts.append(f"{self.n_skipped_missing} without the field")
        skipped = f" ({', '.join(parts)} skipped)" if parts else ""
        return f"{self.name}: {len(self.texts)} texts{skipped}"


# --------------------------------------------------------------------------- reading


def read_texts(source: str | os.PathLike | Iterable[str], *, field: str = "text", column: str = "text",
               skip_missing: bool = False, name: str | None = None) -> TextSet:
    """Read the texts of one source: a ``.txt``/``.jsonl``/``.csv``/``.tsv`` path, ``"-"`` (stdin) or a list.

    Args:
        source: a file path, ``"-"`` for stdin (one text per line), or a list of str.
            Folders go through :func:`read_text_folder`.
        field: the JSONL key holding the text.
        column: the CSV/TSV header name of the text column.
        skip_missing: skip (count, warn) JSONL rows without ``field`` instead of raising.
        name: the :attr:`TextSet.name` (default: file name without extension, ``"stdin"``, ``"texts"``).

    Returns:
        A :class:`TextSet`.  Empty or blank lines (rows, fields, list items) are skipped,
        counted and reported with a :class:`SkippedTextsWarning`.

    Raises:
        TextInputError: empty file, no texts left, invalid UTF-8 (line and byte named),
            malformed JSON or a non-object line, rows without ``field`` (the first one and its
            keys named), a non-string field, a CSV without ``column`` (columns listed), ragged
            CSV rows, a folder, an unsupported extension (supported ones listed).
        FileNotFoundError: no such file.

    Example:
        >>> import os, tempfile, warnings
        >>> d = tempfile.mkdtemp()
        >>> p = os.path.join(d, "gen0.jsonl")
        >>> _ = open(p, "w").write('{"text": "In the beginning"}\\n{"text": "God created"}\\n')
        >>> ts = read_texts(p)
        >>> ts.texts, ts.name, ts.format, ts.n_skipped_empty
        (['In the beginning', 'God created'], 'gen0', 'jsonl', 0)
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     ts = read_texts(["a", "  ", "b"])
        >>> ts.texts, ts.skipped_lines, str(caught[0].message)
        (['a', 'b'], (1,), 'list: skipped 1 empty or blank item (index 1); kept 2 texts.')
        >>> read_texts(os.path.join(d, "gen0.json"))
        Traceback (most recent call last):
        ...
        sigma_jax.texts.reading.TextInputError: .../gen0.json: unsupported file type '.json'; supported: .txt, .jsonl, ...
    """
    if not isinstance(field, str) or not field:
        raise TypeError(f"`field` must be a non-empty str (the JSONL key holding the text), got {field!r}.")
    if not isinstance(column, str) or not column:
        raise TypeError(f"`column` must be a non-empty str (the CSV/TSV column holding the text), got {column!r}.")
    if isinstance(source, bytes):
        raise TypeError("`source` is bytes; pass a path (str), '-' for stdin, or a list of str.")
    if not isinstance(source, (str, os.PathLike)):
        return _from_list(source, name or "texts")
    if isinstance(source, str) and source == "-":
        text = _decode(_check_not_empty(_read_stdin_bytes(), "<stdin>"), "<stdin>", ".txt")
        return _records_txt(text, "<stdin>", name or "stdin", None, "stdin")
    path = Path(source)
    where = str(path)
    if path.is_dir():
        raise TextInputError(f"{where} is a folder; read it with `read_text_folder({where!r})` "
                             "(one TextSet per supported file).")
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        hint = ""
        if ext == ".json":
            hint = " (a .json array of strings: load it with `json.load` and pass the list)"
        elif ext in (".npy", ".npz"):
            hint = " (embedding files are not texts: pass them to `sigma_jax.analyze` as they are, or `np.load` them)"
        raise TextInputError(f"{where}: unsupported file type {ext or '(no extension)'!r}; supported: "
                             f"{', '.join(SUPPORTED_EXTENSIONS)}, '-' for stdin, or a folder of them{hint}.")
    if not path.exists():
        raise FileNotFoundError(f"text file {where!r} does not exist.")
    text = _decode(_check_not_empty(path.read_bytes(), where), where, ext)
    label = name or path.stem
    if ext == ".txt":
        return _records_txt(text, where, label, str(path), "txt")
    if ext == ".jsonl":
        return _records_jsonl(text, where, label, str(path), field, skip_missing)
    return _records_csv(text, where, label, str(path), column, ext[1:])


def read_text_folder(path: str | os.PathLike, *, field: str = "text", column: str = "text",
                     skip_missing: bool = False) -> list[TextSet]:
    """One :class:`TextSet` per supported file directly inside ``path``, in natural name order.

    Natural order compares digit runs as numbers (``gen2.txt`` before ``gen10.txt``), so a
    folder of generations reads in generation order.  Sub-folders and files with other
    extensions are not read and are named in a :class:`SkippedTextsWarning`; hidden files
    (``.name``) are ignored.  When two files share a stem (``g0.txt``, ``g0.jsonl``) their
    names keep the extension.  Other arguments as in :func:`read_texts`.

    Example:
        >>> import os, tempfile
        >>> d = tempfile.mkdtemp()
        >>> for g in (10, 2):
        ...     _ = open(os.path.join(d, f"gen{g}.txt"), "w").write(f"text of generation {g}\\n")
        >>> [(ts.name, ts.texts) for ts in read_text_folder(d)]
        [('gen2', ['text of generation 2']), ('gen10', ['text of generation 10'])]
    """
    folder = Path(path)
    if not folder.is_dir():
        raise TextInputError(f"{folder} is not a folder" + ("" if folder.exists() else " (it does not exist)")
                             + "; pass a folder of .txt/.jsonl/.csv/.tsv files, or read one file with `read_texts`.")
    entries = sorted((e for e in folder.iterdir() if not e.name.startswith(".")), key=lambda e: natural_key(e.name))
    files = [e for e in entries if e.is_file() and e.suffix.lower() in SUPPORTED_EXTENSIONS]
    ignored = [e.name + ("/" if e.is_dir() else "") for e in entries if e not in files]
    if not files:
        raise TextInputError(f"{folder} holds no text files (supported: {', '.join(SUPPORTED_EXTENSIONS)})"
                             + (f"; it has: {_quote_list(ignored)}" if ignored else "; it is empty") + ".")
    if ignored:
        warnings.warn(f"{folder}: not read (not {'/'.join(SUPPORTED_EXTENSIONS)} files): {_quote_list(ignored)}.",
                      SkippedTextsWarning, stacklevel=2)
    stems = [f.stem for f in files]
    return [read_texts(f, field=field, column=column, skip_missing=skip_missing,
                       name=f.stem if stems.count(f.stem) == 1 else f.name) for f in files]


def is_text_path(path: str | os.PathLike) -> bool:
    """True for ``"-"`` (stdin), a path with a text extension, or a folder holding a text file.

    Decided by the extension (the file need not exist yet); ``.npy``/``.npz`` embedding
    files are not text paths.  Only folders are looked into.

    Example:
        >>> is_text_path("gen0.TXT"), is_text_path("g.jsonl"), is_text_path("-"), is_text_path("emb.npy")
        (True, True, True, False)
    """
    if isinstance(path, str) and path == "-":
        return True
    p = Path(path)
    if p.is_dir():
        return any(e.is_file() and e.suffix.lower() in SUPPORTED_EXTENSIONS and not e.name.startswith(".")
                   for e in p.iterdir())
    return p.suffix.lower() in SUPPORTED_EXTENSIONS


def _read_stdin_bytes() -> bytes:
    buf = getattr(sys.stdin, "buffer", None)
    if buf is not None:
        return buf.read()
    return sys.stdin.read().encode("utf-8", "surrogatepass")


def _check_not_empty(data: bytes, where: str) -> bytes:
    if not data.strip():
        raise TextInputError(f"{where} is empty{' (only whitespace)' if data else ' (0 bytes)'}; "
                             "it holds no texts: check the path, or the step that wrote it.")
    return data


def _decode(data: bytes, where: str, ext: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        bad = data[err.start:err.start + 4]
        raise TextInputError(
            f"{where}: invalid UTF-8 at line {line}, byte {col} of that line (byte offset {err.start} of the "
            f"file: {bad!r}...); save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 IN{ext} > OUT{ext}`)."
        ) from None
    return text.removeprefix("\ufeff")


def _lines(text: str) -> list[str]:
    """Split on \\n only (other Unicode separators stay inside texts); drop \\r and the final empty piece."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _from_list(items: Any, name: str) -> TextSet:
    if isinstance(items, np.ndarray):
        items = items.tolist()
    try:
        items = list(items)
    except TypeError:
        raise TypeError(f"`source` must be a path, '-' or a list of str, got {type(items).__name__}.") from None
    bad = [i for i, t in enumerate(items) if not isinstance(t, str)]
    if bad:
        i = bad[0]
        raise TypeError(f"`source` must contain only str; item {i} is {type(items[i]).__name__} "
                        f"({items[i]!r:.40}); convert with `str(...)` or decode bytes with `.decode('utf-8')`.")
    keep, skipped = [], []
    for i, t in enumerate(items):
        (keep if t.strip() else skipped).append(t if t.strip() else i)
    return _finish(keep, skipped, [], name, None, "list", len(items), "list", "item", "index", "", 0)


def _records_txt(text: str, where: str, name: str, path: str | None, fmt: str) -> TextSet:
    keep, empty = [], []
    lines = _lines(text)
    for i, line in enumerate(lines, 1):
        if line.strip():
            keep.append(line)
        else:
            empty.append(i)
    return _finish(keep, empty, [], name, path, fmt, len(lines), where, "line", "line", "", 0)


def _records_jsonl(text: str, where: str, name: str, path: str, field: str, skip_missing: bool) -> TextSet:
    keep, empty, missing = [], [], []
    first_keys: list[str] = []
    lines = _lines(text)
    n_objects = 0
    for i, line in enumerate(lines, 1):
        if not line.strip():
            empty.append(i)
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise TextInputError(f"{where}:{i}: not valid JSON ({err.msg} at column {err.colno}); each line must "
                                 'be one JSON object such as {"text": "..."}.') from None
        if not isinstance(row, dict):
            raise TextInputError(f"{where}:{i}: a JSON {type(row).__name__}, not an object; each line must be one "
                                 f'JSON object such as {{"{field}": "..."}}.')
        n_objects += 1
        value = row.get(field)
        if value is None:
            if not missing:
                first_keys = list(row)
            missing.append(i)
            continue
        if not isinstance(value, str):
            raise TextInputError(f"{where}:{i}: field {field!r} is a JSON {type(value).__name__}, not a string; "
                                 "choose the text field with `field=` (CLI: --field).")
        if value.strip():
            keep.append(value)
        else:
            empty.append(i)
    if missing:
        keys = ", ".join(repr(k) for k in first_keys) or "none"
        if len(missing) == n_objects:
            raise TextInputError(f"{where}:{missing[0]}: no row has a field {field!r} (line {missing[0]} has keys: "
                                 f"{keys}); choose the text field with `field=` (CLI: --field).")
        if not skip_missing:
            raise TextInputError(f"{where}: {len(missing)} of {n_objects} rows lack field {field!r} or hold null "
                                 f"(first: line {missing[0]}, keys: {keys}); fix those rows, or pass "
                                 "`skip_missing=True` (CLI: --skip-missing) to skip them.")
    return _finish(keep, empty, missing, name, path, "jsonl", len(lines), where, "line", "line",
                   f"without field {field!r}", n_objects)


def _records_csv(text: str, where: str, name: str, path: str, column: str, fmt: str) -> TextSet:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",")
    keep, empty = [], []
    header: list[str] | None = None
    col = -1
    prev_end = 0
    n_rows = 0
    try:
        for row in reader:
            start, prev_end = prev_end + 1, reader.line_num
            blank = not any(c.strip() for c in row)
            if header is None:
                if blank:
                    continue
                header = row
                if header.count(column) > 1:
                    raise TextInputError(f"{where}:{start}: the header names column {column!r} "
                                         f"{header.count(column)} times; rename the duplicates.")
                if column not in header:
                    close = [h for h in header if h.strip().lower() == column.strip().lower()]
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise TextInputError(f"{where}: no column {column!r} in the header (line {start}); columns: "
                                         f"{_quote_list(header)}{hint}; choose one with `column=` (CLI: --column).")
                col = header.index(column)
                continue
            n_rows += 1
            if blank:
                empty.append(start)
                continue
            if len(row) != len(header):
                raise TextInputError(f"{where}:{start}: row has {len(row)} fields, the header has {len(header)}; "
                                     "quote fields that contain the delimiter, quotes or newlines.")
            value = row[col]
            if value.strip():
                keep.append(value)
            else:
                empty.append(start)
    except csv.Error as err:
        raise TextInputError(f"{where}:{reader.line_num}: malformed {fmt.upper()} ({err}); "
                             "check the quoting of that row.") from None
    if header is None:
        raise TextInputError(f"{where} has no header row; the first line must name the columns (one of them "
                             f"{column!r}).")
    return _finish(keep, empty, [], name, path, fmt, n_rows, where, "row", "line", "", 0)


def _finish(keep, empty, missing, name, path, fmt, n_records, where, noun, pos, missing_what, n_objects):
    if not keep:
        what = []
        if empty:
            what.append(f"{len(empty)} empty or blank {noun}(s)")
        if missing:
            what.append(f"{len(missing)} {noun}(s) {missing_what}")
        raise TextInputError(f"{where} holds no texts (" + (" and ".join(what) or "nothing") + "); "
                             "check the file, or the step that wrote it.")
    if empty:
        warnings.warn(f"{where}: skipped {len(empty)} empty or blank {noun}{'s' if len(empty) > 1 else ''} "
                      f"({_positions(pos, empty)}); kept {len(keep)} texts.", SkippedTextsWarning, stacklevel=4)
    if missing:
        warnings.warn(f"{where}: skipped {len(missing)} of {n_objects} {noun}s {missing_what} "
                      f"({_positions(pos, missing)}); kept {len(keep)} texts.", SkippedTextsWarning, stacklevel=4)
    return TextSet(texts=keep, name=name, path=path, format=fmt, n_records=n_records,
                   n_skipped_empty=len(empty), n_skipped_missing=len(missing),
                   skipped_lines=tuple(sorted(empty + missing)))


def _positions(pos: str, where: list[int]) -> str:
    plural = {"line": "lines", "index": "indices"}[pos] if len(where) > 1 else pos
    head = ", ".join(str(i) for i in where[:_SHOW])
    return f"{plural} {head}" + (f" and {len(where) - _SHOW} more" if len(where) > _SHOW else "")


def _quote_list(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:20])
    return shown + (f" and {len(names) - 20} more" if len(names) > 20 else "")


def natural_key(name: str) -> list:
    """Sort key that orders numbers inside names numerically (``gen2`` before ``gen10``).

    Example:
        >>> sorted(["gen10.txt", "gen2.txt", "Gen1.txt"], key=natural_key)
        ['Gen1.txt', 'gen2.txt', 'gen10.txt']
    """
    return [(0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in re.split(r"(\d+)", name) if p]
