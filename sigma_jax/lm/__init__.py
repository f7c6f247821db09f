"""Small character-level language models in flax.nnx: data, model, training, KV-cache sampling."""

from sigma_jax.lm.data import CharTokenizer, Corpus, join_lines, lines_of, load_corpus, split_documents
from sigma_jax.lm.model import ModelConfig, Transformer, init_cache
from sigma_jax.lm.sample import decode, filter_logits, generate, generate_stream, sample_token
from sigma_jax.lm.train import (TrainConfig, WindowSampler, continuation_nll, eval_bpc, eval_windows,
                                loss_fn, make_optimizer, train)

__all__ = ["CharTokenizer", "Corpus", "join_lines", "lines_of", "load_corpus", "split_documents",
           "ModelConfig", "Transformer", "init_cache",
           "decode", "filter_logits", "generate", "generate_stream", "sample_token",
           "TrainConfig", "WindowSampler", "continuation_nll", "eval_bpc", "eval_windows",
           "loss_fn", "make_optimizer", "train"]
