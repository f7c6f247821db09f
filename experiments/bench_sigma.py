"""Benchmark: SIGMA's exact report against the NumPy/SciPy best practice and the hardware floor, plus accuracy.

    python experiments/bench_sigma.py                        # n in {1e5, 4e5, 1e6}, m = 384, 3 repeats
    python experiments/bench_sigma.py --n 100000 400000      # the sizes the README table uses
    python experiments/bench_sigma.py --n 1000000 --skip-timing   # accuracy only (split <= 1e-9 at 10^6 rows)
    python experiments/bench_sigma.py --readme-table         # print the Markdown table from the JSON

Contenders, timed side by side in one process (one warm-up call each, then ``--repeats`` rounds in
which every contender is called once, round-robin; the minimum is reported):

* ``sigma_jax`` at ``precision="float64"`` (the default: host float64 BLAS for a NumPy array on
  the CPU), ``"split"`` and ``"mixed"``, all through ``sigma_jax.sigma`` (:func:`sigma_jax_report`);
* ``sigma_jax XLA f64 (current)``: today's ``sigma_jax.sigma`` on a device array (the jittable path);
* ``numpy/scipy``: the best report a NumPy/SciPy user would write (:func:`numpy_report`: gather the
  subset, normalise in float64, ``v.T @ v``, ``scipy.linalg.cho_factor``, ``solve_triangular``);
* the floor, NumPy's float64 ``A.T @ A`` of all n rows (A already float64: OpenBLAS SYRK), and one
  float32 product of the same shape (NumPy's and XLA's at ``Precision.HIGHEST``: the unit of
  ``split``'s cost).

Settings: ``full`` (n_A = n: no band) and ``half`` (n_A = n/2 of n_total = n: the band's q pass).
``split`` is timed at ``full`` only (its q pass is the host one).  Accuracy: relative error of
``U_cov`` against a float64 NumPy reference on a healthy and a collapsed set (random basis).
Emulation: the log-det error (nats) if the Gram's float32 products ran at the default matmul
precision of a TPU (inputs rounded to bfloat16) or an NVIDIA GPU (TF32, 10-bit mantissa).

Results go to ``experiments/results/bench_sigma.json``; a Markdown table is printed.  The machine
is shared and timings are noisy: read the ratios, and the load average the JSON records.
OpenBLAS: if ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` are set (some environments set them for
old OpenBLAS builds; they slow a current one), benchmark with both unset for this command only
(``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python experiments/bench_sigma.py``); the JSON
records the variables and the kernel each OpenBLAS runs.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import pathlib
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy
import scipy.linalg

import sigma_jax as sj
from sigma_jax import _split

RESULTS = pathlib.Path(__file__).parent / "results" / "bench_sigma.json"
DELTA, RHO, Z95 = 1e-3, 1.0, 1.959963984540054


# --------------------------------------------------------------------------- sigma_jax's contenders


def sigma_jax_report(a32: np.ndarray, a_dev, idx, n_total: int, precision: str) -> dict:
    """``sigma_jax.sigma`` at ``precision``, as a user calls it.

    * ``"float64"`` on the host array: the CPU default (float64 BLAS, :func:`sigma_jax.gram.blas_stats`);
    * ``"split"`` on the device array: float32-only device part, finished on the host
      (:func:`sigma_jax.gram.split_stats`);
    * ``"mixed"`` on the device array (the jittable XLA path with float32 chunk products).
    """
    sub = None if idx is None else jnp.asarray(idx)
    arr = a32 if precision == "float64" else a_dev
    return _as_dict(jax.block_until_ready(sj.sigma(arr, subset=sub, n_total=n_total, precision=precision,
                                                   validate=False)))


def _as_dict(rep) -> dict:
    return {k: float(getattr(rep, k)) for k in ("logdet", "u_cov", "g_kf", "ci_halfwidth")}


_XLA_SIGMA = {}


def current_xla_report(a_dev, idx, n_total: int) -> dict:
    """``sigma_jax.sigma`` under ``jit`` (the jittable XLA float64 path, :func:`sigma_jax.gram.dense_stats`):
    the pre-issue default, and what runs inside jitted code or on an accelerator."""
    key = (idx is None, n_total)
    if key not in _XLA_SIGMA:
        _XLA_SIGMA[key] = jax.jit(lambda a, sub: sj.sigma(a, subset=sub, n_total=n_total, validate=False))
    sub = None if idx is None else jnp.asarray(idx)
    return _as_dict(jax.block_until_ready(_XLA_SIGMA[key](a_dev, sub)))


# --------------------------------------------------------------------------- NumPy/SciPy best practice, floors


def numpy_report(a32: np.ndarray, idx, n_total: int, delta: float = DELTA, rho: float = RHO) -> dict:
    """The best float64 report a NumPy/SciPy user would write: the same quantities as sigma_jax's.

    Gather the subset first, normalise in float64 in place (``einsum`` norms, no temporary),
    ``v.T @ v`` (NumPy's SYRK), Cholesky factors at
    the report's shifts (``delta``, ``beta + delta``, the band's ridge), and the band's
    ``q_i = n_A ||L^-1 v_i||^2`` by one ``solve_triangular``.
    """
    rows = a32 if idx is None else a32[idx]
    v = rows.astype(np.float64)
    # row norms without an (n, m) temporary (``np.linalg.norm(v, axis=1)`` squares into one: measured
    # 0.25-2.6 s at n = 4e5 on this machine, the spread being page faults of the fresh 1.2 GB buffer)
    v *= (1.0 / np.sqrt(np.einsum("ij,ij->i", v, v)))[:, None]
    n_a, m = v.shape
    g = v.T @ v
    eye = np.eye(m)
    beta = (n_total - n_a) * rho

    def logdet(shift):
        c, _ = scipy.linalg.cho_factor(g + shift * eye, lower=True, check_finite=False)
        return 2.0 * np.sum(np.log(np.diag(c))), c

    s, _ = logdet(delta)
    up, _ = logdet(beta + delta)
    hw = 0.0
    if n_a < n_total:
        _, c = logdet(delta * n_a / n_total)
        w = scipy.linalg.solve_triangular(c, v.T, lower=True, check_finite=False)
        q = n_a * np.einsum("ij,ij->j", w, w)
        hw = Z95 * q.std(ddof=1) * np.sqrt(1.0 / n_a - 1.0 / n_total)
    return dict(logdet=s, u_cov=s - m * np.log(n_a), g_kf=up - m * np.log(beta + delta), ci_halfwidth=hw)


def best_times(jobs: dict, repeats: int) -> dict:
    """Min over ``repeats`` calls of every job of (wall seconds, process CPU seconds), after one warm-up each.

    The calls go round-robin (job 1, job 2, ..., job 1, ...), so that a burst of load from other
    processes on a shared machine hits every contender alike rather than one contender's repeats.
    CPU seconds (all threads of this process) measure the work done, which the other processes'
    load changes less than the wall time (but BLAS threads that spin while waiting count too).
    """
    for fn in jobs.values():
        fn()
    best = {k: (float("inf"), float("inf")) for k in jobs}
    for _ in range(repeats):
        for name, fn in jobs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


_XLA_F32 = jax.jit(lambda a: jnp.matmul(a.T, a, precision=jax.lax.Precision.HIGHEST))


# --------------------------------------------------------------------------- data, references, emulation


def make_set(rng, n: int, m: int, kind: str) -> np.ndarray:
    """float32 rows in a random basis: ``healthy`` (power-law spectrum) or ``collapsed`` (rank m/8 + 1e-4 noise)."""
    if kind == "healthy":
        q, _ = np.linalg.qr(rng.standard_normal((m, m)))
        z = rng.standard_normal((n, m), dtype=np.float32) * (np.arange(1, m + 1, dtype=np.float32) ** -0.25)
        return (z @ q.T.astype(np.float32)).astype(np.float32)
    r = m // 8
    basis = np.linalg.qr(rng.standard_normal((m, r)))[0].astype(np.float32)
    x = rng.standard_normal((n, r), dtype=np.float32) @ basis.T + 3.0 * basis[:, 0]
    return (x + np.float32(1e-4) * rng.standard_normal((n, m), dtype=np.float32)).astype(np.float32)


def _round_mantissa(x32: np.ndarray, bits: int) -> np.ndarray:
    """Round float32 to ``bits`` explicit mantissa bits (nearest even): 7 = bfloat16, 10 = TF32."""
    u = x32.astype(np.float32).view(np.uint32)
    drop = 23 - bits
    half = np.uint32(1 << (drop - 1))
    lsb = (u >> np.uint32(drop)) & np.uint32(1)
    return ((u + half - np.uint32(1) + lsb) & np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)).view(np.float32)


def emulate_default_precision(x32: np.ndarray, ref_logdet: float, chunk: int = 1 << 16) -> dict:
    """Log-det error (nats) of ``G + delta I`` when the products run on bfloat16 / TF32-rounded inputs.

    Rows are normalised in float64, rounded to float32 and then to the reduced mantissa (what a
    TPU's / an NVIDIA GPU's default float32 matmul does to its operands); products are exact in
    float32 and accumulated in float32 per chunk, the chunks in float64 (as ``precision="mixed"``).
    """
    out = {}
    for name, bits in (("float32 (HIGHEST)", 23), ("TF32 (GPU default)", 10), ("bfloat16 (TPU default)", 7)):
        g = np.zeros((x32.shape[1],) * 2)
        for s in range(0, x32.shape[0], chunk):
            v = x32[s:s + chunk].astype(np.float64)
            v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
            v = v if bits == 23 else _round_mantissa(v, bits)
            g += (v.T @ v).astype(np.float64)
        ld = np.linalg.slogdet(g + DELTA * np.eye(g.shape[0]))[1]
        out[name] = ld - ref_logdet
    return out


# --------------------------------------------------------------------------- environment record


def _openblas_info() -> list:
    """Kernel, version and threads of each OpenBLAS loaded in this process (NumPy's and SciPy's)."""
    libs = sorted({line.split()[-1] for line in open("/proc/self/maps") if "openblas" in line.lower()})
    info = []
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                try:
                    core = getattr(lib, f"{prefix}_get_corename{suffix}")
                    conf = getattr(lib, f"{prefix}_get_config{suffix}")
                    nthr = getattr(lib, f"{prefix}_get_num_threads{suffix}")
                except AttributeError:
                    continue
                core.restype = conf.restype = ctypes.c_char_p
                info.append(dict(lib=os.path.basename(path), core=core().decode(), config=conf().decode(),
                                 threads=int(nthr())))
                break
            else:
                continue
            break
    return info


def _meta(args) -> dict:
    return dict(
        date=datetime.datetime.now().isoformat(timespec="seconds"), python=platform.python_version(),
        jax=jax.__version__, numpy=np.__version__, scipy=scipy.__version__, platform=jax.devices()[0].platform,
        cpu=platform.processor() or platform.machine(), nproc=os.cpu_count(), m=args.m, repeats=args.repeats,
        env={k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                                             "XLA_FLAGS")},
        openblas=_openblas_info(), loadavg_start=os.getloadavg(), command=" ".join(sys.argv))


# --------------------------------------------------------------------------- the run


PRECISIONS = ("float64", "split", "mixed")


def run_timings(n: int, m: int, repeats: int, rng, contenders) -> list:
    a32 = make_set(rng, n, m, "healthy")
    a_dev = jax.device_put(a32)
    a64 = a32.astype(np.float64)
    floor = "numpy f64 A.T@A (floor)"
    jobs = {("-", floor): lambda: a64.T @ a64,
            ("-", "numpy f32 A.T@A"): lambda: a32.T @ a32,
            ("-", "XLA f32 A.T@A (HIGHEST)"): lambda: jax.block_until_ready(_XLA_F32(a_dev))}
    for setting in ("full", "half"):
        idx = None if setting == "full" else np.sort(rng.choice(n, n // 2, replace=False))
        jobs[(setting, "numpy/scipy")] = lambda idx=idx: numpy_report(a32, idx, n)
        for p in PRECISIONS:
            if f"sigma_jax {p}" in contenders and not (p == "split" and setting == "half"):
                jobs[(setting, f"sigma_jax {p}")] = lambda idx=idx, p=p: sigma_jax_report(a32, a_dev, idx, n, p)
        if "sigma_jax XLA f64 (current)" in contenders:
            jobs[(setting, "sigma_jax XLA f64 (current)")] = lambda idx=idx: current_xla_report(a_dev, idx, n)
    best = best_times(jobs, repeats)
    f_wall, f_cpu = best[("-", floor)]
    rows = []
    for (setting, name), (t, c) in best.items():
        rows.append(dict(n=n, setting=setting, contender=name, seconds=t, ratio_to_floor=t / f_wall, cpu_seconds=c,
                         cpu_ratio_to_floor=c / f_cpu, loadavg=os.getloadavg()[0]))
        print(f"  n={n:>8} {setting:>4} {name:<28} {t:8.3f} s {t / f_wall:6.2f}x floor | cpu {c:8.3f} s "
              f"{c / f_cpu:6.2f}x", flush=True)
    return rows


def run_accuracy(n: int, m: int, rng, contenders) -> tuple[list, list]:
    acc, emu = [], []
    for kind in ("healthy", "collapsed"):
        a32 = make_set(rng, n, m, kind)
        a_dev = jax.device_put(a32)
        ref = numpy_report(a32, None, n)
        res = {"sigma_jax float64": sigma_jax_report(a32, a_dev, None, n, "float64")}
        if "sigma_jax split" in contenders:
            res["sigma_jax split"] = sigma_jax_report(a32, a_dev, None, n, "split")
            pair = _split.pair_to_f64(jax.jit(_split.split_gram)(a_dev))  # the (hi, lo) contract itself
            res["sigma_jax split (pair)"] = _as_dict(sj.sigma_from_gram(pair, n_sub=n, n_total=n))
        if "sigma_jax mixed" in contenders:
            res["sigma_jax mixed"] = sigma_jax_report(a32, a_dev, None, n, "mixed")
        if "sigma_jax XLA f64 (current)" in contenders:
            res["sigma_jax XLA f64 (current)"] = current_xla_report(a_dev, None, n)
        for name, r in res.items():
            err = abs(r["u_cov"] - ref["u_cov"])
            acc.append(dict(n=n, set=kind, contender=name, u_cov=r["u_cov"], u_cov_ref=ref["u_cov"], abs_err=err,
                            rel_err=err / abs(ref["u_cov"])))
            print(f"  n={n:>8} {kind:>9} {name:<28} U_cov rel.err {err / abs(ref['u_cov']):.2e}", flush=True)
        if kind == "collapsed":
            for name, d in emulate_default_precision(a32, ref["logdet"]).items():
                emu.append(dict(n=n, set=kind, products=name, logdet_err_nats=d))
                print(f"  n={n:>8} {kind:>9} emulated {name:<24} log-det error {d:+.3e} nats", flush=True)
        del a32, a_dev
    return acc, emu


def markdown_table(data: dict) -> str:
    """The README table: times and ratios to the floor, then the accuracy and emulation tables."""
    lines = ["| n | setting | contender | wall (s) | x floor | CPU (s) | x floor |", "|---|---|---|---|---|---|---|"]
    for r in data.get("timings", []):
        cpu = r.get("cpu_seconds", float("nan"))
        lines.append(f"| {r['n']:.0e} | {r['setting']} | {r['contender']} | {r['seconds']:.3f} | "
                     f"{r['ratio_to_floor']:.2f} | {cpu:.3f} | {r.get('cpu_ratio_to_floor', float('nan')):.2f} |")
    lines += ["", "| n | set | contender | U_cov | rel. error vs float64 NumPy |", "|---|---|---|---|---|"]
    for r in data.get("accuracy", []):
        lines.append(f"| {r['n']:.0e} | {r['set']} | {r['contender']} | {r['u_cov']:.6f} | {r['rel_err']:.1e} |")
    lines += ["", "| n | set | Gram products | log-det error (nats) |", "|---|---|---|---|"]
    for r in data.get("emulation", []):
        lines.append(f"| {r['n']:.0e} | {r['set']} | {r['products']} | {r['logdet_err_nats']:+.2e} |")
    metas = data.get("meta", {})
    for meta in (metas if isinstance(metas, list) else [metas]):
        load = [tuple(round(x, 1) for x in meta.get(k, ())) for k in ("loadavg_start", "loadavg_end")]
        lines += ["", f"_{meta.get('date', '?')}: `{meta.get('command', '?')}`, {meta.get('cpu', '?')} "
                      f"x{meta.get('nproc', '?')}, jax {meta.get('jax', '?')}, best of {meta.get('repeats', '?')}, "
                      f"load average {load[0]} -> {load[1]}._"]
    return "\n".join(lines)


def _merge(old: dict, new: dict) -> dict:
    """``old`` with ``new``'s entries added (replacing those of the same n); the runs' metadata kept as a list."""
    out = {"meta": [m for m in (old["meta"] if isinstance(old["meta"], list) else [old["meta"]])] + [new["meta"]]}
    for key in ("timings", "accuracy", "emulation"):
        sizes = {r["n"] for r in new[key]}
        out[key] = [r for r in old.get(key, []) if r["n"] not in sizes] + new[key]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[100_000, 400_000, 1_000_000])
    p.add_argument("--m", type=int, default=384)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--contenders", nargs="+",
                   default=["sigma_jax float64", "sigma_jax split", "sigma_jax mixed", "sigma_jax XLA f64 (current)"])
    p.add_argument("--skip-timing", action="store_true", help="accuracy and emulation only")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--out", type=pathlib.Path, default=RESULTS)
    p.add_argument("--readme-table", action="store_true", help="print the Markdown table from --out and exit")
    p.add_argument("--merge", action="store_true",
                   help="add to the results already in --out (entries of the same n and kind are replaced)")
    args = p.parse_args(argv)
    if args.readme_table:
        print(markdown_table(json.loads(args.out.read_text())))
        return
    rng = np.random.default_rng(0)
    data = dict(meta=_meta(args), timings=[], accuracy=[], emulation=[])
    print(f"jax {jax.__version__} on {data['meta']['platform']}, m = {args.m}, best of {args.repeats}; "
          f"OpenBLAS: {[(o['lib'], o['core'], o['threads']) for o in data['meta']['openblas']]}", flush=True)
    for n in args.n:
        if not args.skip_timing:
            data["timings"] += run_timings(n, args.m, args.repeats, rng, args.contenders)
        if not args.skip_accuracy:
            acc, emu = run_accuracy(n, args.m, rng, args.contenders)
            data["accuracy"] += acc
            data["emulation"] += emu
    data["meta"]["loadavg_end"] = os.getloadavg()
    if args.merge and args.out.exists():
        data = _merge(json.loads(args.out.read_text()), data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1))
    print()
    print(markdown_table(data))
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
