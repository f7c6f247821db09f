"""A frozen BERT encoder as pure JAX functions over a params pytree (inference only).

The forward pass follows Hugging Face ``BertModel`` (post-LayerNorm, exact erf GELU,
absolute position embeddings, token type 0) and sentence-transformers' pooling:

.. math::

    h = \\mathrm{BERT}(x) \\in \\mathbb{R}^{B \\times L \\times H}, \\qquad
    e_b = \\frac{\\sum_t \\mathrm{mask}_{bt} h_{bt}}{\\max(\\sum_t \\mathrm{mask}_{bt}, 10^{-9})}, \\qquad
    \\hat e_b = \\frac{e_b}{\\max(\\lVert e_b \\rVert_2, 10^{-12})}.

The six (or any number of) layers are stacked along a leading axis and run with
``lax.scan`` so compilation cost does not grow with depth.  All matrix products
use ``Precision.HIGHEST`` (full float32 also on GPU/TPU, where the default may be
TF32/bfloat16), since the encoder output feeds log-determinants.

Example::

    cfg = BertConfig.from_json("model/config.json")
    params = load_params("model/model.safetensors", cfg)
    emb = embed(params, ids, mask, num_heads=cfg.num_heads, eps=cfg.eps)   # (B, H)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["BertConfig", "load_params", "hidden_states", "mean_pool_normalize", "embed", "embed_jit"]

_HI = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The architecture fields of a Hugging Face BERT ``config.json`` that the forward pass needs."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_position: int = 512
    type_vocab_size: int = 2
    eps: float = 1e-12

    @classmethod
    def from_json(cls, path: str | Path) -> "BertConfig":
        raw = json.loads(Path(path).read_text())
        if raw.get("model_type", "bert") != "bert":
            raise ValueError(f"{path} describes a {raw.get('model_type')!r} model; only BERT is supported.")
        if raw.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{path}: hidden_act={raw.get('hidden_act')!r}; only exact 'gelu' is supported.")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only absolute position embeddings are supported.")
        return cls(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=int(raw["hidden_size"]),
            num_layers=int(raw["num_hidden_layers"]),
            num_heads=int(raw["num_attention_heads"]),
            intermediate_size=int(raw["intermediate_size"]),
            max_position=int(raw["max_position_embeddings"]),
            type_vocab_size=int(raw.get("type_vocab_size", 2)),
            eps=float(raw.get("layer_norm_eps", 1e-12)),
        )


def load_params(path: str | Path, config: BertConfig) -> dict[str, Any]:
    """Read a BERT ``model.safetensors`` (numpy, torch-free) into a params pytree of jnp float32 arrays.

    Linear weights are transposed to (in, out); per-layer arrays are stacked along a
    leading axis of length ``config.num_layers``.  Accepts keys with or without a
    ``bert.`` prefix.  Raises ``KeyError`` naming a missing tensor, ``ValueError`` on a
    shape that disagrees with ``config``.

    Example:
        >>> import os, tempfile
        >>> from safetensors.numpy import save_file
        >>> cfg = BertConfig(vocab_size=10, hidden_size=4, num_layers=1, num_heads=2, intermediate_size=8,
        ...                  max_position=8)
        >>> hf = {"embeddings.word_embeddings.weight": (10, 4), "embeddings.position_embeddings.weight": (8, 4),
        ...       "embeddings.token_type_embeddings.weight": (2, 4), "embeddings.LayerNorm.weight": (4,),
        ...       "embeddings.LayerNorm.bias": (4,)}
        >>> for name, (o, i) in {"attention.self.query": (4, 4), "attention.self.key": (4, 4),
        ...                      "attention.self.value": (4, 4), "attention.output.dense": (4, 4),
        ...                      "intermediate.dense": (8, 4), "output.dense": (4, 8)}.items():
        ...     hf[f"encoder.layer.0.{name}.weight"], hf[f"encoder.layer.0.{name}.bias"] = (o, i), (o,)
        >>> for name in ("attention.output.LayerNorm", "output.LayerNorm"):
        ...     hf[f"encoder.layer.0.{name}.weight"] = hf[f"encoder.layer.0.{name}.bias"] = (4,)
        >>> tmp = tempfile.mkdtemp()
        >>> path = os.path.join(tmp, "model.safetensors")
        >>> save_file({k: np.zeros(s, np.float32) for k, s in hf.items()}, path)
        >>> params = load_params(path, cfg)
        >>> params["embeddings"]["word"].shape, params["layers"]["wi"].shape   # (layers, in, out)
        ((10, 4), (1, 4, 8))
        >>> import shutil; shutil.rmtree(tmp)
    """
    from safetensors.numpy import load_file

    raw = load_file(str(path))
    raw = {k.removeprefix("bert."): v for k, v in raw.items()}

    def get(key, shape):
        if key not in raw:
            raise KeyError(f"tensor {key!r} missing from {path}")
        arr = np.asarray(raw[key], dtype=np.float32)
        if arr.shape != shape:
            raise ValueError(f"tensor {key!r} in {path} has shape {arr.shape}; the config implies {shape}")
        return arr

    H, I, T = config.hidden_size, config.intermediate_size, config.num_layers
    emb = {
        "word": get("embeddings.word_embeddings.weight", (config.vocab_size, H)),
        "position": get("embeddings.position_embeddings.weight", (config.max_position, H)),
        "token_type": get("embeddings.token_type_embeddings.weight", (config.type_vocab_size, H)),
        "ln_scale": get("embeddings.LayerNorm.weight", (H,)),
        "ln_bias": get("embeddings.LayerNorm.bias", (H,)),
    }
    names = {  # ours: (hf suffix, shape as stored (out, in) or (n,), transpose?)
        "wq": ("attention.self.query.weight", (H, H), True),
        "bq": ("attention.self.query.bias", (H,), False),
        "wk": ("attention.self.key.weight", (H, H), True),
        "bk": ("attention.self.key.bias", (H,), False),
        "wv": ("attention.self.value.weight", (H, H), True),
        "bv": ("attention.self.value.bias", (H,), False),
        "wo": ("attention.output.dense.weight", (H, H), True),
        "bo": ("attention.output.dense.bias", (H,), False),
        "ln1_scale": ("attention.output.LayerNorm.weight", (H,), False),
        "ln1_bias": ("attention.output.LayerNorm.bias", (H,), False),
        "wi": ("intermediate.dense.weight", (I, H), True),
        "bi": ("intermediate.dense.bias", (I,), False),
        "wf": ("output.dense.weight", (H, I), True),
        "bf": ("output.dense.bias", (H,), False),
        "ln2_scale": ("output.LayerNorm.weight", (H,), False),
        "ln2_bias": ("output.LayerNorm.bias", (H,), False),
    }
    layers = {}
    for ours, (suffix, shape, transpose) in names.items():
        per = [get(f"encoder.layer.{t}.{suffix}", shape) for t in range(T)]
        layers[ours] = np.stack([p.T if transpose else p for p in per])
    params = {"embeddings": emb, "layers": layers}
    return jax.tree.map(jnp.asarray, params)


def _layer_norm(x, scale, bias, eps):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


def _dense(x, w, b):
    return jnp.einsum("bli,io->blo", x, w, precision=_HI) + b


def hidden_states(params, ids, mask, *, num_heads: int, eps: float):
    """Last-layer hidden states, shape (B, L, H), for token ids and attention mask of shape (B, L).

    ``mask`` is 1 for real tokens and 0 for padding; padded keys get a bias of the
    float32 minimum (as Hugging Face does), so real tokens never attend to padding.
    ``L`` must not exceed the number of position embeddings.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> H, I = 4, 8                                  # a 1-layer, 2-head toy BERT
        >>> shapes = {"embeddings": {"word": (10, H), "position": (8, H), "token_type": (2, H),
        ...                          "ln_scale": (H,), "ln_bias": (H,)},
        ...           "layers": {**{k: (1, H, H) for k in ("wq", "wk", "wv", "wo")}, "wi": (1, H, I), "bi": (1, I),
        ...                      "wf": (1, I, H), **{k: (1, H) for k in ("bq", "bk", "bv", "bo", "bf", "ln1_scale",
        ...                                                              "ln1_bias", "ln2_scale", "ln2_bias")}}}
        >>> params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), shapes,
        ...                       is_leaf=lambda x: isinstance(x, tuple))
        >>> ids, mask = jnp.array([[1, 5, 7, 2, 0]]), jnp.array([[1, 1, 1, 1, 0]])
        >>> hidden_states(params, ids, mask, num_heads=2, eps=1e-12).shape
        (1, 5, 4)
    """
    emb = params["embeddings"]
    L = ids.shape[1]
    x = emb["word"][ids] + emb["position"][:L][None] + emb["token_type"][0]
    x = _layer_norm(x, emb["ln_scale"], emb["ln_bias"], eps)
    B, _, H = x.shape
    dh = H // num_heads
    neg = jnp.finfo(x.dtype).min
    bias = jnp.where(mask[:, None, None, :] > 0, 0.0, neg).astype(x.dtype)  # (B, 1, 1, L)

    def layer(x, p):
        def heads(y):
            return y.reshape(B, L, num_heads, dh)

        q = heads(_dense(x, p["wq"], p["bq"]))
        k = heads(_dense(x, p["wk"], p["bk"]))
        v = heads(_dense(x, p["wv"], p["bv"]))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=_HI) / np.sqrt(dh).astype(np.float32)
        attn = jax.nn.softmax(scores + bias, axis=-1)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", attn, v, precision=_HI).reshape(B, L, H)
        x = _layer_norm(_dense(ctx, p["wo"], p["bo"]) + x, p["ln1_scale"], p["ln1_bias"], eps)
        inter = jax.nn.gelu(_dense(x, p["wi"], p["bi"]), approximate=False)
        x = _layer_norm(_dense(inter, p["wf"], p["bf"]) + x, p["ln2_scale"], p["ln2_bias"], eps)
        return x, None

    x, _ = jax.lax.scan(layer, x, params["layers"])
    return x


def mean_pool_normalize(hidden, mask):
    """Masked mean over tokens then L2 normalisation: (B, L, H), (B, L) -> (B, H).

    Matches sentence-transformers' ``Pooling(mean)`` (token count clamped at 1e-9) and
    ``Normalize`` (norm clamped at 1e-12); an all-padding row maps to the zero vector.

    Example:
        >>> hidden = jnp.array([[[3.0, 0.0], [0.0, 4.0], [9.0, 9.0]]])     # (B=1, L=3, H=2)
        >>> np.round(np.asarray(mean_pool_normalize(hidden, jnp.array([[1, 1, 0]])), np.float64), 4).tolist()
        [[0.6, 0.8]]
    """
    m = mask.astype(hidden.dtype)[..., None]
    summed = jnp.sum(hidden * m, axis=1)
    counts = jnp.maximum(jnp.sum(m, axis=1), 1e-9)
    pooled = summed / counts
    norm = jnp.sqrt(jnp.sum(jnp.square(pooled), axis=-1, keepdims=True))
    return pooled / jnp.maximum(norm, 1e-12)


def embed(params, ids, mask, *, num_heads: int, eps: float):
    """Sentence embeddings (B, H): BERT hidden states, masked mean pooling, L2 normalisation.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> H, I = 4, 8                                  # a 1-layer, 2-head toy BERT
        >>> shapes = {"embeddings": {"word": (10, H), "position": (8, H), "token_type": (2, H),
        ...                          "ln_scale": (H,), "ln_bias": (H,)},
        ...           "layers": {**{k: (1, H, H) for k in ("wq", "wk", "wv", "wo")}, "wi": (1, H, I), "bi": (1, I),
        ...                      "wf": (1, I, H), **{k: (1, H) for k in ("bq", "bk", "bv", "bo", "bf", "ln1_scale",
        ...                                                              "ln1_bias", "ln2_scale", "ln2_bias")}}}
        >>> params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), shapes,
        ...                       is_leaf=lambda x: isinstance(x, tuple))
        >>> ids, mask = jnp.array([[1, 5, 7, 2, 0]]), jnp.array([[1, 1, 1, 1, 0]])
        >>> e = embed(params, ids, mask, num_heads=2, eps=1e-12)
        >>> e.shape, round(float(jnp.linalg.norm(e[0])), 4)
        ((1, 4), 1.0)
    """
    return mean_pool_normalize(hidden_states(params, ids, mask, num_heads=num_heads, eps=eps), mask)


#: ``embed`` jitted; it compiles once per (B, L) input shape.  Params are an argument
#: (not closed over), so the weights are never baked into the compiled program.
embed_jit = jax.jit(embed, static_argnames=("num_heads", "eps"))
