"""Every matmul in the library states its precision: jaxprs of the main entry points are walked and each
``dot_general`` must carry ``Precision.HIGHEST`` (on TPUs and TF32 GPUs the default precision would round
float32 operands to bfloat16 / TF32 and move a collapsed log-det by nats: experiments/bench_sigma.py).

A negative control checks that the walker does flag a default-precision product.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sigma_jax as sj
from sigma_jax import _split, estimators, gram, monitor, operators, spectral


def _subjaxprs(value):
    if isinstance(value, (tuple, list)):
        for v in value:
            yield from _subjaxprs(v)
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        yield value.jaxpr
    elif hasattr(value, "eqns"):
        yield value


def _dots(jaxpr):
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            yield eqn
        for param in eqn.params.values():
            for sub in _subjaxprs(param):
                yield from _dots(sub)


def _unstated(fn, *args):
    """(number of dot_generals, those whose precision is not HIGHEST on both operands) in fn's jaxpr."""
    with jax.enable_x64(True):
        closed = jax.make_jaxpr(fn)(*args)
    dots = list(_dots(closed.jaxpr))
    bad = [str(e.params.get("precision")) for e in dots if "HIGHEST" not in str(e.params.get("precision"))]
    return len(dots), bad


X = jnp.asarray(np.random.default_rng(0).normal(size=(300, 12)), jnp.float32)
KEY = jax.random.key(0)

ENTRY_POINTS = {
    "sigma (jit, band)": lambda x: sj.sigma(x, subset=200, key=KEY, validate=False),
    "sigma (mixed)": lambda x: sj.sigma(x, subset=200, key=KEY, validate=False, precision="mixed"),
    "sigma (stochastic)": lambda x: sj.sigma(x, key=KEY, method="stochastic", validate=False,
                                             estimator_options=dict(num_probes=4, num_steps=6, deflate=2, band_rows=8)),
    "gram streaming update": lambda x: gram.finalize(gram.update(gram.init(12), x)),
    "GramOperator products": lambda x: operators.gram_operator(x).matmat(jnp.ones((12, 3), jnp.float32)),
    "spectra": lambda x: spectral.spectra(x).centred,
    "vendi / kernel side": lambda x: spectral.vendi_score(x),
    "slq logdet (deflated)": lambda x: estimators.slq_estimator(estimators.logdet(1e-3), 4, 6, deflate=2)(
        KEY, operators.gram_operator(x)).value,
    "hutch++ trace": lambda x: estimators.hutchpp(12)(KEY, operators.gram_operator(x)).value,
    "eigen brackets": lambda x: estimators.eigen_brackets(6)(KEY, operators.gram_operator(x)).max_high,
    "split Gram + leverages": lambda x: (_split.split_gram(x), _split.leverages_f32(x, jnp.eye(12), n_sub=300)),
    "monitor refresh": lambda x: monitor.spectral_monitor(every=1).update(
        monitor.spectral_monitor(every=1).init(12, key=KEY), x, 0)[1],
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_every_matmul_states_highest_precision(name):
    n, bad = _unstated(ENTRY_POINTS[name], X)
    assert n > 0, f"{name}: no matmul found (the walker missed the nested jaxprs)"
    assert not bad, f"{name}: {len(bad)} of {n} matmuls at default precision: {sorted(set(bad))}"


def test_walker_flags_a_default_precision_matmul():
    n, bad = _unstated(lambda x: jnp.tanh(x.T @ x), X)  # negative control
    assert n == 1 and bad
