"""Command line: ``sigma-jax analyze FILE``, ``sigma-jax demo``, ``sigma-jax collapse`` (when installed).

Examples::

    sigma-jax analyze embeddings.npy --subset 800 --json report.json
    sigma-jax analyze gen0.npy gen1.npy gen2.npy --subset 800 --csv drift.csv --plot drift.png
    sigma-jax demo --out results/demo
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np  # noqa: F401 (examples)

from sigma_jax import _io

__all__ = ["main", "write_json_atomic"]


write_json_atomic = _io.write_json_atomic  # former home of the atomic JSON writer (now sigma_jax._io)


def _analyze(args) -> int:
    from sigma_jax.analysis import analyze

    try:
        table = analyze(list(args.files), subset=args.subset, n_total=args.n_total, delta=args.delta, rho=args.rho,
                        normalize=not args.no_normalize, ridge_only=args.ridge_only, key=jax.random.key(args.seed))
    except (ValueError, TypeError, FileNotFoundError, FloatingPointError) as err:
        print(f"sigma-jax analyze: error: {err}", file=sys.stderr)
        return 2
    for row, path in zip(table.rows, args.files):
        print(f"== {path}  (n={row['n']}, m={row['dim']})")
        width = 26
        print(f"{'S = logdet(G_A + dI)':<{width}}{row['logdet']:.6f}")
        print(f"{'U_cov (Track II)':<{width}}{row['u_cov']:.6f} +/- {row['ci_halfwidth']:.4f} "
              f"({100 * row['level']:.0f}% band), n_A={row['n_sub']} of {row['n_total']}")
        print(f"{'G_KF (Track I)':<{width}}{row['g_kf']:.6f}")
        print(f"{'logdet(G_full + dI) in':<{width}}[{row['lower']:.6f}, {row['upper']:.6f}]")
        for k in ("effective_rank", "effective_rank_centered", "effective_rank_singular", "spectral_entropy",
                  "participation_ratio", "stable_rank", "condition_number", "vendi_score"):
            print(f"{k:<{width}}{row[k]:.6g}")
    if len(table) > 1:
        print("\ndrift relative to the first file:")
        print(table.format())
    if args.json:
        write_json_atomic(args.json, {"files": [os.path.abspath(f) for f in args.files], "rows": table.rows,
                                      "sigma": {k: table.rows[0][k] for k in ("logdet", "u_cov", "g_kf", "lower",
                                                                               "upper", "ci_halfwidth")}})
        print(f"wrote {args.json}")
    if args.csv:
        table.to_csv(args.csv)
        print(f"wrote {args.csv}")
    if args.plot:
        table.plot(args.plot)
        print(f"wrote {args.plot}")
    return 0


def _demo(args) -> int:
    from sigma_jax.demo import run_demo

    run_demo(out=args.out, seed=args.seed, n_generations=args.generations)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sigma-jax", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("analyze", help="SIGMA report of embedding files (.npy / .npz; pickles refused)")
    a.add_argument("files", nargs="+", help="one or more files; drift is relative to the first")
    a.add_argument("--subset", type=int, default=None, help="observed subset size n_A (default: all rows)")
    a.add_argument("--n-total", type=int, default=None, help="number of texts the rows were drawn from")
    a.add_argument("--delta", type=float, default=1e-3)
    a.add_argument("--rho", type=float, default=1.0)
    a.add_argument("--no-normalize", action="store_true", help="do not L2-normalise rows")
    a.add_argument("--ridge-only", action="store_true", help="allow n_A <= m")
    a.add_argument("--seed", type=int, default=0, help="seed of the subset draw")
    a.add_argument("--json", default=None, help="write the rows as JSON to this path")
    a.add_argument("--csv", default=None, help="write the rows as CSV to this path")
    a.add_argument("--plot", default=None, help="write spectra + drift plot (PNG) to this path")
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
    """Run the ``sigma-jax`` command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "e.npy")
        >>> np.save(path, np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32))
        >>> main(["analyze", path])   # doctest: +ELLIPSIS
        == ...e.npy  (n=200, m=4)
        ...
        0
    """
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
