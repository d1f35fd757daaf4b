"""optbench: measure how PyTorch optimizers, LR schedulers, weight inits and mixed precision behave.

The Python API is loaded lazily so that ``bench --help`` does not import torch.
"""

__version__ = "0.1.0"

_LAZY = {
    "RunConfig": "optbench.spec",
    "run": "optbench.engine.reference",
    "lr_sweep": "optbench.experiments.sweep",
    "run_grid": "optbench.grid",
    "summary": "optbench.grid.summary",
    "init_report": "optbench.experiments.initprobe",
    "allow_imports": "optbench.registry.imports",
    "ModelProblem": "optbench.registry.modelproblem",
    "register_problem": "optbench.registry.modelproblem",
    "lr_find": "optbench.experiments.lrfind_model",
    "load": "optbench.store.results",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'optbench' has no attribute {name!r}")
