"""Benchmark: the in-loop monitor's cost per training step (issue 13's acceptance table).

    .venv/bin/python experiments/bench_monitor.py                  # the table, ~5 min on 2 CPU cores
    .venv/bin/python experiments/bench_monitor.py --sizes 256x256 --steps 200 --repeats 3 --out /tmp/b.json
    .venv/bin/python experiments/bench_monitor.py --micro --out /tmp/micro.json   # the parts alone (micro_size)

A 3-layer tanh MLP (64 inputs -> d -> d -> d -> 1, squared loss) trained with optax adam, one
jitted step with its state donated; the monitor (``spectral_monitor(every=100)``, exact path, SIGMA
only, its default ``n_A > 3d`` rows sampled from the last 100 steps) watches the last hidden layer.
Variants: ``none`` (no monitor), ``float64`` (the default Gram) and ``mixed`` (``precision="mixed"``).
The last two columns time the monitor alone (min over refreshes, and ``(update + refresh / every) /
step``): a cross-check that noise hits less.

Method: for each size all variants are compiled and warmed up for the same number of steps, then timed
in interleaved blocks (none, float64, mixed, none, float64, mixed, ...) of ``--steps`` steps each, so
that machine noise hits every variant alike; a block of ``--steps`` steps holds ``--steps / every``
refreshes whatever its offset.  Per-step time = block time / steps; the table reports the minimum over
``--repeats`` blocks and the overhead ``min(with) / min(without) - 1``, in wall time and in process CPU
time (the work done, which other processes on a shared machine disturb less).  The shared machine is
noisy: read the overheads, and the spread of the blocks in the JSON, not single timings.
"""

from __future__ import annotations

import os

# LAPACK (the refresh's Cholesky factorisations) single-threaded: a multithreaded OpenBLAS spins on the
# shared cores and made refreshes 10-50x slower there (as in tests/conftest.py and docs/scaling.md).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sigma_jax._io import write_json_atomic  # noqa: E402
from sigma_jax.monitor import spectral_monitor  # noqa: E402

HIGHEST = jax.lax.Precision.HIGHEST
IN_DIM = 64
VARIANTS = ("none", "float64", "mixed")


