"""Benchmark: sigma_jax.estimators vs matfree and traceax vs the dense path, side by side.

Same operators (a GramOperator G = A^T A of n x m embeddings with a power-law spectrum in a
randomised-Hadamard basis, tr G = m) and the same probe keys for every method.

Tables (per m in --dims):
  1. spectral entropy H (effective rank = exp H, so its relative error = |dH|): RMS error over
     trials, matvecs, wall time per call, time per matvec; sigma_jax plain SLQ, deflated SLQ,
     matfree plain SLQ (same Lanczos depth, Rademacher probes, exact tr G for both).
  2. log-det(G + 1e-3 I): sigma_jax plain / deflated vs matfree.
  3. tr G: sigma_jax Hutch++ / Hutchinson vs traceax Hutch++ / Hutchinson.
  4. dense path: forming G (float32) + eigvalsh, wall time.
With --crossover: exact sigma_jax.sigma vs sigma_stochastic wall time over m (the number
`method="auto"` uses).

Run:  .venv/bin/python experiments/bench_estimators.py              # m = 1024, 4096, 8192
      .venv/bin/python experiments/bench_estimators.py --dims 1024 --trials 4
      .venv/bin/python experiments/bench_estimators.py --crossover --dims 512 1024 2048 4096
      .venv/bin/python experiments/bench_estimators.py --grad
      .venv/bin/python experiments/bench_estimators.py --logdet-depth --dims 4096
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from sigma_jax import gram
from sigma_jax import estimators as E
from sigma_jax.estimators import slq as S

try:
    import matfree
    from matfree import decomp, funm, stochtrace
except ImportError:  # benchmark-only dependency
    matfree = None
try:
    import lineax
    import traceax
except ImportError:
    traceax = None


# --------------------------------------------------------------------------- problem


def fwht(x):
    """Orthonormal fast Walsh-Hadamard transform along the last axis (length a power of two)."""
    n = x.shape[-1]
    h = 1
    y = x.copy()
    while h < n:
        y = y.reshape(*y.shape[:-1], n // (2 * h), 2, h)
        a, b = y[..., 0, :].copy(), y[..., 1, :].copy()
        y[..., 0, :], y[..., 1, :] = a + b, a - b
        y = y.reshape(*x.shape)
        h *= 2
    return y / np.sqrt(n)


def make_embeddings(rng, n, m, alpha):
    """A (n, m) with E[A^T A] proportional to R diag(i^-alpha) R^T, R = H D1 H D2 (random signs)."""
    a = rng.standard_normal((n, m), dtype=np.float32) * (np.arange(1, m + 1, dtype=np.float32) ** (-alpha / 2))
    for _ in range(2):
        a = fwht(a * rng.choice(np.float32([-1, 1]), size=m))
    a = a.astype(np.float32)
    scale = np.sqrt(m / np.sum(a.astype(np.float64) ** 2))
    return (a * scale).astype(np.float32)


def timed(fn, *args, reps=1):
    out = fn(*args)
    jax.block_until_ready(out)
    t = time.perf_counter()
    for _ in range(reps):
        out = fn(*args)
        jax.block_until_ready(out)
    return out, (time.perf_counter() - t) / reps


# --------------------------------------------------------------------------- methods


def xlogx(x):
    return jnp.where(x > 0, x * jnp.log(jnp.where(x > 0, x, 1.0)), 0.0)


def matfree_trfun(f, k, s, m):
    """matfree's plain SLQ for tr f(G): Rademacher probes, tridiag_sym(s) with full reorthogonalisation."""
    integrand = funm.monte_carlo_funm_sym(funm.dense_funm_sym_eigh(f), decomp.tridiag_sym(s))
    sampler = stochtrace.sampler_signs(jnp.zeros((m,), jnp.float32), num=k)
    est = stochtrace.estimator_monte_carlo(integrand, sampler)
    return jax.jit(lambda key, op: est(lambda v, o: o.matvec(v), key, op))


