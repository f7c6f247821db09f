"""Benchmark: sigma_jax's exact SIGMA path vs a float64 NumPy implementation vs one A^T A product.

    python experiments/bench_sigma.py                 # n in {1e4, 1e5, 1e6}, m = 384
    python experiments/bench_sigma.py --n 10000 100000 --repeats 5

All timings are taken side by side in one run (best of --repeats after a warm-up
call that compiles); ratios are what to read on a noisy machine.  Two settings:
``full`` (n_A = n: the band is identically 0) and ``half`` (n_A = n/2 of
n_total = n: the Theorem-3 band needs the Mahalanobis pass); ``/mx`` rows use
``precision="mixed"`` (float32 products per chunk, float64 sums), whose accuracy
is also measured on collapsed embeddings.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import sigma_jax as sj


def numpy_sigma(a32: np.ndarray, idx, n_total: int, delta: float = 1e-3, rho: float = 1.0):
    """The straightforward float64 NumPy implementation of the same report."""
    a = a32.astype(np.float64)
    v = a / np.linalg.norm(a, axis=1, keepdims=True)
    if idx is not None:
        v = v[idx]
    n_a, m = v.shape
    g = v.T @ v
    eye = np.eye(m)
    beta = (n_total - n_a) * rho
    s = np.linalg.slogdet(g + delta * eye)[1]
    up = np.linalg.slogdet(g + (beta + delta) * eye)[1]
    hw = 0.0
    if n_a < n_total:
        c = (g + delta * eye) / n_a
        q = np.sum(v * np.linalg.solve(c, v.T).T, axis=1)
        hw = 1.959963984540054 * q.std(ddof=1) * np.sqrt(1 / n_a - 1 / n_total)
    return dict(logdet=s, u_cov=s - m * np.log(n_a), g_kf=up - m * np.log(beta + delta), ci_halfwidth=hw)


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up / compile
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--m", type=int, default=384)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    m = args.m
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, m = {m}, best of {args.repeats}")
    header = (f"{'n':>9} {'setting':>7} | {'sigma_jax s':>11} {'numpy s':>9} {'f64 AtA s':>9} {'f32 AtA s':>9} | "
              f"{'numpy/sj':>8} {'sj/f64AtA':>9} {'sj/f32AtA':>9} | {'rel.err u_cov':>13}")
    print(header)
    print("-" * len(header))
    collapsed_rows = []
    for n in args.n:
        scales = np.arange(1, m + 1, dtype=np.float32) ** -0.5
        a32 = (rng.standard_normal((n, m), dtype=np.float32) * scales).astype(np.float32)
        a_dev = jnp.asarray(a32)
        a64 = a32.astype(np.float64)
        t_p64 = best_time(lambda: a64.T @ a64, args.repeats)
        t_p32 = best_time(lambda: a32.T @ a32, args.repeats)
        for setting in ("full", "half"):
            idx = None if setting == "full" else np.sort(rng.choice(n, n // 2, replace=False))
            sub = None if idx is None else jnp.asarray(idx)
            t_np = best_time(lambda: numpy_sigma(a32, idx, n), max(1, args.repeats - 1))
            ref = numpy_sigma(a32, idx, n)
            for precision in ("float64", "mixed"):
                run_sj = lambda: jax.block_until_ready(  # noqa: E731
                    sj.sigma(a_dev, subset=sub, validate=False, precision=precision))
                t_sj = best_time(run_sj, args.repeats)
                err = abs(float(run_sj().u_cov) - ref["u_cov"]) / abs(ref["u_cov"])
                label = setting if precision == "float64" else f"{setting}/mx"
                print(f"{n:>9} {label:>7} | {t_sj:>11.3f} {t_np:>9.3f} {t_p64:>9.3f} {t_p32:>9.3f} | "
                      f"{t_np / t_sj:>8.2f} {t_sj / t_p64:>9.2f} {t_sj / t_p32:>9.2f} | {err:>13.2e}")
        # accuracy of the mixed mode on a collapsed set (rank m/8 + 1e-4 noise): the hard case
        basis = np.linalg.qr(rng.standard_normal((m, m // 8)))[0].astype(np.float32)
        col = (rng.standard_normal((n, m // 8), dtype=np.float32) @ basis.T + 3.0 * basis[:, 0]
               + 1e-4 * rng.standard_normal((n, m), dtype=np.float32)).astype(np.float32)
        ref = numpy_sigma(col, None, n)
        col_dev = jnp.asarray(col)
        for precision in ("float64", "mixed"):
            rep = sj.sigma(col_dev, validate=False, precision=precision)
            err = abs(float(rep.u_cov) - ref["u_cov"]) / abs(ref["u_cov"])
            collapsed_rows.append((n, precision, float(rep.u_cov), ref["u_cov"], err))
        del a32, a64, a_dev, col, col_dev
    print("\naccuracy on collapsed embeddings (rank m/8 plus 1e-4 noise), full set:")
    print(f"{'n':>9} {'precision':>9} | {'u_cov sigma_jax':>16} {'u_cov numpy f64':>16} | {'rel.err':>9} {'abs.err':>9}")
    for n, precision, u, r, err in collapsed_rows:
        print(f"{n:>9} {precision:>9} | {u:>16.4f} {r:>16.4f} | {err:>9.2e} {abs(u - r):>9.3g}")


if __name__ == "__main__":
    main()