def init_mlp(key, d: int):
    sizes = [IN_DIM, d, d, d, 1]
    keys = jax.random.split(key, len(sizes) - 1)
    return [(jax.random.normal(k, (a, b), jnp.float32) / np.sqrt(a), jnp.zeros((b,), jnp.float32))
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def forward(params, x):
    """(prediction (B,), last hidden layer (B, d))."""
    h = x
    for w, b in params[:-1]:
        h = jnp.tanh(jnp.matmul(h, w, precision=HIGHEST) + b)
    w, b = params[-1]
    return (jnp.matmul(h, w, precision=HIGHEST) + b)[:, 0], h


def make_steps(monitor, tx):
    def loss_fn(params, x, y):
        pred, h = forward(params, x)
        return jnp.mean((pred - y) ** 2), h

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def plain(params, opt_state, x, y):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def monitored(params, opt_state, mstate, x, y, step):
        (loss, h), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        mstate, report = monitor.update(mstate, jax.lax.stop_gradient(h), step)
        return optax.apply_updates(params, updates), opt_state, mstate, loss, report.u_cov

    return plain, monitored


class Runner:
    """One variant: its own parameters, optimiser and monitor state, advanced block by block."""

    def __init__(self, variant: str, d: int, batch: int, every: int, data):
        self.variant, self.data, self.step = variant, data, 0
        tx = optax.adam(1e-3)
        self.monitor = None if variant == "none" else spectral_monitor(every=every, precision=variant)
        plain, monitored = make_steps(self.monitor, tx)
        self.fn = plain if self.monitor is None else monitored
        self.params = init_mlp(jax.random.key(0), d)
        self.opt_state = tx.init(self.params)
        self.mstate = None if self.monitor is None else self.monitor.init(d, key=jax.random.key(1))
        self.last = None

    def run(self, steps: int) -> tuple[float, float]:
        """(wall seconds, process CPU seconds) of ``steps`` steps."""
        xs, ys = self.data
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(steps):
            i = self.step % xs.shape[0]
            if self.monitor is None:
                self.params, self.opt_state, self.last = self.fn(self.params, self.opt_state, xs[i], ys[i])
            else:
                self.params, self.opt_state, self.mstate, self.last, _ = self.fn(
                    self.params, self.opt_state, self.mstate, xs[i], ys[i], jnp.int32(self.step))
            self.step += 1
        jax.block_until_ready(self.last)
        return time.perf_counter() - t0, time.process_time() - c0


def bench_size(d: int, batch: int, *, every: int, steps: int, repeats: int, warmup: int) -> dict:
    key = jax.random.key(d * 7919 + batch)
    xs = jax.random.normal(key, (8, batch, IN_DIM), jnp.float32)
    ys = jnp.sin(jnp.sum(xs, axis=-1))
    runners = {v: Runner(v, d, batch, every, (xs, ys)) for v in VARIANTS}
    for r in runners.values():
        r.run(warmup)  # compiles, then the same warm-up for every variant (and a refresh at step 0)
    blocks, cpu = {v: [] for v in VARIANTS}, {v: [] for v in VARIANTS}
    for _ in range(repeats):
        for v, r in runners.items():
            wall, proc = r.run(steps)
            blocks[v].append(wall / steps)
            cpu[v].append(proc / steps)
    best = {v: min(ts) for v, ts in blocks.items()}
    best_cpu = {v: min(ts) for v, ts in cpu.items()}
    n_a = runners["float64"].mstate.rows.shape[0] * runners["float64"].mstate.rows.shape[1]
    parts = {v: monitor_parts(runners[v].monitor, d, batch, every) for v in VARIANTS if v != "none"}
    return {"d": d, "batch": batch, "every": every, "n_A": int(n_a), "steps_per_block": steps,
            "repeats": repeats, "warmup_steps": warmup,
            "ms_per_step": {v: 1e3 * t for v, t in best.items()},
            "overhead_pct": {v: 100.0 * (best[v] / best["none"] - 1.0) for v in VARIANTS if v != "none"},
            "blocks_ms_per_step": {v: [1e3 * t for t in ts] for v, ts in blocks.items()},
            "cpu_ms_per_step": {v: 1e3 * t for v, t in best_cpu.items()},
            "cpu_overhead_pct": {v: 100.0 * (best_cpu[v] / best_cpu["none"] - 1.0) for v in VARIANTS if v != "none"},
            "blocks_cpu_ms_per_step": {v: [1e3 * t for t in ts] for v, ts in cpu.items()},
            "monitor_alone_ms": parts,
            "overhead_from_parts_pct": {v: 100.0 * (p["update"] + p["refresh"] / every) / (1e3 * best["none"])
                                        for v, p in parts.items()}}


def monitor_parts(monitor, d: int, batch: int, every: int, repeats: int = 7) -> dict:
    """The monitor alone (jitted, state donated): min time of a refresh and of a step between refreshes.

    A noise-robust cross-check of the A/B overhead: ``(update + refresh / every) / step``, where ``update``
    is the time of a step between refreshes beyond a no-op jitted step with the same arguments.
    """
    @functools.partial(jax.jit, donate_argnums=0)
    def step(state, x, t):
        state, report = monitor.update(state, x, t)
        return state, report.u_cov

    @functools.partial(jax.jit, donate_argnums=0)
    def noop(state, x, t):  # the same arguments and results: the dispatch a train step pays anyway
        return state, x[0, 0] + t

    x = jax.random.normal(jax.random.key(5), (batch, d), jnp.float32)
    state = monitor.init(d, key=jax.random.key(1))
    for t in range(1, every + 1):
        state, u = step(state, x, jnp.int32(t))
        state, u = noop(state, x, jnp.int32(t))
    jax.block_until_ready(u)

    def between(fn, start):  # mean time of 20 steps without a refresh
        nonlocal state
        t0 = time.perf_counter()
        for t in range(start, start + 20):
            state, out = fn(state, x, jnp.int32(t))
        jax.block_until_ready(out)
        return (time.perf_counter() - t0) / 20

    refresh, update, base = [], [], []
    for k in range(repeats):
        t0 = time.perf_counter()
        state, u = step(state, x, jnp.int32((k + 2) * every))
        jax.block_until_ready(u)
        refresh.append(time.perf_counter() - t0)
        update.append(between(step, (k + 2) * every + 1))
        base.append(between(noop, (k + 2) * every + 1))
    return {"refresh": 1e3 * min(refresh), "update": max(0.0, 1e3 * (min(update) - min(base)))}


def fused_steps(monitor, tx, k: int):
    """``k`` training steps (steps ``t0 .. t0 + k - 1``) fused in one ``lax.scan``: no dispatch, compute only."""
    def loss_fn(params, x, y):
        pred, h = forward(params, x)
        return jnp.mean((pred - y) ** 2), h

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def run(params, opt_state, mstate, xs, ys, t0):
        def body(carry, i):
            params, opt_state, mstate = carry
            x, y = xs[i % xs.shape[0]], ys[i % xs.shape[0]]
            (loss, h), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
            updates, opt_state = tx.update(grads, opt_state, params)
            if monitor is not None:
                mstate, _ = monitor.update(mstate, jax.lax.stop_gradient(h), t0 + i)
            return (optax.apply_updates(params, updates), opt_state, mstate), loss
        carry, losses = jax.lax.scan(body, (params, opt_state, mstate), jnp.arange(k, dtype=jnp.int32))
        return (*carry, losses[-1])

    return run


def micro_size(d: int, batch: int, *, every: int, repeats: int, fused: int = 20) -> dict:
    """The monitor's parts against the training step, each timed alone (min over ``repeats``): less noise-prone
    than the A/B of whole steps.

    * ``step_ms``: the plain jitted training step, one call per step (what the overhead is relative to);
    * ``update_ms``: the monitor's compute per step between refreshes: ``fused`` steps fused in one ``lax.scan``
      with the monitor minus the same without.  (A separate jitted call of ``update`` alone, as in
      :func:`monitor_parts`, mostly times the dispatch and thread hand-off of a second executable, 40-70 us
      on the shared 2-core machine, which a training step with the monitor inside does not pay.)
    * ``refresh_ms``: one jitted ``update`` at a refresh step returning the whole state (every report field, so
      nothing of the refresh is dead code).

    ``overhead_pct = (update + refresh / every) / step``.
    """
    tx = optax.adam(1e-3)
    key = jax.random.key(d * 7919 + batch)
    xs = jax.random.normal(key, (8, batch, IN_DIM), jnp.float32)
    ys = jnp.sin(jnp.sum(xs, axis=-1))
    out = {"d": d, "batch": batch, "every": every, "repeats": repeats, "fused_steps": fused}
    plain = Runner("none", d, batch, every, (xs, ys))
    plain.run(10)
    out["step_ms"] = 1e3 * min(plain.run(10)[0] / 10 for _ in range(repeats))
    x = jax.random.normal(jax.random.key(5), (batch, d), jnp.float32)
    for variant in ("float64", "mixed"):
        monitor = spectral_monitor(every=every, precision=variant)
        fns = {"with": fused_steps(monitor, tx, fused), "without": fused_steps(None, tx, fused)}
        states = {}
        for name in fns:
            params = init_mlp(jax.random.key(0), d)
            states[name] = [params, tx.init(params), monitor.init(d, key=jax.random.key(1)) if name == "with" else None]
        times = {name: [] for name in fns}
        for rep in range(repeats + 1):  # the first round compiles
            for name, fn in fns.items():
                st = states[name]
                t0 = time.perf_counter()
                *st[:3], loss = fn(*st, xs, ys, jnp.int32(rep * every + 1))  # steps without a refresh
                jax.block_until_ready(loss)
                if rep:
                    times[name].append((time.perf_counter() - t0) / fused)

        @functools.partial(jax.jit, donate_argnums=0)
        def refresh_step(state, x, t, monitor=monitor):
            return monitor.update(state, x, t)[0]   # the state holds every report field

        state = refresh_step(monitor.init(d, key=jax.random.key(1)), x, jnp.int32(0))
        for t in range(1, every):
            state = refresh_step(state, x, jnp.int32(t))
        refresh = []
        for rep in range(repeats):
            t0 = time.perf_counter()
            state = jax.block_until_ready(refresh_step(state, x, jnp.int32((rep + 1) * every)))
            refresh.append(time.perf_counter() - t0)
        update = max(0.0, min(times["with"]) - min(times["without"]))
        out[variant] = {"update_ms": 1e3 * update, "refresh_ms": 1e3 * min(refresh),
                        "fused_step_ms": 1e3 * min(times["without"]),
                        "overhead_pct": 100.0 * (1e3 * update + 1e3 * min(refresh) / every) / out["step_ms"]}
    return out


def print_micro(rows: list, sizes, every: int, repeats: int) -> None:
    print(f"{'hidden x batch':>15} {'step':>9} | {'update f64':>10} {'refresh f64':>11} {'overhead':>9} | "
          f"{'update mixed':>12} {'refresh mixed':>13} {'overhead':>9}")
    for size in sizes:
        d, b = (int(v) for v in size.lower().split("x"))
        row = micro_size(d, b, every=every, repeats=repeats)
        rows.append(row)
        f, m = row["float64"], row["mixed"]
        print(f"{d:>6} x {b:<6} {row['step_ms']:>7.2f}ms | {f['update_ms']:>8.4f}ms {f['refresh_ms']:>9.2f}ms "
              f"{f['overhead_pct']:>8.2f}% | {m['update_ms']:>10.4f}ms {m['refresh_ms']:>11.2f}ms "
              f"{m['overhead_pct']:>8.2f}%", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["256x256", "512x512", "1024x256"],
                    help="hidden size x batch (default: the issue's three shapes)")
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--steps", type=int, default=100, help="steps per timed block")
    ap.add_argument("--repeats", type=int, default=8, help="timed blocks per variant (min is reported)")
    ap.add_argument("--warmup", type=int, default=100, help="warm-up steps per variant after compiling")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                   "bench_monitor.json"))
    ap.add_argument("--micro", action="store_true",
                    help="time the monitor's parts (per-step compute, refresh) against the plain step (~1.5 min)")
    args = ap.parse_args(argv)
    rows = []
    if args.micro:
        print_micro(rows, args.sizes, args.every, min(args.repeats, 5))
    else:
        print(f"{'hidden x batch':>15} {'n_A':>6} {'without':>10} {'float64':>10} {'mixed':>10} "
              f"{'overhead f64':>13} {'overhead mixed':>15} {'CPU-time f64/mixed':>19} {'refresh f64/mixed':>18} "
              f"{'from parts f64/mixed':>21}")
    for size in ([] if args.micro else args.sizes):
        d, b = (int(v) for v in size.lower().split("x"))
        row = bench_size(d, b, every=args.every, steps=args.steps, repeats=args.repeats, warmup=args.warmup)
        rows.append(row)
        ms, ov, parts = row["ms_per_step"], row["overhead_pct"], row["monitor_alone_ms"]
        print(f"{d:>6} x {b:<6} {row['n_A']:>6} {ms['none']:>8.2f}ms {ms['float64']:>8.2f}ms {ms['mixed']:>8.2f}ms "
              f"{ov['float64']:>+12.2f}% {ov['mixed']:>+14.2f}% "
              f"{row['cpu_overhead_pct']['float64']:>+9.2f}%/{row['cpu_overhead_pct']['mixed']:<+7.2f}% "
              f"{parts['float64']['refresh']:>8.1f}/{parts['mixed']['refresh']:<6.1f}ms "
              f"{row['overhead_from_parts_pct']['float64']:>10.2f}%/{row['overhead_from_parts_pct']['mixed']:.2f}%",
              flush=True)
    info = {"command": "python experiments/bench_monitor.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "jax": jax.__version__, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "load_average_at_end": list(os.getloadavg()),
            "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            "device": str(jax.devices()[0]), "rows": rows}
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        write_json_atomic(args.out, info)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
