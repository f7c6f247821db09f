"""Command line: ``sigma-jax analyze FILE``, ``sigma-jax demo``, ``sigma-jax collapse`` (when installed).

Examples::

    sigma-jax analyze embeddings.npy --subset 800 --json report.json
    sigma-jax demo --out results/demo
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import jax
import numpy as np

__all__ = ["main", "write_json_atomic"]


def write_json_atomic(path: str, obj) -> None:
    """Write JSON to ``path`` atomically (temporary file in the same folder, then ``os.replace``)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _analyze(args) -> int:
    from sigma_jax import gram, spectral
    from sigma_jax.core import sigma

    try:
        emb = gram.load_embeddings(args.file, key=args.key)
        rep = sigma(emb, subset=args.subset, n_total=args.n_total, delta=args.delta, rho=args.rho,
                    normalize=not args.no_normalize, key=jax.random.key(args.seed), ridge_only=args.ridge_only)
    except (ValueError, TypeError, FileNotFoundError, FloatingPointError) as err:
        print(f"sigma-jax analyze: error: {err}", file=sys.stderr)
        return 2
    rows = emb if args.subset is None else None
    metrics = {}
    if rows is not None and emb.shape[0] * emb.shape[1] <= 50_000_000:
        lam = spectral.eigenvalues(np.asarray(emb), normalize=not args.no_normalize)
        metrics = {
            "effective_rank": float(spectral.effective_rank(lam)),
            "effective_rank_singular": float(spectral.effective_rank(lam, convention="singular")),
            "spectral_entropy": float(spectral.spectral_entropy(lam)),
            "participation_ratio": float(spectral.participation_ratio(lam)),
            "stable_rank": float(spectral.stable_rank(lam)),
            "condition_number": float(spectral.condition_number(lam, delta=args.delta)),
        }
    print(f"SIGMA report for {args.file}  (n={emb.shape[0]}, m={emb.shape[1]}, dtype={emb.dtype})")
    print(rep.summary())
    for k, v in metrics.items():
        print(f"{k:<26}{v:.6g}")
    if args.json:
        write_json_atomic(args.json, {"file": os.path.abspath(args.file), "sigma": rep.to_dict(), "spectral": metrics})
        print(f"wrote {args.json}")
    return 0


def _demo(args) -> int:
    from sigma_jax.demo import run_demo

    run_demo(out=args.out, seed=args.seed, n_generations=args.generations)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sigma-jax", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("analyze", help="SIGMA report of an embeddings file (.npy / .npz; pickles refused)")
    a.add_argument("file")
    a.add_argument("--subset", type=int, default=None, help="observed subset size n_A (default: all rows)")
    a.add_argument("--n-total", type=int, default=None, help="number of texts the rows were drawn from")
    a.add_argument("--delta", type=float, default=1e-3)
    a.add_argument("--rho", type=float, default=1.0)
    a.add_argument("--no-normalize", action="store_true", help="do not L2-normalise rows")
    a.add_argument("--ridge-only", action="store_true", help="allow n_A <= m")
    a.add_argument("--seed", type=int, default=0, help="seed of the subset draw")
    a.add_argument("--key", default=None, help="array name inside an .npz")
    a.add_argument("--json", default=None, help="write the report as JSON to this path")
    a.set_defaults(func=_analyze)

    d = sub.add_parser("demo", help="SIGMA on built-in healthy vs collapsing synthetic embeddings")
    d.add_argument("--out", default="results/demo")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--generations", type=int, default=5)
    d.set_defaults(func=_demo)

    try:
        from sigma_jax.cli_collapse import add_collapse_parser
    except ImportError:
        pass
    else:
        add_collapse_parser(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
