"""The in-loop spectral monitor equals offline SIGMA on the same activations (jit, shard_map, pmap)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

import sigma_jax as sj
from sigma_jax import spectral
from sigma_jax.monitor import capture_hidden, spectral_monitor

DIM = 16


class TinyMLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(8, DIM, rngs=rngs)
        self.out = nnx.Linear(DIM, 1, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.tanh(self.hidden(x))
        return self.out(h)[..., 0]


def offline(rows, delta=1e-3):
    rep = sj.sigma(rows, delta=delta, ridge_only=True)
    return float(rep.logdet), float(rep.u_cov), float(spectral.effective_rank(rows)), float(spectral.stable_rank(rows))


def test_jitted_training_loop_reports_equal_offline_sigma():
    model = TinyMLP(nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    mon = spectral_monitor(every=3, metrics=("effective_rank", "stable_rank"))
    mstate = mon.init(DIM)

    @nnx.jit
    def train_step(model, opt, mstate, x, y, step):
        def loss_fn(m):
            pred, hidden = capture_hidden(m, x, include=lambda p: p == "hidden.__call__")
            return jnp.mean((pred - y) ** 2), hidden["hidden.__call__"]

        (loss, h), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        opt.update(model, grads)
        mstate, report = mon.update(mstate, jnp.tanh(h), step)
        return loss, mstate, report, jnp.tanh(h)

    rng = np.random.default_rng(0)
    seen, checked = [], 0
    for step in range(7):
        x = rng.normal(size=(12, 8)).astype(np.float32)
        y = np.sin(x.sum(1)).astype(np.float32)
        loss, mstate, report, acts = train_step(model, opt, mstate, x, y, step)
        seen.append(np.asarray(acts))
        if step % 3 == 0:
            rows = np.concatenate(seen)
            logdet, u_cov, er, sr = offline(rows)
            assert int(report["step"]) == step and int(report["n_rows"]) == rows.shape[0]
            # report values are float32: compare to ~1e-6 relative
            assert float(report["logdet"]) == pytest.approx(logdet, rel=2e-6)
            assert float(report["u_cov"]) == pytest.approx(u_cov, rel=2e-6)
            assert float(report["effective_rank"]) == pytest.approx(er, rel=2e-6)
            assert float(report["stable_rank"]) == pytest.approx(sr, rel=2e-6)
            checked += 1
        else:
            assert int(report["step"]) == (step // 3) * 3  # the last report is carried between due steps
    assert checked == 3


def test_shard_map_and_pmap_equal_single_device():
    n_dev = 8
    rng = np.random.default_rng(1)
    batches = [rng.normal(size=(n_dev * 5, DIM)).astype(np.float32) for _ in range(3)]
    mon = spectral_monitor(every=1, metrics=("effective_rank", "participation_ratio"))
    mon_ax = spectral_monitor(every=1, metrics=("effective_rank", "participation_ratio"), axis_name="data")

    single = mon.init(DIM)
    for t, b in enumerate(batches):
        single, ref = mon.update(single, b, t)

    mesh = jax.make_mesh((n_dev,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    step_sm = jax.jit(jax.shard_map(mon_ax.update, mesh=mesh, in_specs=(P(), P("data"), P()), out_specs=(P(), P())))
    st = mon_ax.init(DIM)
    for t, b in enumerate(batches):
        st, rep_sm = step_sm(st, jnp.asarray(b), t)

    step_pm = jax.pmap(mon_ax.update, axis_name="data", in_axes=(None, 0, None), out_axes=(None, None))
    st = mon_ax.init(DIM)
    for t, b in enumerate(batches):
        st, rep_pm = step_pm(st, b.reshape(n_dev, -1, DIM), t)

    for rep in (rep_sm, rep_pm):
        assert int(rep["n_rows"]) == int(ref["n_rows"]) == 3 * n_dev * 5
        for k in ("logdet", "u_cov", "effective_rank", "participation_ratio"):
            assert float(rep[k]) == pytest.approx(float(ref[k]), rel=1e-6), k


def test_decay_and_bad_arguments():
    mon = spectral_monitor(every=1, decay=0.5, metrics=())
    st = mon.init(3)
    x = np.eye(3, dtype=np.float32)
    st, _ = mon.update(st, x, 0)
    st, _ = mon.update(st, 2 * x, 1)
    np.testing.assert_allclose(np.asarray(sj.gram.finalize(st.gram)), 1.5 * np.eye(3), rtol=1e-12)
    with pytest.raises(ValueError, match="unknown metrics"):
        spectral_monitor(metrics=("rankme",))
    with pytest.raises(ValueError, match="every"):
        spectral_monitor(every=0)
    with pytest.raises(ValueError, match="activations"):
        mon.update(mon.init(4), x, 0)


def test_stochastic_path_within_its_error_of_exact():
    """method="stochastic" (SLQ on the accumulated Gram) lands near the exact monitor on a power-law spectrum."""
    rng = np.random.default_rng(3)
    dim = 96
    x = (rng.normal(size=(2000, dim)) * np.arange(1, dim + 1) ** -0.5).astype(np.float32)
    metrics = ("effective_rank", "participation_ratio", "spectral_entropy")
    ex = spectral_monitor(every=1, metrics=metrics, method="exact", normalize=False)
    st = spectral_monitor(every=1, metrics=metrics, method="stochastic", normalize=False, num_probes=64,
                          num_steps=40)
    _, r_ex = ex.update(ex.init(dim), x, 0)
    _, r_st = jax.jit(st.update)(st.init(dim), x, 0)
    # 64 Rademacher probes, 40 Lanczos steps on a 96-dim power-law spectrum: Hutchinson-type relative
    # standard errors are ~sqrt(2/64)/sqrt(d_eff) ~ 2-3%; allow 10% (>3 sd) and 2% for the log-det
    for k in metrics:
        assert float(r_st[k]) == pytest.approx(float(r_ex[k]), rel=0.10), k
    assert float(r_st["logdet"]) == pytest.approx(float(r_ex["logdet"]), rel=0.02)
