"""Coverage study: do the 95% CIs of sigma_jax.estimators (and stochastic SIGMA) cover the float64 truth?

Families of random spectra (each trial: a fresh random eigenbasis every `--keys` trials and fresh
probes): flat, power-law i^-a for a in {0.5, 1, 1.5, 2}, spiked, nearly singular (a quarter of the
eigenvalues at 1e-6..1e-5, log-det taken with the SIGMA ridge 1e-3).  For each family and
estimator: coverage of the nominal 95% CI over >= 200 trials, RMS relative error, mean relative
half-width.  The acceptance bar of the issue is coverage >= 0.90.

Every matrix is rotated (a fresh random orthogonal eigenbasis), never axis-aligned.  Besides the
SLQ estimators: adaptive SLQ (log-det, rtol 1e-2), Hutchinson and Hutch++ (trace of A and of A^2),
and ``sigma_jax.sigma(method="stochastic")``, whose interval combines the subsample band with the
probes' error and the truncation guard, checked against the float64 full-sample U_cov of a fixed
population of embeddings with a rotated power-law spectrum.

Run:  .venv/bin/python experiments/coverage_estimators.py                    # d = 256, 8 x 32 trials
      .venv/bin/python experiments/coverage_estimators.py --dim 128 --mats 4 --keys 16   # quick
Results: docs/results/coverage_estimators.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sigma_jax as sj  # noqa: E402
from sigma_jax import _io  # noqa: E402
from sigma_jax import estimators as E  # noqa: E402
from sigma_jax.estimators import slq as S  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "results",
                   "coverage_estimators.json")
RIDGE = 1e-3


def family(name, d, rng):
    i = np.arange(1, d + 1, dtype=np.float64)
    if name == "flat":
        return 1.0 + 0.5 * rng.random(d)
    if name.startswith("power"):
        return i ** -float(name[5:])
    if name == "spiked":
        lam = 0.5 + 0.1 * rng.random(d)
        lam[:5] = [100.0, 60.0, 30.0, 15.0, 10.0]
        return lam
    if name == "singular":
        lam = np.logspace(0, -3, d)
        q = d // 4
        lam[-q:] = 1e-6 * (1 + 9 * rng.random(q))
        return lam
    raise ValueError(name)


FAMILIES = ["flat", "power0.5", "power1", "power1.5", "power2", "spiked", "singular"]


def truths(lam):
    p = lam / lam.sum()
    h = float(-np.sum(p * np.log(p)))
    return {"logdet": float(np.sum(np.log(lam + RIDGE))), "entropy": h, "erank": float(np.exp(h)),
            "trace": float(lam.sum()), "trace2": float(np.sum(lam**2))}


def estimators(k, s, p):
    f64 = jnp.float64
    cfg = {
        "logdet SLQ f64": ("logdet", S.slq_estimator(S.logdet(), k, s, dtype=f64, shift=RIDGE)),
        "logdet defl f64": ("logdet", S.slq_estimator(S.logdet(), k, s, deflate=p, dtype=f64, shift=RIDGE)),
        "logdet SLQ f32": ("logdet", S.slq_estimator(S.logdet(), k, s, shift=RIDGE)),
        "entropy SLQ f64": ("entropy", S.slq_estimator(S.spectral_entropy(), k, s, dtype=f64)),
        "entropy defl f64": ("entropy", S.slq_estimator(S.spectral_entropy(), k, s, deflate=p, dtype=f64)),
        "entropy defl f32": ("entropy", S.slq_estimator(S.spectral_entropy(), k, s, deflate=p)),
        "erank defl f64": ("erank", S.slq_estimator(S.effective_rank(), k, s, deflate=p, dtype=f64)),
        "logdet adaptive f64": ("logdet", E.adaptive_slq(S.logdet(), 8, s, rtol=1e-2, max_probes=8 * k, dtype=f64,
                                                         shift=RIDGE)),
        "trace Hutchinson f64": ("trace", E.hutchinson(k, dtype=f64)),
        "trace Hutch++ f64": ("trace", E.hutchpp(3 * k, dtype=f64)),
        "tr A^2 Hutch++ f64": ("trace2", E.hutchpp(3 * k, power=2, dtype=f64)),
    }
    return {name: (q, jax.jit(jax.vmap(est, in_axes=(0, None)))) for name, (q, est) in cfg.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--mats", type=int, default=8, help="random eigenbases per family")
    ap.add_argument("--keys", type=int, default=32, help="probe seeds per matrix")
    ap.add_argument("--probes", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--deflate", type=int, default=16)
    ap.add_argument("--sigma-trials", type=int, default=200)
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    out = {"dim": args.dim, "probes": args.probes, "steps": args.steps, "deflate": args.deflate,
           "trials_per_cell": args.mats * args.keys}
    table = {}
    t0 = time.time()
    ests = estimators(args.probes, args.steps, args.deflate)
    rng = np.random.default_rng(2026)
    trials = args.mats * args.keys
    print(f"d = {args.dim}, {args.probes} probes x {args.steps} Lanczos steps, deflate = {args.deflate}, "
          f"{trials} trials per cell ({args.mats} matrices x {args.keys} probe seeds); cell = coverage / "
          f"RMS rel err / mean rel half-width")
    names = list(ests)
    print("| family | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    worst = 1.0
    for fam in FAMILIES:
        hits = {n: [] for n in names}
        errs = {n: [] for n in names}
        hws = {n: [] for n in names}
        for mi in range(args.mats):
            lam = family(fam, args.dim, rng)
            q, _ = np.linalg.qr(rng.normal(size=(args.dim, args.dim)))
            tru = truths(lam)
            keys = jax.random.split(jax.random.key(mi + 1000 * FAMILIES.index(fam)), args.keys)
            with jax.enable_x64(True):
                a64 = jnp.asarray((q * lam) @ q.T, jnp.float64)
                for n, (qty, est) in ests.items():
                    a = a64 if "f64" in n else a64.astype(jnp.float32)
                    e = est(keys, a)
                    t = tru[qty]
                    hits[n].extend(np.asarray(e.covers(t)).tolist())
                    errs[n].extend(((np.asarray(e.value) - t) / abs(t)).tolist())
                    hws[n].extend((np.asarray(e.halfwidth) / abs(t)).tolist())
        cells = []
        for n in names:
            cov = float(np.mean(hits[n]))
            worst = min(worst, cov)
            rms = float(np.sqrt(np.mean(np.square(errs[n]))))
            table.setdefault(fam, {})[n] = {"coverage": cov, "rms_rel_error": rms, "mean_rel_halfwidth":
                                            float(np.mean(hws[n]))}
            cells.append(f"{cov:.3f} / {rms:.1e} / {np.mean(hws[n]):.1e}")
        print(f"| {fam} | " + " | ".join(cells) + " |", flush=True)
    out["estimators"] = table
    out["stochastic_sigma"] = stochastic_sigma_coverage(args.sigma_trials)
    out["worst_coverage"] = min(worst, out["stochastic_sigma"]["coverage"])
    _io.write_json_atomic(args.out, out, indent=1)
    print(f"\nworst coverage {out['worst_coverage']:.3f} (bar: 0.90); {time.time() - t0:.0f} s; wrote {args.out}")


def stochastic_sigma_coverage(trials: int, m: int = 128, n_sub: int = 1024, n_total: int = 2048, seed: int = 5):
    """sigma(method="stochastic"): its interval vs the float64 full-sample U_cov (rotated power-law rows)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(m, m)))
    x = (rng.normal(size=(n_total, m)) * np.sqrt(np.arange(1, m + 1) ** -1.0)) @ q.T
    pop = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    v = pop.astype(np.float64)
    truth = float(np.linalg.slogdet(v.T @ v + RIDGE * np.eye(m))[1] - m * np.log(n_total))
    opts = dict(num_probes=16, num_steps=24, deflate=8, band_rows=64)
    inside, valid, widths, exact_widths = [], [], [], []
    for i in range(trials):
        k = jax.random.key(10_000 + i)
        rep = sj.sigma(pop, subset=n_sub, key=k, method="stochastic", estimator_options=opts, validate=False)
        ex = sj.sigma(pop, subset=n_sub, key=k, validate=False)
        valid.append(bool(rep.valid))
        if rep.valid:
            inside.append(float(rep.ci_low) <= truth <= float(rep.ci_high))
            widths.append(float(rep.ci_high - rep.ci_low))
            exact_widths.append(float(ex.ci_high - ex.ci_low))
    res = {"m": m, "n_sub": n_sub, "n_total": n_total, "options": opts, "trials": trials,
           "valid_fraction": float(np.mean(valid)), "coverage": float(np.mean(inside)) if inside else float("nan"),
           "mean_width": float(np.mean(widths)), "mean_width_exact_path": float(np.mean(exact_widths))}
    print(f"sigma(method='stochastic'), m={m}, n_A={n_sub} of {n_total}, {trials} subsets: valid "
          f"{res['valid_fraction']:.2f}, coverage {res['coverage']:.3f}, width {res['mean_width']:.2f} "
          f"(exact path {res['mean_width_exact_path']:.2f})", flush=True)
    return res


if __name__ == "__main__":
    main()
