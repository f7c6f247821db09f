"""A small decoder-only transformer in ``flax.nnx`` with a functional KV cache.

Architecture (pre-LayerNorm GPT):  ``x_0 = E[t] + P[pos]``;  for each block
``x <- x + W_o Attn(LN(x))``, ``x <- x + MLP(LN(x))`` with a GELU MLP of width
``mlp_ratio * d_model``; logits ``= LN(x) W_out``.  Attention is causal:
query at absolute position ``p`` attends to keys at positions ``<= p``.

The same forward pass serves training (``cache=None``) and incremental decoding:
with a cache (a tuple over layers of ``(k, v)``, each ``(B, H, T, Dh)``) the chunk of ``L``
tokens starting at absolute position ``pos`` writes its keys/values at
``[pos, pos + L)`` and attends to every cached position ``<= pos + i``.

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> cfg = ModelConfig(vocab_size=98, n_layers=1, d_model=32, n_heads=2, block_size=16)
    >>> model = Transformer(cfg, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 5), jnp.int32)).shape
    (2, 5, 98)
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["ModelConfig", "Transformer", "init_cache"]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape of the transformer (hashable, so it can be a static jit argument)."""

    vocab_size: int = 98
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    block_size: int = 64
    mlp_ratio: int = 4

    def __post_init__(self):
        for f in ("vocab_size", "n_layers", "d_model", "n_heads", "block_size", "mlp_ratio"):
            v = getattr(self, f)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"`{f}` must be a positive int, got {v!r}.")
        if self.d_model % self.n_heads:
            raise ValueError(f"`d_model` ({self.d_model}) must be divisible by `n_heads` ({self.n_heads}).")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def init_cache(cfg: ModelConfig, batch: int, length: int | None = None, dtype=jnp.float32) -> dict:
    """Empty KV cache: a tuple over layers of ``(k, v)``, each ``(batch, n_heads, length, head_dim)``.

    Example:
        >>> cache = init_cache(ModelConfig(n_layers=2, d_model=32, n_heads=2, block_size=16), batch=3)
        >>> len(cache), cache[0][0].shape
        (2, (3, 2, 16, 16))
    """
    t = cfg.block_size if length is None else int(length)
    shape = (batch, cfg.n_heads, t, cfg.head_dim)
    return tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(cfg.n_layers))


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d = cfg.d_model
        self.cfg = cfg
        self.ln1 = nnx.LayerNorm(d, rngs=rngs)
        self.qkv = nnx.Linear(d, 3 * d, use_bias=False, rngs=rngs)
        self.proj = nnx.Linear(d, d, rngs=rngs,
                               kernel_init=nnx.initializers.normal(0.02 / math.sqrt(2 * cfg.n_layers)))
        self.ln2 = nnx.LayerNorm(d, rngs=rngs)
        self.fc1 = nnx.Linear(d, cfg.mlp_ratio * d, rngs=rngs)
        self.fc2 = nnx.Linear(cfg.mlp_ratio * d, d, rngs=rngs,
                              kernel_init=nnx.initializers.normal(0.02 / math.sqrt(2 * cfg.n_layers)))

    def __call__(self, x, k_cache=None, v_cache=None, pos=0):
        """x: (B, L, d).  Without cache: causal self-attention over the chunk.
        With cache (B, H, T, Dh): write at [pos, pos+L) and attend to positions <= pos+i."""
        cfg = self.cfg
        b, l, _ = x.shape
        q, k, v = jnp.split(self.qkv(self.ln1(x)), 3, axis=-1)
        q = q.reshape(b, l, cfg.n_heads, cfg.head_dim).transpose(0, 2, 1, 3)  # (B, H, L, Dh)
        k = k.reshape(b, l, cfg.n_heads, cfg.head_dim).transpose(0, 2, 1, 3)
        v = v.reshape(b, l, cfg.n_heads, cfg.head_dim).transpose(0, 2, 1, 3)
        qpos = pos + jnp.arange(l)
        if k_cache is not None:
            k_cache = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, 0, pos, 0))
            v_cache = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, 0, pos, 0))
            keys, vals = k_cache, v_cache
            kpos = jnp.arange(k_cache.shape[2])
        else:
            keys, vals, kpos = k, v, qpos
        s = jnp.einsum("bhld,bhtd->bhlt", q, keys) / math.sqrt(cfg.head_dim)
        mask = kpos[None, :] <= qpos[:, None]
        s = jnp.where(mask[None, None], s, -1e30)
        p = jax.nn.softmax(s.astype(jnp.float32), axis=-1).astype(x.dtype)
        o = jnp.einsum("bhlt,bhtd->bhld", p, vals).transpose(0, 2, 1, 3).reshape(b, l, cfg.d_model)
        x = x + self.proj(o)
        x = x + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x))))
        return x, k_cache, v_cache


class Transformer(nnx.Module):
    """Decoder-only character LM.  ``model(tokens)`` -> logits (B, L, vocab);
    ``model(tokens, cache=cache, pos=p)`` -> (logits, new_cache);
    ``model.hidden(tokens)`` -> final-LayerNorm hidden states (B, L, d_model)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        init = nnx.initializers.normal(0.02)
        self.tok = nnx.Embed(cfg.vocab_size, cfg.d_model, embedding_init=init, rngs=rngs)
        self.pos = nnx.Embed(cfg.block_size, cfg.d_model, embedding_init=init, rngs=rngs)
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.n_layers)])
        self.ln_f = nnx.LayerNorm(cfg.d_model, rngs=rngs)
        self.head = nnx.Linear(cfg.d_model, cfg.vocab_size, use_bias=False, kernel_init=init, rngs=rngs)

    def _trunk(self, tokens, cache=None, pos=0):
        l = tokens.shape[1]
        x = self.tok(tokens) + self.pos(pos + jnp.arange(l))[None]
        new_cache = []
        for i, blk in enumerate(self.blocks):
            if cache is None:
                x, _, _ = blk(x, pos=pos)
            else:
                x, kc, vc = blk(x, cache[i][0], cache[i][1], pos)
                new_cache.append((kc, vc))
        return self.ln_f(x), (None if cache is None else tuple(new_cache))

    def hidden(self, tokens):
        return self._trunk(tokens)[0]

    def __call__(self, tokens, cache=None, pos=0):
        h, new_cache = self._trunk(tokens, cache, pos)
        logits = self.head(h)
        return logits if cache is None else (logits, new_cache)
