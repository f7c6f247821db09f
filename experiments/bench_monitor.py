"""Benchmark: the in-loop monitor's cost per training step (issue 13's acceptance table).

    .venv/bin/python experiments/bench_monitor.py                  # the table, ~5 min on 2 CPU cores
    .venv/bin/python experiments/bench_monitor.py --sizes 256x256 512x512@200 --repeats 3 --out /tmp/b.json

A 3-layer tanh MLP (64 inputs -> d -> d -> d -> 1, squared loss) trained with optax adam, one
jitted step with its state donated; the monitor (``spectral_monitor(every=100)``, exact path, float64,
SIGMA only, its default ``n_A > 3d`` rows sampled from the last 100 steps) watches the last hidden layer.
Variants:

* ``none``: the plain step (the baseline);
* ``update``: ``monitor.update`` inside the step (buffer, and the refresh under ``lax.cond``);
* ``split``: ``monitor.observe`` inside the step and ``monitor.refresh`` as its own jitted call every
  ``every`` steps (the same report; see the monitor's module docstring for why it is cheaper on CPU).

Method: for each size all variants are compiled and warmed up for the same number of steps, then timed
in blocks of ``--steps`` steps (a block holds ``--steps / every`` refreshes whatever its offset), the
variants interleaved and their order rotated each round, so that machine noise hits every variant alike.
A block ends by waiting for *everything* it dispatched (parameters and monitor state: a refresh left
running would otherwise be billed to the next variant's block).  Each block starts from fresh copies of
its state: where XLA:CPU's buffers land in memory moved identical steps by up to 12% between runs
(measured), and fresh copies give every variant a new placement per block.  Per-step time = block time /
steps.  The overhead is paired: the median over rounds of ``block(variant) / block(none)`` in the same
round, minus 1, in wall time and in process CPU time; ``ms_per_step`` is the median block, and the
minimum and the overhead of the minima are in the JSON too (the minimum rewards one lucky placement).
``refresh`` is one jitted refresh alone (min of 5) and ``from parts`` the overhead it predicts,
``refresh / (every * median step without)``; ``gram_ms`` / ``gram_share_pct`` the same for the refresh's
float64 Gram of the buffer alone, the part no exact report can skip.
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
from sigma_jax.gram import gram_f64  # noqa: E402
from sigma_jax.monitor import spectral_monitor  # noqa: E402

HIGHEST = jax.lax.Precision.HIGHEST
IN_DIM = 64
VARIANTS = ("none", "update", "split")


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


def loss_fn(params, x, y):
    pred, h = forward(params, x)
    return jnp.mean((pred - y) ** 2), h


def make_steps(monitor, tx):
    """(plain step, step with ``monitor.update``, step with ``monitor.observe``), each jitted with its state donated."""
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

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def observed(params, opt_state, mstate, x, y, step):
        (loss, h), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        mstate = monitor.observe(mstate, jax.lax.stop_gradient(h), step)
        return optax.apply_updates(params, updates), opt_state, mstate, loss

    return plain, monitored, observed


class Runner:
    """One variant: its own parameters, optimiser and monitor state, advanced block by block."""

    def __init__(self, variant: str, d: int, batch: int, every: int, data, precision: str = "float64"):
        self.variant, self.every, self.step = variant, every, 0
        xs, ys = data
        self.batches = [(xs[i], ys[i]) for i in range(xs.shape[0])]
        tx = optax.adam(1e-3)
        self.monitor = None if variant == "none" else spectral_monitor(every=every, precision=precision)
        self.plain, self.monitored, self.observed = make_steps(self.monitor, tx)
        self.refresh = None if self.monitor is None else jax.jit(self.monitor.refresh, donate_argnums=0)
        self.params = init_mlp(jax.random.key(0), d)
        self.opt_state = tx.init(self.params)
        self.mstate = None if self.monitor is None else self.monitor.init(d, key=jax.random.key(1))
        self.last = None

    def step_once(self, x, y):
        t = jnp.int32(self.step)
        if self.variant == "none":
            self.params, self.opt_state, self.last = self.plain(self.params, self.opt_state, x, y)
        elif self.variant == "update":
            self.params, self.opt_state, self.mstate, self.last, _ = self.monitored(
                self.params, self.opt_state, self.mstate, x, y, t)
        else:
            self.params, self.opt_state, self.mstate, self.last = self.observed(
                self.params, self.opt_state, self.mstate, x, y, t)
            if self.step % self.every == 0:
                self.mstate, _ = self.refresh(self.mstate, t)
        self.step += 1

    def run(self, steps: int) -> tuple[float, float]:
        """(wall seconds, process CPU seconds) of ``steps`` steps, from fresh copies of the state."""
        state = (self.params, self.opt_state, self.mstate)
        self.params, self.opt_state, self.mstate = jax.block_until_ready(jax.tree.map(jnp.copy, state))
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(steps):
            self.step_once(*self.batches[self.step % len(self.batches)])
        jax.block_until_ready((self.last, self.params, self.mstate))
        return time.perf_counter() - t0, time.process_time() - c0


def bench_size(d: int, batch: int, *, every: int, steps: int, repeats: int, warmup: int) -> dict:
    key = jax.random.key(d * 7919 + batch)
    xs = jax.random.normal(key, (8, batch, IN_DIM), jnp.float32)
    ys = jnp.sin(jnp.sum(xs, axis=-1))
    runners = {v: Runner(v, d, batch, every, (xs, ys)) for v in VARIANTS}
    for r in runners.values():
        r.run(warmup)  # compiles, then the same warm-up for every variant (and a refresh at step 0)
    blocks, cpu = {v: [] for v in VARIANTS}, {v: [] for v in VARIANTS}
    for rnd in range(repeats):
        for v in VARIANTS[rnd % len(VARIANTS):] + VARIANTS[:rnd % len(VARIANTS)]:  # rotated order
            wall, proc = runners[v].run(steps)
            blocks[v].append(wall / steps)
            cpu[v].append(proc / steps)
    best = {v: min(ts) for v, ts in blocks.items()}
    best_cpu = {v: min(ts) for v, ts in cpu.items()}
    med = {v: float(np.median(ts)) for v, ts in blocks.items()}

    def paired(times, v):  # the median over rounds of (variant / none in the same round) - 1, in %
        return 100.0 * (float(np.median(np.asarray(times[v]) / np.asarray(times["none"]))) - 1.0)

    n_a = runners["split"].mstate.rows.shape[0] * runners["split"].mstate.rows.shape[1]
    refresh, gram = refresh_alone(runners["split"].monitor, d, batch, every)
    with_monitor = [v for v in VARIANTS if v != "none"]
    return {"d": d, "batch": batch, "every": every, "n_A": int(n_a), "steps_per_block": steps,
            "repeats": repeats, "warmup_steps": warmup,
            "ms_per_step": {v: 1e3 * t for v, t in med.items()},
            "overhead_pct": {v: paired(blocks, v) for v in with_monitor},
            "min_ms_per_step": {v: 1e3 * t for v, t in best.items()},
            "overhead_of_min_pct": {v: 100.0 * (best[v] / best["none"] - 1.0) for v in with_monitor},
            "blocks_ms_per_step": {v: [1e3 * t for t in ts] for v, ts in blocks.items()},
            "cpu_ms_per_step": {v: 1e3 * t for v, t in best_cpu.items()},
            "cpu_overhead_pct": {v: paired(cpu, v) for v in with_monitor},
            "blocks_cpu_ms_per_step": {v: [1e3 * t for t in ts] for v, ts in cpu.items()},
            "refresh_ms": refresh, "gram_ms": gram,
            "gram_share_pct": 100.0 * gram / (every * 1e3 * med["none"]),
            "overhead_from_parts_pct": 100.0 * refresh / (every * 1e3 * med["none"])}


def min_time(fn, *args, repeats: int = 5) -> float:
    """Milliseconds of ``fn(*args)`` (jitted, compiled first), min over ``repeats``."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def refresh_alone(monitor, d: int, batch: int, every: int) -> tuple[float, float]:
    """Milliseconds of one jitted ``monitor.refresh`` on a full buffer, and of its float64 Gram alone (the floor:
    ``gram_f64`` of the buffered rows, as the refresh forms it)."""
    observe = jax.jit(monitor.observe, donate_argnums=0)
    x = jnp.tanh(jax.random.normal(jax.random.key(5), (batch, d), jnp.float32))
    state = monitor.init(d, key=jax.random.key(1))
    for t in range(1, every + 1):
        state = observe(state, x, jnp.int32(t))
    refresh = jax.jit(lambda s, t: monitor.refresh(s, t)[1])  # not donated: the same state each repeat
    gram = jax.jit(lambda rows: gram_f64(rows.reshape(-1, rows.shape[-1])))
    return min_time(refresh, state, jnp.int32(every)), min_time(gram, state.rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["256x256", "512x512", "1024x256", "1024x256@400"],
                    help="hidden size x batch[@every] (default: the issue's three shapes at --every, and 1024 x 256 "
                         "refreshed every 400 steps)")
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--steps", type=int, default=100,
                    help="steps per timed block (rounded up to a multiple of every: each block holds the same "
                         "refreshes)")
    ap.add_argument("--repeats", type=int, default=15, help="rounds: timed blocks per variant")
    ap.add_argument("--warmup", type=int, default=100, help="warm-up steps per variant after compiling")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                   "bench_monitor.json"))
    args = ap.parse_args(argv)
    rows = []
    print(f"{'hidden x batch':>15} {'every':>5} {'n_A':>6} {'without':>10} {'update':>10} {'split':>10} "
          f"{'overhead update':>16} {'overhead split':>15} {'CPU-time update/split':>22} {'refresh':>9} "
          f"{'from parts':>11}")
    for size in args.sizes:
        shape, _, every = size.lower().partition("@")
        d, b = (int(v) for v in shape.split("x"))
        every = int(every) if every else args.every
        steps = -(-args.steps // every) * every
        row = bench_size(d, b, every=every, steps=steps, repeats=args.repeats, warmup=max(args.warmup, every))
        rows.append(row)
        ms, ov, cpu = row["ms_per_step"], row["overhead_pct"], row["cpu_overhead_pct"]
        print(f"{d:>6} x {b:<6} {every:>5} {row['n_A']:>6} {ms['none']:>8.2f}ms {ms['update']:>8.2f}ms "
              f"{ms['split']:>8.2f}ms "
              f"{ov['update']:>+15.2f}% {ov['split']:>+14.2f}% {cpu['update']:>+11.2f}%/{cpu['split']:<+8.2f}% "
              f"{row['refresh_ms']:>7.1f}ms {row['overhead_from_parts_pct']:>10.2f}%", flush=True)
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
