"""Embedding texts with an encoder, with an on-disk cache keyed by the texts and the encoder's settings.

See :mod:`sigma_jax.texts` for an overview.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from sigma_jax import _io
from sigma_jax.encoders import Encoder, encoder_config, get_encoder
from sigma_jax.encoders._common import check_batch_size, check_texts
from sigma_jax.texts.reading import TextSet

__all__ = ["CACHE_FORMAT_VERSION", "embed_texts", "embedding_cache_key", "save_embeddings"]

#: Part of every cache key; bump it when the cache layout or the key's recipe changes.
CACHE_FORMAT_VERSION = 1
# encoder_config() entries that say where an encoder lives, not what it computes (the weights'
# hash pins that): left out of cache keys so moving a virtual environment keeps the cache valid.
_LOCATION_KEYS = ("model_dir",)
_SHOW = 5  # rows quoted in a message


def embedding_cache_key(texts: list[str], encoder: Encoder) -> str:
    """SHA-256 (hex) of the exact texts in order, the encoder's config and :data:`CACHE_FORMAT_VERSION`.

    The config is ``encoder.encoder_config()`` without location entries (``model_dir``);
    texts are hashed length-prefixed, so ``["ab", "c"]`` and ``["a", "bc"]`` differ.

    Example:
        >>> from sigma_jax.encoders import HashingEncoder
        >>> k = embedding_cache_key(["a", "b"], HashingEncoder(dim=8))
        >>> len(k), k == embedding_cache_key(["a", "b"], HashingEncoder(dim=16))
        (64, False)
    """
    cfg = _cache_config(encoder)
    h = hashlib.sha256()
    h.update(f"sigma_jax.texts.embed_texts cache v{CACHE_FORMAT_VERSION}\n".encode())
    h.update(json.dumps({k: v for k, v in cfg.items() if k not in _LOCATION_KEYS}, sort_keys=True,
                        separators=(",", ":")).encode())
    h.update(f"\n{len(texts)}\n".encode())
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def embed_texts(texts: list[str] | TextSet, encoder: Encoder | str, *, cache_dir: str | os.PathLike | None = None,
                batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """Embed ``texts`` -> float32 (n, dim), rows in input order, reusing ``cache_dir`` when possible.

    Args:
        texts: list of str (or a :class:`TextSet`); embedded exactly as given.
        encoder: an encoder object, or a registered name (``"minilm"``, ``"hashing"``) built
            with its default settings.
        cache_dir: folder of cached embeddings (created if needed), or ``None`` for no cache.
            The cache holds ``<key>.npy`` and ``<key>.json`` (encoder config, n, dim, created
            time), both written atomically, with ``key`` from :func:`embedding_cache_key`:
            the same texts in the same order with the same encoder settings load without
            re-embedding; any changed text or setting gives a new key.  ``batch_size`` is not
            part of the key (it moves MiniLM's numbers by float32 round-off only, ~2e-7).
            Caching needs the encoder's own ``encoder_config()`` (every setting that changes
            the numbers).  A damaged cache entry is reported and recomputed.
        batch_size: texts per forward pass.
        progress: progress bar while embedding (tqdm when installed; silently off otherwise).

    Example:
        >>> import tempfile
        >>> from sigma_jax.encoders import HashingEncoder
        >>> cache = tempfile.mkdtemp()
        >>> E = embed_texts(["a text", "another"], HashingEncoder(dim=16), cache_dir=cache, progress=False)
        >>> E.shape, E.dtype, len(os.listdir(cache))          # <key>.npy and <key>.json
        ((2, 16), dtype('float32'), 2)
        >>> bool((embed_texts(["a text", "another"], HashingEncoder(dim=16), cache_dir=cache) == E).all())
        True
    """
    if isinstance(texts, TextSet):
        texts = texts.texts
    texts = check_texts(texts)
    batch_size = check_batch_size(batch_size)
    encoder = get_encoder(encoder)
    npy = meta = None
    if cache_dir is not None:
        key = embedding_cache_key(texts, encoder)
        npy, meta = Path(cache_dir) / f"{key}.npy", Path(cache_dir) / f"{key}.json"
        cached = _load_cached(npy, meta, len(texts), int(encoder.dim))
        if cached is not None:
            return cached
    emb = encoder.encode(texts, batch_size=batch_size, progress=progress)
    emb = _check_output(emb, encoder, len(texts))
    if npy is not None:
        _io.save_npy_atomic(npy, emb)
        _io.write_json_atomic(meta, {"format_version": CACHE_FORMAT_VERSION, "key": npy.stem,
                                     "encoder": encoder_config(encoder), "n": emb.shape[0], "dim": emb.shape[1],
                                     "dtype": "float32", "created": _now()})
    return emb


def save_embeddings(emb: np.ndarray, out_dir: str | os.PathLike, name: str, encoder: Encoder | dict, *,
                    source: str | None = None, meta: dict | None = None) -> Path:
    """Write ``<out_dir>/<name>.npy`` (float32) and ``<name>.json``; returns the ``.npy`` path.

    The JSON holds ``name``, ``n``, ``dim``, ``dtype``, ``encoder`` (its config; pass the
    encoder object or its config dict), ``source`` (e.g. the text file), ``created`` and any
    extra ``meta`` entries (e.g. skipped-line counts).  Both files are written atomically.

    Example:
        >>> import json, tempfile
        >>> from sigma_jax.encoders import HashingEncoder
        >>> enc, out = HashingEncoder(dim=8), tempfile.mkdtemp()
        >>> p = save_embeddings(enc.encode(["a", "b"]), out, "gen0", enc, source="gen0.txt")
        >>> np.load(p).shape, json.load(open(p.with_suffix(".json")))["source"]
        ((2, 8), 'gen0.txt')
    """
    if not isinstance(name, str) or not name or name.startswith(".") or any(s in name for s in "/\\\0"):
        raise ValueError(f"`name` must be a plain file name without folders or a leading dot, got {name!r}.")
    arr = np.asarray(emb)
    if arr.ndim != 2 or arr.shape[0] == 0 or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"`emb` must be a non-empty (n, dim) numeric array, got shape {arr.shape} "
                         f"dtype {arr.dtype}.")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"`emb` holds {int((~np.isfinite(arr)).sum())} non-finite values; refusing to save them.")
    cfg = dict(encoder) if isinstance(encoder, dict) else encoder_config(encoder)
    if cfg.get("dim") is not None and int(cfg["dim"]) != arr.shape[1]:
        raise ValueError(f"`emb` has {arr.shape[1]} columns but the encoder's dim is {cfg['dim']}; pass the encoder "
                         "that made these embeddings.")
    record = {"name": name, "n": arr.shape[0], "dim": arr.shape[1], "dtype": "float32", "encoder": cfg,
              "source": source, "created": _now(), **(meta or {})}
    try:
        json.dumps(record)
    except TypeError as err:
        raise TypeError(f"the embeddings' JSON record is not JSON-able ({err}); pass plain values in `meta`.") from None
    out = Path(out_dir)
    npy = out / f"{name}.npy"
    _io.save_npy_atomic(npy, arr)
    _io.write_json_atomic(out / f"{name}.json", record)
    return npy


def _cache_config(encoder: Encoder) -> dict:
    if not callable(getattr(encoder, "encoder_config", None)):
        raise TypeError(f"caching embeddings needs `{type(encoder).__name__}.encoder_config()` returning every "
                        "setting that changes the numbers; add it, or pass `cache_dir=None`.")
    cfg = encoder_config(encoder)
    try:
        json.dumps(cfg, sort_keys=True)
    except TypeError as err:
        raise TypeError(f"{type(encoder).__name__}.encoder_config() must return a JSON-able dict ({err}).") from None
    return cfg


def _load_cached(npy: Path, meta: Path, n: int, dim: int) -> np.ndarray | None:
    if not (npy.exists() and meta.exists()):
        return None
    try:
        arr = np.load(npy, allow_pickle=False)
        ok = arr.shape == (n, dim) and arr.dtype == np.float32 and bool(np.isfinite(arr).all())
        problem = f"shape {arr.shape} dtype {arr.dtype}, expected ({n}, {dim}) float32 and finite"
    except (OSError, ValueError, EOFError) as err:
        ok, problem = False, str(err)
    if not ok:
        warnings.warn(f"embedding cache entry {npy} is damaged ({problem}); re-embedding and overwriting it.",
                      RuntimeWarning, stacklevel=3)
        return None
    return arr


def _check_output(emb: Any, encoder: Encoder, n: int) -> np.ndarray:
    arr = np.asarray(emb)
    if arr.shape != (n, int(encoder.dim)):
        raise ValueError(f"{type(encoder).__name__}.encode returned shape {arr.shape} for {n} texts; expected "
                         f"({n}, {encoder.dim}) (one row per text, `dim` columns).")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise ValueError(f"{type(encoder).__name__}.encode returned non-finite values in rows "
                         f"{rows[:_SHOW].tolist()}{' ...' if rows.size > _SHOW else ''}; check the encoder.")
    return arr


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