def run_dim(m, trials, alpha, budgets, defl, steps, seed=0):
    rng = np.random.default_rng(seed + m)
    n = m + m // 2
    emb = make_embeddings(rng, n, m, alpha)
    op = gram.gram_operator(jnp.asarray(emb), normalize=False)
    ridge = 1e-3
    # dense path (what method="exact" would do): G in float32 + eigvalsh
    t0 = time.perf_counter()
    g32 = np.asarray(jax.block_until_ready(jnp.asarray(emb).T @ jnp.asarray(emb)))
    lam32 = np.linalg.eigvalsh(g32)
    t_dense = time.perf_counter() - t0
    if m <= 4096:
        g64 = emb.astype(np.float64).T @ emb.astype(np.float64)
        lam = np.linalg.eigvalsh(g64)
        truth_src = "float64 eigvalsh"
    else:
        lam = lam32.astype(np.float64)
        truth_src = "float32 eigvalsh"
    lam = np.clip(lam, 0.0, None)
    tr = float(np.sum(emb.astype(np.float64) ** 2))
    p = lam / lam.sum()
    h_true = float(-np.sum(p[p > 0] * np.log(p[p > 0])))
    ld_true = float(np.sum(np.log(lam + ridge)))
    keys = jax.random.split(jax.random.key(seed), trials)
    rows = []

    def record(table, method, k, mv, vals, truth, secs, extra=""):
        vals = np.asarray(vals, np.float64)
        rms = float(np.sqrt(np.mean((vals - truth) ** 2)))
        rows.append(dict(m=m, table=table, method=method, probes=k, matvecs=int(mv), rms=rms,
                         rel=rms / abs(truth), sec=secs, us_per_mv=1e6 * secs / mv, extra=extra))

    # ---- entropy (and logdet from the same sigma_jax runs)
    for k in budgets:
        quad = jax.jit(S.slq_quadrature(k, steps))
        hs, lds, ts = [], [], []
        for key in keys:
            q, t = timed(quad, key, op)
            hs.append(float(S.quadrature_estimate(q, S.spectral_entropy()).value))
            lds.append(float(S.quadrature_estimate(q, S.logdet(), shift=ridge).value))
            ts.append(t)
        record("entropy", "sigma_jax SLQ", k, k * steps, hs, h_true, min(ts))
        record("logdet", "sigma_jax SLQ", k, k * steps, lds, ld_true, min(ts))
        kd = max(k // 2 - (defl + 8) * 4 // steps, 2)   # about half the plain budget, deflation included
        dquad = jax.jit(S.slq_quadrature(kd, steps, deflate=defl, power_iters=2))
        hs, lds, ts, mv = [], [], [], 0
        for key in keys:
            q, t = timed(dquad, key, op)
            hs.append(float(S.quadrature_estimate(q, S.spectral_entropy()).value))
            lds.append(float(S.quadrature_estimate(q, S.logdet(), shift=ridge).value))
            ts.append(t)
            mv = int(q.num_matvecs)
        record("entropy", f"sigma_jax deflated SLQ (p={defl})", kd, mv, hs, h_true, min(ts))
        record("logdet", f"sigma_jax deflated SLQ (p={defl})", kd, mv, lds, ld_true, min(ts))
        if matfree is not None:
            mf = matfree_trfun(xlogx, k, steps, m)
            mf_ld = matfree_trfun(lambda x: jnp.log(x + ridge), k, steps, m)
            hs, lds, ts = [], [], []
            for key in keys:
                u, t = timed(mf, key, op)
                hs.append(np.log(tr) - float(u) / tr)
                ts.append(t)
                lds.append(float(mf_ld(key, op)))
            record("entropy", "matfree SLQ", k, k * steps, hs, h_true, min(ts))
            record("logdet", "matfree SLQ", k, k * steps, lds, ld_true, min(ts))

    # ---- tr G: Hutch++ / Hutchinson
    for b in (48, 96):
        for name, est in (("sigma_jax Hutch++", jax.jit(E.hutchpp(b))),
                          ("sigma_jax Hutchinson", jax.jit(E.hutchinson(b)))):
            vals, ts = [], []
            for key in keys:
                e, t = timed(est, key, op)
                vals.append(float(e.value))
                ts.append(t)
            record("trace", name, b, b, vals, tr, min(ts))
        if traceax is not None:
            lop = lineax.FunctionLinearOperator(op.matvec, jax.ShapeDtypeStruct((m,), jnp.float32),
                                                tags=lineax.symmetric_tag)
            for name, cls in (("traceax Hutch++", traceax.HutchPlusPlusEstimator),
                              ("traceax Hutchinson", traceax.HutchinsonEstimator)):
                f = jax.jit(lambda key, c=cls: c(traceax.RademacherSampler(jnp.float32))(key, lop, b)[0])
                vals, ts = [], []
                for key in keys:
                    v, t = timed(f, key)
                    vals.append(float(v))
                    ts.append(t)
                record("trace", name, b, 3 * (b // 3) if "++" in name else b, vals, tr, min(ts))
    rows.append(dict(m=m, table="dense", method="dense G + eigvalsh (float32)", probes=0, matvecs=0, rms=0.0,
                     rel=0.0, sec=t_dense, us_per_mv=0.0, extra=truth_src))
    return rows, dict(m=m, n=n, h_true=h_true, erank_true=float(np.exp(h_true)), logdet_true=ld_true, trace=tr,
                      truth=truth_src)


def print_tables(rows, info):
    print(f"\n## m = {info['m']}  (n = {info['n']}, spectrum i^-alpha in a random Hadamard basis; truth by "
          f"{info['truth']}: H = {info['h_true']:.5f}, erank = {info['erank_true']:.2f}, "
          f"logdet(G+1e-3 I) = {info['logdet_true']:.3f}, tr G = {info['trace']:.3f})")
    for table in ("entropy", "logdet", "trace", "dense"):
        sel = [r for r in rows if r["table"] == table]
        if not sel:
            continue
        unit = {"entropy": "abs err of H (= rel err of erank)", "logdet": "rel err", "trace": "rel err",
                "dense": ""}[table]
        print(f"\n### {table}  [{unit}]")
        print("| method | probes | matvecs | RMS error | wall s/call (min) | us/matvec |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in sel:
            err = r["rms"] if table == "entropy" else r["rel"]
            print(f"| {r['method']} | {r['probes']} | {r['matvecs']} | {err:.2e} | {r['sec']:.3f} | "
                  f"{r['us_per_mv']:.1f} |")


# --------------------------------------------------------------------------- crossover


def crossover(dims, trials=2):
    from sigma_jax import core

    print("\n## exact vs stochastic SIGMA (n = 2m rows, all rows observed and n_A = n/2 with the band)")
    print("| m | n_A/n | exact s | stochastic f64 s | stochastic f32 s | |dS|/stderr | stochastic matvecs |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for m in dims:
        rng = np.random.default_rng(m)
        emb = make_embeddings(rng, 2 * m, m, 1.0)
        for subset in (None, m + m // 2):
            key = jax.random.key(0)
            ex, t_ex = timed(lambda: core.sigma(emb, subset=subset, key=key), reps=trials)
            st, t64 = timed(lambda: E.sigma_stochastic(key, emb, subset=subset), reps=trials)
            _, t32 = timed(lambda: E.sigma_stochastic(key, emb, subset=subset, dtype=jnp.float32), reps=trials)
            z = abs(float(st.logdet) - float(ex.logdet)) / float(st.stderr)
            frac = "1" if subset is None else f"{subset}/{2 * m}"
            print(f"| {m} | {frac} | {t_ex:.2f} | {t64:.2f} | {t32:.2f} | {z:.2f} | {int(st.num_matvecs)} |",
                  flush=True)


def logdet_depth(m, steps_list=(20, 40, 80), k=16, defl=32, trials=3, seed=0):
    """log-det(G + 1e-3 I) error vs Lanczos depth (the bias of shallow Lanczos for log at condition ~1e5)."""
    rng = np.random.default_rng(seed + m)
    n = m + m // 2
    emb = make_embeddings(rng, n, m, 1.0)
    op = gram.gram_operator(jnp.asarray(emb), normalize=False)
    lam = np.clip(np.linalg.eigvalsh(emb.astype(np.float64).T @ emb.astype(np.float64)), 0, None)
    ld = float(np.sum(np.log(lam + 1e-3)))
    keys = jax.random.split(jax.random.key(seed), trials)
    print(f"\n## log-det(G + 1e-3 I) vs Lanczos depth, m = {m} (n = {n}, truth {ld:.3f}, cond {lam.max() / 1e-3:.1e})")
    print("| method | probes | steps | matvecs | RMS rel err | mean reported rel stderr | s/call (min) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for s in steps_list:
        for name, d, kk in (("sigma_jax SLQ", 0, k), (f"sigma_jax deflated SLQ (p={defl})", defl, k)):
            est = jax.jit(S.slq_estimator(S.logdet(), kk, s, deflate=d, power_iters=2, shift=1e-3))
            vals, ses, ts, mv = [], [], [], 0
            for key in keys:
                e, t = timed(est, key, op)
                vals.append(float(e.value)), ses.append(float(e.stderr)), ts.append(t)
                mv = int(e.num_matvecs)
            rms = np.sqrt(np.mean((np.array(vals) - ld) ** 2)) / abs(ld)
            print(f"| {name} | {kk} | {s} | {mv} | {rms:.2e} | {np.mean(ses) / abs(ld):.2e} | {min(ts):.2f} |",
                  flush=True)
        if matfree is not None:
            mf = matfree_trfun(lambda x: jnp.log(x + 1e-3), k, s, m)
            vals, ts = [], []
            for key in keys:
                v, t = timed(mf, key, op)
                vals.append(float(v)), ts.append(t)
            rms = np.sqrt(np.mean((np.array(vals) - ld) ** 2)) / abs(ld)
            print(f"| matfree SLQ | {k} | {s} | {k * s} | {rms:.2e} | - | {min(ts):.2f} |", flush=True)


def grad_cosines(m=256, n=1024, probes=(16, 64, 256), steps=30, seeds=3):
    """Cosine between jax.grad of the stochastic estimators and the exact float64 gradient."""
    rng = np.random.default_rng(7)
    emb = jnp.asarray(make_embeddings(rng, n, m, 1.0))
    a = np.asarray(emb, np.float64)
    g = a.T @ a
    w, u = np.linalg.eigh(g)
    ridge = 1e-3
    exact = {
        "logdet(G + 1e-3 I)": 2 * a @ ((u / (w + ridge)) @ u.T),
        "entropy(G)": 2 * a @ (-(u * np.log(w)) @ u.T / w.sum() + (w * np.log(w)).sum() / w.sum() ** 2 * np.eye(m)),
    }
    print(f"\n## gradient cosine, stochastic vs exact (m = {m}, n = {n}, {steps} Lanczos steps, float32 path; "
          f"mean over {seeds} seeds)")
    print("| quantity | estimator | probes | cosine | norm ratio |")
    print("|---|---|---:|---:|---:|")
    for qname, qty, ridge_op in (("logdet(G + 1e-3 I)", S.logdet(), ridge), ("entropy(G)", S.spectral_entropy(), 0.0)):
        for defl in (0, 32):
            for k in probes:
                est = S.slq_estimator(qty, k, steps, deflate=defl, power_iters=2, differentiable=True)
                f = jax.jit(jax.grad(lambda x, key: est(key, gram.gram_operator(x, delta=ridge_op,
                                                                               normalize=False)).value))
                cs, rs = [], []
                for sd in range(seeds):
                    gr = np.asarray(f(emb, jax.random.key(sd)), np.float64)
                    ex = exact[qname]
                    cs.append((gr * ex).sum() / np.linalg.norm(gr) / np.linalg.norm(ex))
                    rs.append(np.linalg.norm(gr) / np.linalg.norm(ex))
                name = "SLQ" if defl == 0 else f"deflated SLQ (p={defl})"
                print(f"| {qname} | {name} | {k} | {np.mean(cs):.3f} | {np.mean(rs):.3f} |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", type=int, nargs="+", default=[1024, 4096, 8192])
    ap.add_argument("--trials", type=int, default=None, help="trials per method (default 6 / 3 / 2 by m)")
    ap.add_argument("--alpha", type=float, default=1.0, help="power-law exponent of the spectrum")
    ap.add_argument("--steps", type=int, default=20, help="Lanczos depth for every SLQ method")
    ap.add_argument("--deflate", type=int, default=32)
    ap.add_argument("--budgets", type=int, nargs="+", default=None, help="plain-SLQ probe counts")
    ap.add_argument("--crossover", action="store_true")
    ap.add_argument("--grad", action="store_true", help="gradient cosine table only")
    ap.add_argument("--logdet-depth", action="store_true", help="log-det error vs Lanczos depth only")
    ap.add_argument("--json", type=str, default=None, help="also write all rows to this JSON file")
    args = ap.parse_args()
    print(f"jax {jax.__version__}, devices {jax.devices()}, matfree "
          f"{getattr(matfree, '__version__', 'installed') if matfree else 'NOT INSTALLED'}, traceax "
          f"{getattr(traceax, '__version__', '?') if traceax else 'NOT INSTALLED'}")
    if args.crossover:
        crossover(args.dims)
        return
    if args.grad:
        grad_cosines()
        return
    if args.logdet_depth:
        for m in args.dims:
            logdet_depth(m)
        return
    out = []
    for m in args.dims:
        trials = args.trials or (6 if m <= 1024 else 3 if m <= 4096 else 2)
        budgets = args.budgets or ([16, 32, 64, 128] if m <= 1024 else [32, 64] if m <= 4096 else [32])
        t = time.perf_counter()
        rows, info = run_dim(m, trials, args.alpha, budgets, args.deflate, args.steps)
        print_tables(rows, info)
        print(f"\n(m = {m}: {trials} trials, {time.perf_counter() - t:.0f} s)", flush=True)
        out.extend(rows)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
