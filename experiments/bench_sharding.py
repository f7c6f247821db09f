"""Benchmark of sigma_jax.sharding: overhead of the sharded paths on CPU, throughput on a GPU.

CPU mode (default on a machine without an accelerator): 8 simulated host devices
(``--xla_force_host_platform_device_count``, set before JAX is imported).  The
simulated devices share the same cores, so the sharded/unsharded time *ratio*
measures the sharding overhead (partitioning, per-device dispatch, the
all-reduce, padding), not a speed-up.  Measured, on inputs already placed:

* ``gram``:   ``gram.gram_f64`` (jit)            vs ``sharding.sharded_gram``       (1, 2, 4, 8 devices)
* ``sigma``:  ``sigma_jax.core.sigma``           vs ``sharding.sharded_sigma``      (band on: n_total = 4n)
* ``mm32``:   ``GramOperator.matmat_rows`` (32 probes as rows) vs ``ShardedGramOperator.matmat_rows``
* ``mv``:     ``GramOperator.matvec``            vs ``ShardedGramOperator.matvec``
* ``stream``: ``gram.accumulate`` over a ``.npy`` memmap vs ``sharding.stream_gram`` (prefetch thread)

GPU mode (when ``jax.default_backend() == "gpu"``; ``--mode gpu`` forces the
code path anywhere, for a smoke test): measured peaks first --
float32 (precision HIGHEST) and float64 matmul TFLOP/s, and memory bandwidth
(a float32 reduction over 1 GiB) -- then

* Gram accumulation (``gram_f64``, float64 products, 2 n m^2 flops) and the
  1-device ``sharded_gram`` as a fraction of the measured float64 matmul peak;
* matvec (``matmat_rows`` with one probe; the algorithm reads A twice:
  2 n m 4 bytes) and ``matmat_rows`` with 32 probes as a fraction of the measured
  bandwidth (and of the float32 peak for the 32-probe block).

Usage:
    python experiments/bench_sharding.py                          # CPU, default sizes (~5 min on 2 loaded cores)
    python experiments/bench_sharding.py --sizes 65536x384 --repeats 3 --out bench.json
    python experiments/bench_sharding.py --mode gpu --sizes 1048576x1024   # on a GPU machine

Prints a markdown table and (``--out``) writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
# Simulated CPU devices run concurrently and each calls LAPACK (Cholesky) through scipy's OpenBLAS;
# a multithreaded OpenBLAS then oversubscribes the cores (measured: sharded_sigma on 8 simulated
# devices, n=4096, m=32: 23-127 ms with the default, 3.1 ms with 1 thread; unsharded 1.9 ms).
# Override with OPENBLAS_NUM_THREADS=... in the environment.  No effect on GPU kernels.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from sigma_jax import core, gram  # noqa: E402
from sigma_jax import sharding as sh  # noqa: E402
from sigma_jax._x64 import x64  # noqa: E402


def _block(x):
    return jax.tree.map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, x)


def timeit(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds (results blocked on), after ``warmup`` calls."""
    for _ in range(warmup):
        _block(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _block(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _data(n, m, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, m), dtype=np.float32)


# --------------------------------------------------------------------------- CPU: overhead ratios


def bench_cpu(sizes, repeats, device_counts, seed=0):
    """Min-of-``repeats`` wall times, the unsharded and sharded calls interleaved in random order.

    On a shared, loaded machine the minimum is the robust statistic (contention only adds
    time), and interleaving exposes both paths to the same background load.
    """
    rows = []
    order_rng = np.random.default_rng(seed)
    for n, m in sizes:
        a = _data(n, m)
        a_dev = jnp.asarray(a)
        v32 = jnp.asarray(_data(32, m, 1))
        gram_jit = jax.jit(lambda x: gram.gram_f64(x))
        mm = jax.jit(lambda op, v: op.matmat_rows(v))
        mv = jax.jit(lambda op, v: op.matvec(v))
        op0 = gram.gram_operator(a_dev, delta=1e-3)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "emb.npy")
            np.save(path, a)
            chunk = max(8192, n // 8)
            fns = {
                ("gram", 0): lambda: gram_jit(a_dev),
                ("sigma", 0): lambda: core.sigma(a_dev, n_total=4 * n, validate=False),
                ("mm32", 0): lambda: mm(op0, v32),
                ("mv", 0): lambda: mv(op0, v32[0]),
                ("stream", 0): lambda: gram.accumulate(path, chunk_rows=chunk, validate=False),
            }
            for k in device_counts:
                mesh = sh.make_mesh(k)
                x, _ = sh.shard_rows(a, mesh)
                op = sh.sharded_gram_operator(x, mesh, delta=1e-3)
                fns[("gram", k)] = functools.partial(lambda x, mesh: sh.sharded_gram(x, mesh), x, mesh)
                fns[("sigma", k)] = functools.partial(
                    lambda x, mesh: sh.sharded_sigma(x, mesh=mesh, n_total=4 * n, validate=False), x, mesh)
                fns[("mm32", k)] = functools.partial(lambda op: mm(op, v32), op)
                fns[("mv", k)] = functools.partial(lambda op: mv(op, v32[0]), op)
                fns[("stream", k)] = functools.partial(
                    lambda mesh: sh.stream_gram(path, mesh=mesh, chunk_rows=chunk, validate=False), mesh)
            best = {}
            with x64():
                for key, fn in fns.items():  # compile + warm up
                    _block(fn())
                for _ in range(repeats):
                    keys = list(fns)
                    order_rng.shuffle(keys)
                    for key in keys:
                        t0 = time.perf_counter()
                        _block(fns[key]())
                        dt = time.perf_counter() - t0
                        best[key] = min(best.get(key, np.inf), dt)
        for k in device_counts:
            for name in ("gram", "sigma", "mm32", "mv", "stream"):
                base, sec = best[(name, 0)], best[(name, k)]
                rows.append({"n": n, "m": m, "op": name, "devices": k, "unsharded_s": base, "sharded_s": sec,
                             "ratio": sec / base})
    return rows


def print_cpu(rows):
    print("\n(min of the repeats, unsharded and sharded calls interleaved)")
    print("\n| n | m | op | devices | unsharded (ms) | sharded (ms) | sharded / unsharded |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']} | {r['m']} | {r['op']} | {r['devices']} | {1e3 * r['unsharded_s']:.2f} | "
              f"{1e3 * r['sharded_s']:.2f} | {r['ratio']:.2f} |")


# --------------------------------------------------------------------------- GPU: fractions of measured peaks


def measure_peaks(repeats, matmul_n=8192, bw_bytes=1 << 30):
    """Measured matmul TFLOP/s (float32 HIGHEST, float64) and memory bandwidth (GB/s, float32 reduction)."""
    peaks = {}
    x = jnp.asarray(_data(matmul_n, matmul_n))
    f32 = jax.jit(lambda a: jnp.matmul(a, a, precision=jax.lax.Precision.HIGHEST))
    peaks["f32_tflops"] = 2 * matmul_n**3 / timeit(lambda: f32(x), repeats) / 1e12
    with x64():
        x64a = x.astype(jnp.float64)
        f64m = jax.jit(lambda a: a @ a)
        peaks["f64_tflops"] = 2 * matmul_n**3 / timeit(lambda: f64m(x64a), repeats) / 1e12
    del x
    y = jnp.ones((bw_bytes // 4,), jnp.float32)
    red = jax.jit(lambda a: jnp.sum(a))
    peaks["bandwidth_gbs"] = bw_bytes / timeit(lambda: red(y), repeats) / 1e9
    return peaks


def bench_gpu(sizes, repeats, peaks):
    rows = []
    mesh = sh.make_mesh(1)
    for n, m in sizes:
        a_dev = jnp.asarray(_data(n, m))
        gram_jit = jax.jit(lambda x: gram.gram_f64(x))
        x, _ = sh.shard_rows(a_dev, mesh)
        op = gram.gram_operator(a_dev)
        sop = sh.sharded_gram_operator(x, mesh)
        mm = jax.jit(lambda op, v: op.matmat_rows(v))
        v1 = jnp.asarray(_data(1, m, 1))
        v32 = jnp.asarray(_data(32, m, 1))
        flops_gram = 2.0 * n * m * m
        with x64():
            t_gram = timeit(lambda: gram_jit(a_dev), repeats)
            t_sgram = timeit(lambda: sh.sharded_gram(x, mesh), repeats)
        bytes_mv = 2.0 * n * m * 4  # A read twice (V A^T, then W A)
        for label, t, kind in (
            ("gram_f64", t_gram, "f64"),
            ("sharded_gram (1 device)", t_sgram, "f64"),
        ):
            rows.append({"n": n, "m": m, "op": label, "time_s": t, "achieved": flops_gram / t / 1e12,
                         "unit": "TFLOP/s", "fraction": flops_gram / t / 1e12 / peaks[f"{kind}_tflops"],
                         "of": f"measured {kind} matmul peak"})
        for label, o in (("matvec GramOperator", op), ("matvec ShardedGramOperator", sop)):
            t = timeit(lambda: mm(o, v1), repeats)
            rows.append({"n": n, "m": m, "op": label, "time_s": t, "achieved": bytes_mv / t / 1e9, "unit": "GB/s",
                         "fraction": bytes_mv / t / 1e9 / peaks["bandwidth_gbs"], "of": "measured bandwidth"})
        for label, o in (("matmat_rows 32 GramOperator", op), ("matmat_rows 32 Sharded", sop)):
            t = timeit(lambda: mm(o, v32), repeats)
            fl = 2 * 2.0 * n * m * 32
            rows.append({"n": n, "m": m, "op": label, "time_s": t, "achieved": fl / t / 1e12, "unit": "TFLOP/s",
                         "fraction": fl / t / 1e12 / peaks["f32_tflops"], "of": "measured f32 matmul peak",
                         "bandwidth_fraction": bytes_mv / t / 1e9 / peaks["bandwidth_gbs"]})
        del a_dev, x, op, sop
    return rows


def print_gpu(peaks, rows):
    print(f"\nmeasured peaks: f32 (HIGHEST) {peaks['f32_tflops']:.2f} TFLOP/s, f64 {peaks['f64_tflops']:.2f} TFLOP/s, "
          f"bandwidth {peaks['bandwidth_gbs']:.0f} GB/s")
    print("\n| n | m | op | time (ms) | achieved | fraction of |")
    print("|---:|---:|---|---:|---:|---|")
    for r in rows:
        print(f"| {r['n']} | {r['m']} | {r['op']} | {1e3 * r['time_s']:.2f} | {r['achieved']:.2f} {r['unit']} | "
              f"{100 * r['fraction']:.0f}% {r['of']} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=("auto", "cpu", "gpu"), default="auto")
    ap.add_argument("--sizes", default=None, help="comma-separated NxM (default CPU: 65536x128,131072x384; "
                                                  "GPU: 1048576x384,1048576x1024)")
    ap.add_argument("--devices", default="1,2,4,8", help="CPU mode: mesh sizes")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--matmul-n", type=int, default=8192, help="GPU mode: size of the peak matmul")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    mode = args.mode
    if mode == "auto":
        mode = "gpu" if jax.default_backend() == "gpu" else "cpu"
    default = "65536x128,131072x384" if mode == "cpu" else "1048576x384,1048576x1024"
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in (args.sizes or default).split(",")]
    info = {"mode": mode, "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"), "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "jax": jax.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv)}
    print(json.dumps(info))
    t0 = time.perf_counter()
    if mode == "cpu":
        counts = [int(k) for k in args.devices.split(",") if int(k) <= len(jax.devices())]
        rows = bench_cpu(sizes, args.repeats, counts)
        print_cpu(rows)
        result = {"info": info, "rows": rows}
    else:
        peaks = measure_peaks(args.repeats, args.matmul_n)
        rows = bench_gpu(sizes, args.repeats, peaks)
        print_gpu(peaks, rows)
        result = {"info": info, "peaks": peaks, "rows": rows}
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
