"""Command line: ``sigma-jax analyze``, ``embed``, ``demo`` and ``collapse`` (when installed).

Examples::

    sigma-jax analyze gen0.txt gen1.jsonl --subset 450 --html report.html    # texts: MiniLM at 256 tokens
    sigma-jax analyze gen0.txt gen1.txt --subset 450 --max-length 128         # faster MiniLM, recorded
    cat gen0.txt | sigma-jax analyze - gen1.npy --subset 450                  # stdin, mixed with embeddings
    sigma-jax analyze generations/ --subset 800 --md report.md                # a folder of generations
    sigma-jax embed gen0.txt gen1.jsonl --out embeddings/                     # keep the .npy (+ .json)
    sigma-jax analyze gen0.npy gen1.npy gen2.npy --subset 800 --csv drift.csv --plot drift.png
    sigma-jax demo --out results/demo

Texts are embedded with ``--encoder`` (default ``minilm``, the SIGMA paper's all-MiniLM-L6-v2 at
sentence-transformers' settings) and cached (``--cache-dir``; default: ``embed_cache/`` next to
the first output file, else the per-user cache ``$XDG_CACHE_HOME/sigma_jax/embeddings``).
Errors are one line, ``sigma-jax analyze: error: ...``, exit status 2; skipped lines and other
warnings are one line each, ``sigma-jax analyze: warning: ...``, on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import warnings

import jax
import numpy as np  # noqa: F401 (examples)

from sigma_jax import _io

__all__ = ["main", "build_parser", "write_json_atomic"]


write_json_atomic = _io.write_json_atomic  # former home of the atomic JSON writer (now sigma_jax._io)

# ImportError: e.g. --plot without matplotlib
_ERRORS = (ValueError, TypeError, OSError, FloatingPointError, ImportError)
_WIDTH = 26


class _Usage(ValueError):
    """A command-line mistake (reported like any other bad input)."""


@contextlib.contextmanager
def _one_line_warnings(prog: str):
    """Show every warning as one line ``prog: warning: ...`` on stderr as it happens (none dropped).

    Invalid-interval warnings are left to the tables, which show the reason in place of numbers.
    """
    from sigma_jax.report import IntervalWarning

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.simplefilter("always", RuntimeWarning)
        warnings.simplefilter("ignore", IntervalWarning)
        warnings.showwarning = show
        yield


def _fail(prog: str, err: BaseException) -> int:
    print(f"{prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
    return 2


def _check_stdin(files) -> None:
    if "-" not in files:
        return
    if sys.stdin is None:
        raise _Usage("'-' reads texts from stdin, but there is no stdin; pass a file instead.")
    if sys.stdin.isatty():
        raise _Usage("'-' reads texts from stdin, but stdin is a terminal; pipe or redirect the texts in, one per "
                     "line (e.g. `cat gen0.txt | sigma-jax analyze -` or `sigma-jax analyze - < gen0.txt`).")


def _build_encoder(args):
    """The encoder named by ``--encoder`` (default minilm) with ``--max-length`` when given."""
    from sigma_jax.analysis import DEFAULT_ENCODER
    from sigma_jax.encoders import get_encoder

    name = args.encoder or DEFAULT_ENCODER
    settings = {} if args.max_length is None else {"max_length": args.max_length}
    try:
        return get_encoder(name, **settings)
    except TypeError as err:
        raise _Usage(f"--max-length: {err}") from None
    except ImportError as err:
        raise _Usage(f"--encoder {name}: {err} (or use `--encoder hashing` for a quick, NOT semantic, smoke run)") \
            from None


def _cache_dir(args, outputs) -> str | None:
    if args.no_cache:
        if args.cache_dir:
            raise _Usage("--no-cache and --cache-dir contradict each other; pass one of them.")
        return None
    if args.cache_dir:
        return args.cache_dir
    outs = [o for o in outputs if o]
    if outs:
        return os.path.join(os.path.dirname(os.path.abspath(outs[0])), "embed_cache")
    from sigma_jax.analysis import user_cache_dir

    return str(user_cache_dir())


def _encoder_line(cfg: dict | None, cache_dir) -> str:
    if cfg is None:
        return ""
    what = cfg.get("name", "?")
    if cfg.get("kind") == "minilm":
        what += f", max_length {cfg.get('max_length')} " + ("(sentence-transformers' settings, as in the paper)"
                                                             if cfg.get("reference_settings") else
                                                             "(NOT the reference 256: long texts are truncated)")
    elif cfg.get("semantic") is False:
        what += " (NOT semantic: for smoke runs)"
    return f"encoder: {what}; embeddings cache: {cache_dir or 'off'}"


def _print_row(row: dict) -> None:
    where = row["source"] if row.get("source") not in (None, "list", "array", "stdin") else row["name"]
    extra = ""
    if row.get("kind") == "texts":
        extra = "; texts" + (f", {row['n_skipped']} skipped" if row.get("n_skipped") else "")
    print(f"== {where}  (n={row['n']}, m={row['dim']}{extra})")
    pct = f"{100 * row['level']:g}%"
    print(f"{'S = logdet(G_A + dI)':<{_WIDTH}}{row['logdet']:.6f}")
    print(f"{'U_cov (Track II)':<{_WIDTH}}{row['u_cov']:.6f} +/- {row['ci_halfwidth']:.4f} "
          f"({pct} band, paper), n_A={row['n_sub']} of {row['n_total']}")
    if row.get("valid"):
        ci = f"{row['estimate']:.6f} [{row['ci_low']:.6f}, {row['ci_high']:.6f}] ({pct} CI, calibrated)"
    else:
        ci = f"no calibrated interval: {row.get('interval_reason') or 'invalid'}"
    print(f"{'full-sample U_cov':<{_WIDTH}}{ci}")
    print(f"{'G_KF (Track I)':<{_WIDTH}}{row['g_kf']:.6f}")
    print(f"{'logdet(G_full + dI) in':<{_WIDTH}}[{row['lower']:.6f}, {row['upper']:.6f}]")
    for k in ("effective_rank", "effective_rank_centered", "effective_rank_singular", "spectral_entropy",
              "participation_ratio", "stable_rank", "condition_number", "vendi_score"):
        print(f"{k:<{_WIDTH}}{row[k]:.6g}")


def _guarded(prog: str, run):
    """A subcommand whose bad input ends in one line on stderr (exit 2) and whose warnings print on one line."""
    def main(args) -> int:
        try:
            with _one_line_warnings(prog):
                return run(args)
        except _ERRORS as err:
            return _fail(prog, err)

    return main


def _analyze_run(args) -> int:
    from sigma_jax.analysis import analyze, write_report
    from sigma_jax.texts import is_text_path

    files = list(args.files)
    _check_stdin(files)
    outputs = [args.json, args.csv, args.plot, args.html, args.md]
    has_texts = any(is_text_path(f) for f in files)
    encoder = cache_dir = None
    if has_texts:
        encoder = _build_encoder(args)
        cache_dir = _cache_dir(args, outputs)
    elif args.encoder or args.max_length is not None:
        warnings.warn("--encoder / --max-length are not used: no input holds texts.", UserWarning)
    table = analyze(files, subset=args.subset, n_total=args.n_total, delta=args.delta, rho=args.rho,
                    normalize=not args.no_normalize, ridge_only=args.ridge_only, key=jax.random.key(args.seed),
                    null_spread=args.null_spread, encoder=encoder, cache_dir=cache_dir, field=args.field,
                    column=args.column, skip_missing=args.skip_missing, batch_size=args.batch_size,
                    progress=not args.no_progress)
    table.settings.update(seed=args.seed, command=shlex.join(["sigma-jax", *args.argv]))
    line = _encoder_line(table.settings.get("encoder"), cache_dir)
    if line:
        print(line)
    for row in table.rows:
        _print_row(row)
    if len(table) > 1:
        print(f"\ndrift relative to the first file ({table.rows[0]['name']}):")
        print(table.format_drift())
    if args.json:
        first = {k: table.rows[0][k] for k in ("logdet", "u_cov", "g_kf", "lower", "upper", "ci_halfwidth",
                                                "estimate", "se", "ci_low", "ci_high", "valid")}
        _io.write_json_atomic(args.json, {"files": [f if f == "-" else os.path.abspath(f) for f in files],
                                          "settings": table.settings, "rows": table.rows, "sigma": first})
        print(f"wrote {args.json}")
    if args.csv:
        table.to_csv(args.csv)
        print(f"wrote {args.csv}")
    if args.plot:
        table.plot(args.plot)
        print(f"wrote {args.plot}")
    for page in (args.html, args.md):
        if page:
            write_report(table, page)
            print(f"wrote {page}" + (f" and {os.path.splitext(page)[0]}.png" if page == args.md else ""))
    return 0


def _embed_run(args) -> int:
    from sigma_jax.analysis import collect_inputs, embed_inputs
    from sigma_jax.texts import save_embeddings

    _check_stdin(args.files)
    sets = collect_inputs(list(args.files), field=args.field, column=args.column, skip_missing=args.skip_missing,
                          texts_only=True)
    encoder = _build_encoder(args)
    for s in sets:
        (s,) = embed_inputs([s], encoder, cache_dir=args.cache_dir, batch_size=args.batch_size,
                            progress=not args.no_progress)
        ts = s.texts
        meta = {"format": ts.format, "n_records": ts.n_records, "n_skipped_empty": ts.n_skipped_empty,
                "n_skipped_missing": ts.n_skipped_missing, "skipped_lines_first": list(ts.skipped_lines[:100])}
        if ts.format == "jsonl":
            meta["field"] = args.field
        elif ts.format in ("csv", "tsv"):
            meta["column"] = args.column
        source = s.source if s.source in ("stdin", "list") else os.path.abspath(s.source)
        path = save_embeddings(s.embeddings, args.out, s.name, encoder, source=source, meta=meta)
        print(f"wrote {path} ({s.embeddings.shape[0]} x {s.embeddings.shape[1]}) and {path.with_suffix('.json').name}")
    return 0


def _demo(args) -> int:
    from sigma_jax.demo import run_demo

    run_demo(out=args.out, seed=args.seed, n_generations=args.generations)
    return 0


def _add_text_options(p: argparse.ArgumentParser, *, cache_help: str, no_cache: bool) -> None:
    t = p.add_argument_group("texts")
    t.add_argument("--encoder", default=None,
                   help="encoder for texts: minilm (default; all-MiniLM-L6-v2 at sentence-transformers' 256 tokens), "
                        "hashing (fast, NOT semantic), or a name added with sigma_jax.encoders.register_encoder")
    t.add_argument("--max-length", type=int, default=None,
                   help="MiniLM tokens per text (default 256, the reference; 128 is faster and truncates long texts; "
                        "recorded in the output)")
    t.add_argument("--field", default="text", help="JSONL key holding the text (default: text)")
    t.add_argument("--column", default="text", help="CSV/TSV column holding the text (default: text)")
    t.add_argument("--skip-missing", action="store_true",
                   help="skip (and count) JSONL rows without --field instead of stopping")
    t.add_argument("--batch-size", type=int, default=64, help="texts per encoder pass (default 64)")
    t.add_argument("--cache-dir", default=None, help=cache_help)
    if no_cache:
        t.add_argument("--no-cache", action="store_true", help="do not cache embeddings")
    t.add_argument("--no-progress", action="store_true", help="no progress bars while embedding")


def build_parser() -> argparse.ArgumentParser:
    """The ``sigma-jax`` argument parser (sub-commands analyze, embed, demo, and collapse when installed).

    Example:
        >>> args = build_parser().parse_args(["analyze", "g0.txt", "g1.jsonl", "--subset", "450"])
        >>> args.files, args.subset, args.encoder, args.field
        (['g0.txt', 'g1.jsonl'], 450, None, 'text')
    """
    p = argparse.ArgumentParser(prog="sigma-jax", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("analyze", help="SIGMA report of texts or embeddings, with drift relative to the first",
                       description="SIGMA report of each input, and drift relative to the first. Inputs: embedding "
                                   "files (.npy/.npz; pickles refused) or texts (.txt one per line, .jsonl, .csv/.tsv, "
                                   "a folder of them, - for stdin), embedded with --encoder.")
    a.add_argument("files", nargs="+", help="embedding files or text files/folders/-; drift is relative to the first")
    a.add_argument("--subset", type=int, default=None, help="observed subset size n_A (default: all rows)")
    a.add_argument("--n-total", type=int, default=None, help="number of texts the rows were drawn from")
    a.add_argument("--delta", type=float, default=1e-3)
    a.add_argument("--rho", type=float, default=1.0)
    a.add_argument("--no-normalize", action="store_true", help="do not L2-normalise rows")
    a.add_argument("--ridge-only", action="store_true", help="allow n_A <= m")
    a.add_argument("--seed", type=int, default=0, help="seed of the subset draw (recorded)")
    a.add_argument("--null-spread", type=float, default=None,
                   help="re-sampling null of dU in nats (sigma_jax.report.empirical_null); part of the drift threshold")
    o = a.add_argument_group("outputs")
    o.add_argument("--json", default=None, help="write settings and rows as JSON to this path")
    o.add_argument("--csv", default=None, help="write the rows as CSV to this path")
    o.add_argument("--plot", default=None, help="write spectra + drift plot (PNG) to this path")
    o.add_argument("--html", default=None, help="write the one-page report (plots embedded) to this path")
    o.add_argument("--md", default=None, help="write the one-page report as Markdown (+ a PNG next to it)")
    _add_text_options(a, cache_help="embedding cache folder (default: embed_cache/ next to the first output file, "
                                    "else $XDG_CACHE_HOME/sigma_jax/embeddings)", no_cache=True)
    a.set_defaults(func=_guarded("sigma-jax analyze", _analyze_run))

    e = sub.add_parser("embed", help="embed text files and write <name>.npy + <name>.json (encoder config) per input")
    e.add_argument("files", nargs="+", help="text files (.txt, .jsonl, .csv, .tsv), folders of them, or - (stdin)")
    e.add_argument("--out", required=True, help="output folder")
    _add_text_options(e, cache_help="embedding cache folder (default: none)", no_cache=False)
    e.set_defaults(func=_guarded("sigma-jax embed", _embed_run))

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
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
