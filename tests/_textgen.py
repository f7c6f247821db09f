"""Fresh random texts and the standard writers for them (shared by the analysis / CLI text tests)."""

from __future__ import annotations

import csv
import json

import numpy as np

from sigma_jax.encoders import HashingEncoder


def vocabulary(rng, size: int = 400) -> list[str]:
    """Random pseudo-words (3-8 letters)."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(rng.choice(letters, size=int(rng.integers(3, 9)))) for _ in range(size)]


def random_texts(rng, n: int, vocab: list[str], *, words=(3, 9)) -> list[str]:
    """n texts of ``words`` random words each (distinct with overwhelming probability)."""
    return [" ".join(rng.choice(vocab, size=int(rng.integers(*words)))) for _ in range(n)]


def write_txt(path, texts, *, blank_after: int | None = None) -> str:
    """One text per line; ``blank_after=k`` inserts an empty and a blank line after text k."""
    lines = list(texts)
    if blank_after is not None:
        lines[blank_after:blank_after] = ["", "   "]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def write_jsonl(path, texts, field: str = "text") -> str:
    path.write_text("".join(json.dumps({field: t, "id": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    return str(path)


def write_csv(path, texts, column: str = "text") -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", column])
        w.writerows([i, t] for i, t in enumerate(texts))
    return str(path)


class CountingEncoder(HashingEncoder):
    """The hashing encoder, counting ``encode`` calls (to prove that something was -- or was not -- embedded)."""

    def __init__(self, dim: int = 16, **kw):
        super().__init__(dim=dim, **kw)
        self.calls = 0

    def encode(self, texts, batch_size=64, progress=False):
        self.calls += 1
        return super().encode(texts, batch_size=batch_size, progress=progress)
