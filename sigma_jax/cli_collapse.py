"""``sigma-jax collapse``: recursive training of small LMs, measured by SIGMA each generation.

    sigma-jax collapse --preset small --out runs/collapse-small
    sigma-jax collapse --preset smoke --strategy replace control mix:0.1 --temperature 0.7 1.0 --seeds 0 1
    sigma-jax collapse --preset small --out runs/collapse-small --resume
    sigma-jax collapse --preset study --out runs/collapse-study

Writes ``config.json``, one ``<arm>/metrics.jsonl`` per arm (strategy x temperature x seed),
orbax checkpoints, samples, the stored subset indices, ``collapse_curves.png``,
``tail_histograms.png``, ``report.md`` and the study tables ``summary.csv``,
``seed_intervals.csv``, ``early_warning.csv``.
"""

from __future__ import annotations

import argparse
import sys
import time

__all__ = ["add_collapse_parser", "run_collapse", "config_from_args"]

#: The presets of :mod:`sigma_jax.collapse.presets` (named here so that building the parser imports no Flax).
PRESET_NAMES = ("smoke", "small", "study", "paper")


def add_collapse_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``collapse`` sub-command on an ``argparse`` sub-parser set.

    Example:
        >>> parser = argparse.ArgumentParser(prog="sigma-jax")
        >>> _ = add_collapse_parser(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["collapse", "--preset", "smoke", "--temperature", "0.7", "1.0"])
        >>> args.command, args.preset, args.temperature, args.resume
        ('collapse', 'smoke', [0.7, 1.0], False)
    """
    p = subparsers.add_parser("collapse", help="recursive LM training (model collapse) measured by SIGMA",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=PRESET_NAMES,
                   help="smoke (tests) | small (make demo, <= 15 min on 2 cores) | study (3 seeds x replace/"
                        "accumulate/control x T 0.7/1.0, <= 90 min) | paper (GPU)")
    p.add_argument("--strategy", nargs="+", default=None,
                   help="replace | accumulate[:equal|:size] | control | mix[:fraction] | accumulate-subsample "
                        "(default: preset's)")
    p.add_argument("--temperature", nargs="+", type=float, default=None, help="sampling temperatures (arms)")
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--generations", type=int, default=None, help="number of generations including generation 0")
    p.add_argument("--init", choices=("fresh", "carry-forward", "base-reset"), default=None)
    p.add_argument("--encoder", choices=("auto", "minilm", "lm"), default=None)
    p.add_argument("--corpus", default=None, help="'kjv', 'pydoc' or a .txt file / folder")
    p.add_argument("--out", default=None, help="output folder (default runs/collapse-<preset>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_collapse)
    return p


def config_from_args(args):
    """The :class:`~sigma_jax.collapse.presets.CollapseConfig` of parsed ``collapse`` arguments:
    the preset with the options given on the command line replaced (strategies are validated).

    Example:
        >>> parser = argparse.ArgumentParser(prog="sigma-jax")
        >>> _ = add_collapse_parser(parser.add_subparsers(dest="command"))
        >>> cfg = config_from_args(parser.parse_args(["collapse", "--preset", "smoke", "--seeds", "0", "1",
        ...                                           "--strategy", "mix:0.1"]))
        >>> cfg.name, cfg.seeds, cfg.strategies, cfg.generations
        ('smoke', (0, 1), ('mix:0.1',), 3)
    """
    from sigma_jax.collapse.presets import get_preset
    from sigma_jax.collapse.strategies import Strategy

    over = {}
    if args.strategy:
        for s in args.strategy:
            Strategy.parse(s)  # validate early
        over["strategies"] = tuple(args.strategy)
    if args.temperature:
        over["temperatures"] = tuple(float(t) for t in args.temperature)
    if args.seeds:
        over["seeds"] = tuple(int(s) for s in args.seeds)
    for f in ("generations", "init", "encoder", "corpus"):
        if getattr(args, f, None) is not None:
            over[f] = getattr(args, f)
    return get_preset(args.preset, **over)


def run_collapse(args) -> int:
    """Run the experiment described by ``args``; prints the report path and a summary.

    Returns the exit code: 0, or 2 when ``--out`` already holds a run (without ``--resume``)
    or a resumed run's config differs.

    Example (a whole run takes minutes; shown here: an existing run is never overwritten):
        >>> import os, shutil, tempfile
        >>> parser = argparse.ArgumentParser(prog="sigma-jax")
        >>> _ = add_collapse_parser(parser.add_subparsers(dest="command"))
        >>> out = tempfile.mkdtemp()
        >>> _ = open(os.path.join(out, "config.json"), "w").write("{}")   # a run already lives here
        >>> run_collapse(parser.parse_args(["collapse", "--preset", "smoke", "--out", out, "--no-progress"]))
        collapse: preset smoke, ...
        2
        >>> shutil.rmtree(out)
    """
    from sigma_jax.collapse.report import write_report
    from sigma_jax.collapse.runner import run_experiment

    cfg = config_from_args(args)
    out = args.out or f"runs/collapse-{cfg.name}"
    t0 = time.time()
    progress = not args.no_progress

    def log(msg):
        try:
            from tqdm.auto import tqdm
            tqdm.write(msg)
        except ImportError:
            print(msg, flush=True)

    log(f"collapse: preset {cfg.name}, arms {list(cfg.strategies)} x T {list(cfg.temperatures)} x seeds "
        f"{list(cfg.seeds)}, {cfg.generations} generations -> {out}")
    try:
        run_experiment(cfg, out, resume=args.resume, progress=progress, log=log)
    except (FileExistsError, ValueError) as e:  # an existing run without --resume, or a config mismatch
        print(f"sigma-jax collapse: error: {e}", file=sys.stderr)
        return 2
    report, figs = write_report(out)
    log(f"done in {time.time() - t0:.0f} s; report: {report}; figures: {', '.join(figs)}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sigma-jax")
    sub = parser.add_subparsers(dest="command", required=True)
    add_collapse_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
