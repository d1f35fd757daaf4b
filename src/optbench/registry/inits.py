"""Weight-init schemes: ``default`` (PyTorch's own) plus every ``torch.nn.init`` scheme that applies to a
weight matrix, under its name without the trailing underscore (``xavier_uniform``, ``kaiming_normal``, ...).

Where a scheme takes a gain or nonlinearity and the spec does not give one, it is derived from the
problem's activation: ``xavier_*``/``orthogonal`` get ``gain=calculate_gain(activation)``, ``kaiming_*``
get ``nonlinearity=activation`` (and ``a`` = LeakyReLU's slope). Biases are zeroed under any non-default
scheme, so the weights alone set the statistics. Schemes with a required argument get a documented default
(``constant``: val=0.01, ``sparse``: sparsity=0.1).
"""

from __future__ import annotations

import inspect

from optbench.errors import NotApplicable, OptbenchError
from optbench.registry import activations
from optbench.registry.base import Registry
from optbench.spec import Spec, parse_spec

inits = Registry("init")

# The ten classic schemes of the PyTorch init tutorial, in the order reports list them and colour them.
CLASSIC_INITS = (
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "uniform",
    "normal",
    "constant",
    "orthogonal",
    "eye",
    "sparse",
)

# nn.init functions that do not fill a 2-D weight matrix.
_NOT_FOR_MATRICES = {"dirac_"}
# Values for arguments torch requires but a CLI user should not have to spell out.
_REQUIRED_DEFAULTS = {"constant_": {"val": 0.01}, "sparse_": {"sparsity": 0.1}}


def _torch_init_names() -> list[str]:
    import torch.nn as nn

    return sorted(
        n
        for n in dir(nn.init)
        if n.endswith("_")
        and not n.startswith("_")
        and n not in _NOT_FOR_MATRICES
        and callable(getattr(nn.init, n))
    )


def _first_doc_line(fn) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.strip().splitlines()[0] if doc.strip() else fn.__name__


def _make_scheme(fn_name: str):
    def apply(weight, activation: str, kwargs: dict):
        import torch.nn as nn

        fn = getattr(nn.init, fn_name)
        params = inspect.signature(fn).parameters
        unknown = set(kwargs) - (set(params) - {"tensor"})
        if unknown:
            valid = ", ".join(p for p in params if p not in ("tensor", "generator"))
            raise OptbenchError(
                f"init {fn_name[:-1]!r} has no argument {sorted(unknown)[0]!r}; valid: {valid or '(none)'}"
            )
        call = dict(_REQUIRED_DEFAULTS.get(fn_name, {}))
        if "gain" in params and "gain" not in kwargs:
            call["gain"] = activations.gain(activation)
        if "nonlinearity" in params and "nonlinearity" not in kwargs:
            nonlinearity = activations.gain_nonlinearity(activation)
            call["nonlinearity"] = nonlinearity
            if nonlinearity == "leaky_relu" and "a" not in kwargs:
                call["a"] = activations.LEAKY_RELU_SLOPE
        call.update(kwargs)
        if weight.dim() != 2 and fn_name in ("eye_", "sparse_"):
            raise NotApplicable(f"init {fn_name[:-1]!r} needs 2-D weights")
        fn(weight, **call)

    return apply


def _default(weight, activation, kwargs):  # PyTorch's own init: leave the module as constructed
    if kwargs:
        raise OptbenchError("init 'default' takes no arguments")


inits.add("default", _default, "PyTorch's own init (nn.Linear: kaiming_uniform with a=sqrt(5))")
for _name in _torch_init_names():
    import torch.nn as _nn  # noqa: E402  (registry needs torch here; the CLI imports inits lazily)

    inits.add(
        _name[:-1], _make_scheme(_name), f"nn.init.{_name}: {_first_doc_line(getattr(_nn.init, _name))}"
    )


def canonical_init(text: str) -> str:
    spec = parse_spec(text, what="init")
    return Spec(inits.canonical_name(spec.name), spec.kwargs).canonical()


def init_weight(weight, spec: str | Spec, activation: str = "relu") -> None:
    """Fill one weight tensor in place with the scheme named by ``spec``."""
    spec = parse_spec(spec, what="init") if isinstance(spec, str) else spec
    inits.get(spec.name).factory(weight, activation, spec.kw)


def apply_init(model, spec: str | Spec, activation: str = "relu") -> None:
    """Apply an init scheme to every nn.Linear in ``model`` (bias zeroed unless ``default``)."""
    import torch
    import torch.nn as nn

    spec = parse_spec(spec, what="init") if isinstance(spec, str) else spec
    entry = inits.get(spec.name)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                entry.factory(module.weight, activation, spec.kw)
                if entry.name != "default" and module.bias is not None:
                    module.bias.zero_()
