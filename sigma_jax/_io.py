"""The ground floor: atomic writes, JSON/JSONL reading, embedding files, progress bars, batch padding.

Everything in the package may import this module; it imports nothing of ours except the
equally low :mod:`sigma_jax._checks`.  Long runs never lose finished work: every writer
here writes a temporary file in the destination folder, flushes it to disk and renames
it over the target (``os.replace`` is atomic on POSIX), so a reader sees the old file or
the new one, never half of one.

Example:
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> write_json_atomic(os.path.join(d, "a.json"), {"x": 1})
    >>> append_jsonl(os.path.join(d, "m.jsonl"), {"generation": 0})
    >>> read_jsonl(os.path.join(d, "m.jsonl"))
    [{'generation': 0}]
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from typing import Any, Iterable

import numpy as np

from sigma_jax import _checks

__all__ = [
    "write_bytes_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "write_jsonl_atomic",
    "append_jsonl",
    "read_jsonl",
    "save_npy_atomic",
    "save_figure_atomic",
    "load_embeddings",
    "progress_bar",
    "pad_rows",
]


# --------------------------------------------------------------------------- atomic writes


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, ``os.replace``).

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "sub", "b.bin")
        >>> write_bytes_atomic(p, b"abc"); open(p, "rb").read()
        b'abc'
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path)[-16:])
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp creates 0600; give the file the mode open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "t.txt")
        >>> write_text_atomic(p, "héllo"); open(p, encoding="utf-8").read()
        'héllo'
    """
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, sort_keys: bool = True) -> None:
    """Write ``obj`` as JSON (plus a final newline) to ``path`` atomically.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "r.json")
        >>> write_json_atomic(p, {"b": 2, "a": 1}, indent=None); open(p).read()
        '{"a": 1, "b": 2}\\n'
    """
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Write ``rows`` as JSON lines (one object a line, keys sorted) to ``path`` atomically.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "m.jsonl")
        >>> write_jsonl_atomic(p, [{"g": 0}, {"g": 1}]); open(p).read()
        '{"g": 0}\\n{"g": 1}\\n'
    """
    write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The objects of a JSON-lines file, in order (``[]`` when the file does not exist).

    Example:
        >>> import tempfile, os
        >>> read_jsonl(os.path.join(tempfile.mkdtemp(), "missing.jsonl"))
        []
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{i} is not valid JSON ({err.msg}); the file is damaged. Remove that "
                                 "line (and the ones after it) to resume from the last complete row.") from None
    return out


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one object to a JSON-lines file by rewriting it atomically (finished rows are never lost).

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "m.jsonl")
        >>> append_jsonl(p, {"g": 0}); append_jsonl(p, {"g": 1}); [r["g"] for r in read_jsonl(p)]
        [0, 1]
    """
    write_jsonl_atomic(path, read_jsonl(path) + [row])


def save_npy_atomic(path: str | os.PathLike, array) -> None:
    """``np.save`` to ``path`` atomically (no pickles).

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "e.npy")
        >>> save_npy_atomic(p, np.ones((2, 3), np.float32)); np.load(p).shape
        (2, 3)
    """
    import io

    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    write_bytes_atomic(path, buf.getvalue())


def save_figure_atomic(fig, path: str | os.PathLike, **savefig_kwargs) -> None:
    """Save a matplotlib figure to ``path`` atomically (format from the extension).

    Example:
        >>> import tempfile, os, matplotlib
        >>> matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> p = os.path.join(tempfile.mkdtemp(), "f.png")
        >>> fig = plt.figure(); save_figure_atomic(fig, p); plt.close(fig); os.path.getsize(p) > 0
        True
    """
    import io

    path = os.fspath(path)
    buf = io.BytesIO()
    fmt = os.path.splitext(path)[1].lstrip(".") or "png"
    fig.savefig(buf, format=fmt, **savefig_kwargs)
    write_bytes_atomic(path, buf.getvalue())


# --------------------------------------------------------------------------- embedding files


def load_embeddings(path: str | os.PathLike, *, mmap: bool = True, array_name: str | None = None,
                    key: str | None = None) -> np.ndarray:
    """Open a ``.npy`` (memory-mapped) or ``.npz`` file of embeddings, refusing pickles.

    Args:
        path: file path.
        mmap: memory-map ``.npy`` files (rows are then read chunk by chunk).
        array_name: array name inside an ``.npz`` (default: ``embeddings`` if present, else the only array).
        key: deprecated spelling of ``array_name`` (``key`` means a PRNG key everywhere else).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "e.npy"); np.save(path, np.ones((4, 2), np.float32))
        >>> load_embeddings(path).shape
        (4, 2)
    """
    if key is not None:
        warnings.warn("load_embeddings(key=...) is deprecated: `key` means a PRNG key in sigma_jax; use "
                      "`array_name=`.", DeprecationWarning, stacklevel=2)
        array_name = key if array_name is None else array_name
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"embeddings file {path!r} does not exist.")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        raise ValueError(f"cannot read embeddings from {path!r}: it is neither a .npy nor a .npz file "
                         "(save arrays with `np.save` / `np.savez`; text files go through `sigma_jax.texts`).")
    try:
        if path.endswith(".npz") or magic.startswith(b"PK"):
            with np.load(path, allow_pickle=False) as z:
                names = list(z.files)
                if array_name is None:
                    if "embeddings" in names:
                        array_name = "embeddings"
                    elif len(names) == 1:
                        array_name = names[0]
                    else:
                        raise ValueError(f"{path!r} holds several arrays {names}; choose one with `array_name=`.")
                if array_name not in names:
                    raise ValueError(f"{path!r} has no array {array_name!r}; it holds {names}.")
                arr = z[array_name]
        else:
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as err:
        if any(w in str(err).lower() for w in ("pickle", "python objects")):
            raise ValueError(
                f"{path!r} holds a pickled (object) array, which sigma_jax refuses to load for safety. "
                "Save plain float arrays with `np.save(path, emb.astype(np.float32))`."
            ) from err
        raise
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read embeddings from {path!r}: {err}. Expected a .npy or .npz file.") from err
    return _checks.check_float_array(arr, f"array in {os.path.basename(path)}")


# --------------------------------------------------------------------------- progress and padding


def progress_bar(enabled: bool, total: int | None = None, desc: str = "", unit: str = "it", **kwargs):
    """A tqdm bar when ``enabled`` and tqdm is installed, else ``None`` (progress is optional).

    Callers use ``if bar is not None: bar.update(k)``.

    Example:
        >>> progress_bar(False, 10) is None
        True
    """
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit=unit, **kwargs)


def pad_rows(block, rows: int):
    """Pad a (c, m) host block with zero rows to (rows, m); returns ``(padded, mask)`` (mask (rows,) float32 0/1).

    One compiled update then serves every block, the last (short) one included.

    Example:
        >>> x, mask = pad_rows(np.ones((2, 3), np.float32), 4)
        >>> x.shape, mask.tolist()
        ((4, 3), [1.0, 1.0, 0.0, 0.0])
    """
    block = np.asarray(block)
    c = block.shape[0]
    if c > rows:
        raise ValueError(f"block has {c} rows, more than the padded size {rows}.")
    mask = np.zeros((rows,), np.float32)
    mask[:c] = 1.0
    if c < rows:
        block = np.concatenate([block, np.zeros((rows - c,) + block.shape[1:], block.dtype)])
    return block, mask
