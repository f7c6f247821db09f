"""Coverage of SIGMA's calibrated interval for the full-sample U_cov, measured by simulation.

    python experiments/coverage_sigma.py                       # the whole grid (~1 h on 2 CPU cores)
    python experiments/coverage_sigma.py --m 8 32 --trials 200  # a quick look
    python experiments/coverage_sigma.py --readme-table        # print README's table from the JSON

For each cell of the grid -- spectrum family x m x n_A/m x n_total/n_A -- a fixed population of
n_total unit-norm rows is drawn once; its full-sample ``U_cov = logdet(G_full + delta I) - m log n_total``
is computed independently in NumPy float64 (``slogdet``).  Then ``--trials`` random subsets of n_A
rows go through ``sigma_jax.sigma`` (the library's own report, jit + vmap over subset keys), and we
count how often ``[ci_low, ci_high]`` contains the truth among the draws the report calls valid, how
often it calls them valid, and the paper's first-order band (``u_cov +- ci_halfwidth``) beside it.

A cell *covers* when the coverage of its valid draws lies within 2.7 binomial standard deviations of
95% (92.1-97.9% with 400 valid draws; wider when the report flags part of the draws; two-sided: too
narrow and too wide both fail), and is *flagged* when the report declares >= 90% of its draws invalid.
With ~160 cells about one lands outside by chance; a failing cell is re-run once on a fresh population
with 2000 fresh subsets and passes ("covers (recheck)") only within 3 sd of 95% there.  Families (all rows L2-normalised, random basis):

* ``isotropic``  Gaussian rows in m dims;
* ``power``      Gaussian with covariance eigenvalues i^-1 in a random orthogonal basis;
* ``clusters``   5 Gaussian clusters (centres N(0, I), within-cluster sd 0.5);
* ``collapsed``  (beyond the issue's grid) rows near a rank-m/8 subspace plus a shared direction and
  1e-3 noise: eigenvalues near the ridge, where the report should flag rather than mislead.

Results go to ``docs/results/coverage_sigma.json`` after every cell (atomic; an interrupted run resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# one BLAS thread: XLA:CPU runs the batched solves on its own threads, and a multithreaded OpenBLAS
# called from several of them at once has deadlocked (futex wait) at m = 128
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402

import sigma_jax as sj  # noqa: E402
from sigma_jax import _io  # noqa: E402

DEFAULT_OUT = os.path.join(os.path.dirname(HERE), "docs", "results", "coverage_sigma.json")
FAMILIES = ("isotropic", "power", "clusters", "collapsed")
RATIOS = (1.2, 2.0, 4.0, 10.0, 50.0)
NRATIOS = (1.5, 4.0)
MS = (8, 32, 128, 384)
RECHECK_TRIALS = 2000
DELTA = 1e-3


def population(family: str, n: int, m: int, rng) -> np.ndarray:
    """n unit-norm rows (float32) of a spectrum family, in a random basis."""
    q, _ = np.linalg.qr(rng.normal(size=(m, m)))
    if family == "isotropic":
        x = rng.normal(size=(n, m))
    elif family == "power":
        x = (rng.normal(size=(n, m)) * np.sqrt(np.arange(1, m + 1) ** -1.0)) @ q.T
    elif family == "clusters":
        centres = rng.normal(size=(5, m))
        x = centres[rng.integers(0, 5, n)] + 0.5 * rng.normal(size=(n, m))
    elif family == "collapsed":
        r = max(2, m // 8)
        basis = q[:, :r]
        x = rng.normal(size=(n, r)) @ basis.T + 3.0 * basis[:, 0] + 1e-3 * rng.normal(size=(n, m))
    else:
        raise ValueError(f"unknown family {family!r}")
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def truth(pop: np.ndarray, delta: float = DELTA) -> float:
    """Full-sample U_cov in NumPy float64 (independent of sigma_jax)."""
    v = pop.astype(np.float64)
    n, m = v.shape
    return float(np.linalg.slogdet(v.T @ v + delta * np.eye(m))[1] - m * np.log(n))


FIRST_PASS_SD, RECHECK_SD = 2.7, 3.0


def cell_verdict(valid_fraction: float, coverage: float, trials: int, n_sd: float) -> str:
    """``flagged`` (<= 10% valid draws), ``covers`` (coverage of the valid draws within ``n_sd`` binomial sd
    of 95%: 92.1-97.9% for 400 valid draws) or ``FAIL`` (two-sided: too narrow and too wide both fail)."""
    if valid_fraction <= 0.10:
        return "flagged"
    k = valid_fraction * trials
    return "covers" if abs(coverage - 0.95) <= n_sd * np.sqrt(0.95 * 0.05 / k) else "FAIL"


def run_cell(family, m, ratio, nratio, trials, seed):
    n_a = int(round(ratio * m))
    n_total = int(round(nratio * n_a))
    rng = np.random.default_rng([seed, FAMILIES.index(family), m, int(ratio * 10), int(nratio * 10)])
    pop = population(family, n_total, m, rng)
    u_full = truth(pop)
    # vmap in batches of 8 under lax.map: XLA:CPU's compile time grows with the batch of the batched
    # triangular solves (minutes at 400 x m = 128), and 8 keeps each batch's rows small
    fn = jax.jit(lambda ks: jax.lax.map(lambda k: sj.sigma(pop, subset=n_a, key=k, validate=False), ks,
                                        batch_size=8))
    batch = trials
    keys = jax.random.split(jax.random.key(seed), trials)
    cols = {k: [] for k in ("valid", "low", "high", "u_cov", "hw", "reason")}
    t0 = time.time()
    for start in range(0, trials, batch):
        rep = fn(keys[start:start + batch])
        for k, f in (("valid", "valid"), ("low", "ci_low"), ("high", "ci_high"), ("u_cov", "u_cov"),
                     ("hw", "ci_halfwidth"), ("reason", "invalid_reason")):
            cols[k].append(np.asarray(getattr(rep, f)))
    c = {k: np.concatenate(v) for k, v in cols.items()}
    valid = c["valid"].astype(bool)
    inside = (c["low"] <= u_full) & (u_full <= c["high"])
    paper = np.abs(c["u_cov"] - u_full) <= c["hw"]
    cov = float(inside[valid].mean()) if valid.any() else float("nan")
    valid_frac = float(valid.mean())
    verdict = cell_verdict(valid_frac, cov, trials, FIRST_PASS_SD)
    reasons = sorted({int(r) for r in c["reason"][~valid]})
    return {"family": family, "m": m, "ratio": ratio, "nratio": nratio, "n_sub": n_a, "n_total": n_total,
            "trials": trials, "truth": u_full, "valid_fraction": valid_frac, "coverage": cov,
            "mean_width": float(np.mean(c["high"][valid] - c["low"][valid])) if valid.any() else float("nan"),
            "paper_band_coverage": float(paper.mean()), "invalid_reasons": reasons, "verdict": verdict,
            "seconds": time.time() - t0}


def readme_table(results: list[dict]) -> str:
    """README's table: per family and n_A/m, coverage range over m and n_total/n_A, validity, width."""
    lines = ["| family | n_A/m | cells | valid draws | coverage of valid draws (min–max) | paper's band coverage "
             "(min–max) | verdicts |", "|---|---|---|---|---|---|---|"]
    for fam in FAMILIES:
        for ratio in RATIOS:
            cells = [r for r in results if r["family"] == fam and r["ratio"] == ratio]
            if not cells:
                continue
            covs = [r["coverage"] for r in cells if r["valid_fraction"] > 0.1]
            vf = [r["valid_fraction"] for r in cells]
            pb = [r["paper_band_coverage"] for r in cells]
            verdicts = {v: sum(r["verdict"] == v for r in cells) for v in ("covers", "covers (recheck)", "flagged",
                                                                            "FAIL")}
            cov_txt = f"{100 * min(covs):.1f}–{100 * max(covs):.1f}%" if covs else "—"
            lines.append(f"| {fam} | {ratio:g} | {len(cells)} | {100 * min(vf):.0f}–{100 * max(vf):.0f}% | {cov_txt} | "
                         f"{100 * min(pb):.1f}–{100 * max(pb):.1f}% | "
                         + ", ".join(f"{k} {v}" for k, v in verdicts.items() if v) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--m", nargs="+", type=int, default=list(MS))
    p.add_argument("--ratios", nargs="+", type=float, default=list(RATIOS))
    p.add_argument("--nratios", nargs="+", type=float, default=list(NRATIOS))
    p.add_argument("--trials", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--readme-table", action="store_true", help="print README's table from --out and exit")
    args = p.parse_args(argv)
    done = json.load(open(args.out))["cells"] if os.path.exists(args.out) else []
    if args.readme_table:
        print(readme_table(done))
        return 0
    key = lambda r: (r["family"], r["m"], r["ratio"], r["nratio"], r["trials"])  # noqa: E731
    have = {key(r) for r in done}
    for fam in args.families:
        for m in args.m:
            for ratio in args.ratios:
                for nratio in args.nratios:
                    if (fam, m, ratio, nratio, args.trials) in have:
                        continue
                    r = run_cell(fam, m, ratio, nratio, args.trials, args.seed)
                    done.append(r)
                    _io.write_json_atomic(args.out, {"experiment": "coverage_sigma", "delta": DELTA,
                                                     "jax": jax.__version__, "cells": done}, indent=1)
                    print(f"{fam:10s} m={m:4d} n_A/m={ratio:5g} N/n_A={nratio:3g}: valid {r['valid_fraction']:.2f} "
                          f"coverage {r['coverage']:.3f} (paper band {r['paper_band_coverage']:.3f}) -> {r['verdict']}"
                          f"  [{r['seconds']:.0f}s]", flush=True)
    # A grid of ~160 cells at 400 trials puts ~1 cell outside 92-98% by chance alone (+-2.7 sd each).
    # A failing cell is therefore re-run once with RECHECK_TRIALS fresh subsets (another seed): it
    # passes only if that coverage lies within +-3 of its own sd (0.5%) of the nominal 95%.
    for r in done:
        if r["verdict"] == "FAIL" and "recheck" not in r:
            rc = run_cell(r["family"], r["m"], r["ratio"], r["nratio"], RECHECK_TRIALS, args.seed + 1)
            r["recheck"] = {k: rc[k] for k in ("trials", "coverage", "valid_fraction", "mean_width", "seconds")}
            ok = cell_verdict(rc["valid_fraction"], rc["coverage"], RECHECK_TRIALS, RECHECK_SD) != "FAIL"
            r["verdict"] = "covers (recheck)" if ok else "FAIL"
            _io.write_json_atomic(args.out, {"experiment": "coverage_sigma", "delta": DELTA,
                                             "jax": jax.__version__, "cells": done}, indent=1)
            print(f"recheck {r['family']} m={r['m']} n_A/m={r['ratio']:g} N/n_A={r['nratio']:g}: coverage "
                  f"{rc['coverage']:.4f} of {rc['valid_fraction']:.2f} valid over {RECHECK_TRIALS} -> {r['verdict']}",
                  flush=True)
    bad = [r for r in done if r["verdict"] == "FAIL"]
    print(f"{len(done)} cells, {len(bad)} failing")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
