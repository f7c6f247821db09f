"""Every public function of the library has a docstring with a runnable example, and the examples pass."""

import doctest
import importlib
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

def _all_modules():
    """Every module of the package (walked, so a new module cannot be forgotten); the CLI entry points too."""
    import pkgutil

    import sigma_jax

    names = ["sigma_jax"]
    for info in pkgutil.walk_packages(sigma_jax.__path__, "sigma_jax."):
        names.append(info.name)
    return sorted(names)


MODULES = _all_modules()

# Modules whose examples need an optional extra (pyproject `encoder`, `plots`): skipped without it,
# as their own tests are.
OPTIONAL_DEPS = {"sigma_jax.encoders.bert": ("safetensors",), "sigma_jax.collapse.report": ("matplotlib",),
                 "sigma_jax._io": ("matplotlib",)}


def _public_functions(mod):
    """Functions a module exports *and defines* (re-exports are checked in their home module)."""
    for name in getattr(mod, "__all__", []):
        obj = getattr(mod, name)
        if inspect.isfunction(obj) or (callable(obj) and hasattr(obj, "__wrapped__")):
            if getattr(obj, "__module__", mod.__name__) == mod.__name__:
                yield name, obj


@pytest.mark.parametrize("modname", MODULES)
def test_public_functions_have_examples_that_run(modname):
    for dep in OPTIONAL_DEPS.get(modname, ()):
        pytest.importorskip(dep, reason=f"{modname}'s examples need the optional `{dep}` extra; `make test` installs it")
    mod = importlib.import_module(modname)
    private = any(part.startswith("_") for part in modname.split("."))  # helpers: examples optional, run if any
    missing = [] if private else [n for n, f in _public_functions(mod) if ">>>" not in (inspect.getdoc(f) or "")]
    assert not missing, f"{modname}: public functions without a docstring example: {missing}"
    parent = importlib.import_module(modname.rpartition(".")[0]) if "." in modname else mod
    from jax.sharding import PartitionSpec

    globs = {"jax": jax, "jnp": jnp, "np": np, "P": PartitionSpec,
             **{k: v for k, v in vars(parent).items() if not k.startswith("__")}, **vars(mod)}
    res = doctest.testmod(mod, globs=globs, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0
    # a module with public functions must run at least one example
    assert res.attempted > 0 or private or not list(_public_functions(mod)), modname
