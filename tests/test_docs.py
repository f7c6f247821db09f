"""Every public function of the library has a docstring with a runnable example, and the examples pass."""

import doctest
import importlib
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

MODULES = ["sigma_jax.core", "sigma_jax.gram", "sigma_jax.spectral", "sigma_jax.bounds", "sigma_jax.monitor",
           "sigma_jax.analysis", "sigma_jax.datasets", "sigma_jax.collapse.strategies", "sigma_jax.collapse.toy",
           "sigma_jax.sharding",
           "sigma_jax.estimators._base", "sigma_jax.estimators.slq", "sigma_jax.estimators.trace",
           "sigma_jax.estimators.krylov", "sigma_jax.estimators.extreme", "sigma_jax.estimators.operators",
           "sigma_jax.estimators.adaptive", "sigma_jax.estimators.stochastic_sigma",
           "sigma_jax.encoders", "sigma_jax.encoders.minilm", "sigma_jax.encoders.bert",
           "sigma_jax.lm.data", "sigma_jax.lm.model", "sigma_jax.lm.sample", "sigma_jax.lm.train",
           "sigma_jax.collapse.pipeline", "sigma_jax.collapse.presets", "sigma_jax.collapse.report",
           "sigma_jax.cli_collapse"]

# Modules whose examples need an optional extra (pyproject `encoder`, `plots`): skipped without it,
# as their own tests are.
OPTIONAL_DEPS = {"sigma_jax.encoders.bert": ("safetensors",), "sigma_jax.collapse.report": ("matplotlib",)}


def _public_functions(mod):
    for name in getattr(mod, "__all__", []):
        obj = getattr(mod, name)
        if inspect.isfunction(obj) or (callable(obj) and hasattr(obj, "__wrapped__")):
            yield name, obj


@pytest.mark.parametrize("modname", MODULES)
def test_public_functions_have_examples_that_run(modname):
    for dep in OPTIONAL_DEPS.get(modname, ()):
        pytest.importorskip(dep, reason=f"{modname}'s examples need the optional `{dep}` extra; `make test` installs it")
    mod = importlib.import_module(modname)
    missing = [n for n, f in _public_functions(mod) if ">>>" not in (inspect.getdoc(f) or "")]
    assert not missing, f"{modname}: public functions without a docstring example: {missing}"
    globs = {"jax": jax, "jnp": jnp, "np": np, **vars(mod)}
    res = doctest.testmod(mod, globs=globs, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0
