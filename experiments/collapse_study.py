"""The collapse study: run it (or resume it) and export its small outputs for the repository.

1. ``sigma-jax collapse --preset study`` (3 seeds x {replace, accumulate, control} x T in {0.7, 1.0},
   generations 0..3, MiniLM on n_k = 2000, n_A = 1600, 20 null re-samples) into ``--out``;
2. the run's report and tables (``summary.csv``, ``seed_intervals.csv``, ``early_warning.csv``);
3. an export of the small files only -- ``config.json``, ``<arm>/metrics.jsonl`` (rows without
   ``train_monitor``, the LM's in-step hidden-state monitor, which stays in the run folder),
   ``base_s<seed>/subset_indices.json``, the three tables -- into ``--dest`` (no checkpoints, no
   samples), from which ``experiments/collapse_readme.py`` writes README's section and figure.

Usage (see experiments/configs/collapse.md for the measured runtime)::

    .venv/bin/python experiments/collapse_study.py --out runs/collapse-study --dest docs/results/collapse-study
    .venv/bin/python experiments/collapse_study.py --out runs/collapse-study --resume        # after an interruption
    .venv/bin/python experiments/collapse_study.py --out runs/collapse-study --export-only   # export a finished run
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import time


def export(run_dir: str, dest: str) -> list:
    """Copy a finished run's small outputs into ``dest`` (replacing an older export); returns the paths."""
    from sigma_jax._io import read_jsonl, write_jsonl_atomic
    from sigma_jax.collapse.report import load_results
    from sigma_jax.collapse.study import write_tables

    results = load_results(run_dir)
    if not results:
        raise SystemExit(f"no metrics.jsonl under {run_dir!r}: run the study first.")
    if os.path.isdir(dest):
        shutil.rmtree(dest)
    os.makedirs(dest)
    found = sorted(glob.glob(os.path.join(run_dir, "*", "metrics.jsonl")))
    found += sorted(glob.glob(os.path.join(run_dir, "base_s*", "subset_indices.json")))
    files = ["config.json"] + [os.path.relpath(p, run_dir) for p in found]
    out = []
    for rel in files:
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if rel.endswith("metrics.jsonl"):
            write_jsonl_atomic(target, [{k: v for k, v in r.items() if k != "train_monitor"}
                                        for r in read_jsonl(os.path.join(run_dir, rel))])
        else:
            shutil.copyfile(os.path.join(run_dir, rel), target)
        out.append(target)
    out += write_tables(load_results(dest), dest)  # from the exported rows (the test does the same)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="study")
    p.add_argument("--out", default="runs/collapse-study")
    p.add_argument("--dest", default="docs/results/collapse-study")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--export-only", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not args.export_only:
        from sigma_jax.cli import main as cli_main

        t0 = time.time()
        cmd = ["collapse", "--preset", args.preset, "--out", args.out] + (["--resume"] if args.resume else []) \
            + (["--no-progress"] if args.no_progress else [])
        rc = cli_main(cmd)
        if rc:
            return rc
        print(f"study run finished in {(time.time() - t0) / 60:.1f} min", flush=True)
    paths = export(args.out, args.dest)
    size = sum(os.path.getsize(x) for x in paths)
    print(f"exported {len(paths)} files ({size / 1024:.0f} KiB) to {args.dest}; next: "
          f".venv/bin/python experiments/collapse_readme.py --study {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
