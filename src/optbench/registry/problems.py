"""What can be optimized: toy functions with known minima, small MLPs on deterministic synthetic data, the
data set problems (``registry.datasets``) and the user's own (``registry.modelproblem``).

The problem protocol (the one place it is written down):

* a *factory* makes one run's problem. Registered under a name (``problems.add``, the decorator, or
  ``optbench.register_problem``) or named by import path (``--problem 'pkg.mod:factory(arg=1)'``, behind
  ``--allow-imports``), it is called with the spec's keyword arguments after ``torch.manual_seed(seed)``;
  a built-in factory also gets ``device`` and ``init, loss, seed, steps, batch_size`` (toys: ``device``
  only), a user's factory those of ``device, seed, steps, batch_size`` it declares;
* it returns a ``Problem``: its ``name``, its parameters (``params``; ``size`` counts them), built for the
  seed and the init; ``loss(step)``, the training loss of step t's batch (the same batch for the same seed
  and step, so runs are deterministic; called again for the same step by LBFGS); optionally held-out data,
  evaluated by ``evaluate()`` every ``eval_every`` steps (loss and accuracy); ``param_groups`` for the
  optimizer; ``coords()`` for a toy's point. A user's factory returns a ``ModelProblem`` (an nn.Module
  factory, the training data, a loss function, optional validation data and metric): optbench wraps the
  factory (``registry.userfactory``) and asks what it returns to build itself for the run's seed, init,
  loss and device (``Problem.for_run``).

Every problem takes keyword arguments in spec syntax, e.g. ``quadratic(scale=3)``,
``rosenbrock(x0=(-1.5, 2.0))``, ``mlp-classification(width=32, depth=4, activation='tanh')``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from optbench.errors import NotApplicable, OptbenchError
from optbench.registry import activations
from optbench.registry.base import Entry, Registry
from optbench.registry.imports import is_import_path
from optbench.registry.inits import apply_init
from optbench.registry.losses import make_loss
from optbench.registry.userfactory import CUSTOM_LOSS, imported_entry
from optbench.spec import Spec, parse_spec

# The problems on real data are a module of their own that adds itself when the registry is first read.
problems = Registry("problem", providers=("optbench.registry.datasets",))


class Problem:
    """Base of every problem (the protocol is in the module docstring): subclasses set ``name`` and
    ``params`` and implement ``loss`` (and ``evaluate`` where ``eval_every`` is set)."""

    name = "problem"
    eval_every: int | None = None  # evaluate the held-out split every N steps (MLPs)
    curvature: float | None = None  # Hessian eigenvalue where it is constant (the quadratic): bound = 2/L

    def __init__(self):
        self.params: list[torch.Tensor] = []

    @property
    def size(self) -> int:
        """Scalar parameters, trainable or not."""
        return sum(p.numel() for p in self.params)

    def for_run(self, name: str, *, init: str, loss: str, **run) -> Problem:
        """This problem built for one run (a user's factory returned it): a ``ModelProblem`` builds its model
        and batches for the run's seed, init, loss and device; a Problem that came built is used as it is."""
        if init != "default" or loss != CUSTOM_LOSS:
            raise NotApplicable(
                f"problem {name!r} returns a built Problem: --init and --loss do not apply to it"
            )
        return self

    def param_groups(self, lr: float, head_lr_scale: float = 1.0, freeze: int = 0) -> list[dict]:
        if head_lr_scale != 1.0 or freeze:
            raise NotApplicable(f"{self.name} has no layers: --head-lr-scale/--freeze apply to MLP problems")
        return [{"params": self.params, "lr": lr}]

    def loss(self, step: int) -> torch.Tensor:  # the training loss of this step's minibatch
        raise NotImplementedError

    def evaluate(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def coords(self) -> torch.Tensor | None:
        """The parameter vector of a 1-D/2-D toy problem (for trajectories); None for MLPs."""
        return None

    @property
    def trainable(self) -> list[torch.Tensor]:
        return [p for p in self.params if p.requires_grad]

    def sharpness_loss(self) -> Callable[[tuple[torch.Tensor, ...]], torch.Tensor]:
        """The training loss on a fixed evaluation batch as a pure function of the ``trainable`` tensors (in
        that order): the loss surface whose Hessian's top eigenvalue ``engine.sharpness`` measures."""
        raise NotApplicable(
            f"problem {self.name!r} has no fixed evaluation batch: its sharpness is undefined"
        )


# ------------------------------------------------------------------------------------------ toy functions


class ToyProblem(Problem):
    """A scalar function of a 1-D or 2-D point; the point is the only parameter.

    ``fn`` is written over the last dimension: a point [d] gives a 0-dim loss, a stack of points [C, d] the
    C losses, each computed by the same operations in the same order (the batched engine runs it so).
    """

    def __init__(self, name: str, fn, x0, device: str, curvature: float | None = None):
        super().__init__()
        self.name, self.fn, self.curvature = name, fn, curvature
        self.x = torch.tensor(x0, dtype=torch.float32, device=device).reshape(-1).requires_grad_(True)
        self.params = [self.x]

    def loss(self, step: int) -> torch.Tensor:
        return self.fn(self.x)

    def coords(self) -> torch.Tensor:
        return self.x

    def sharpness_loss(self):
        # The function itself (there is no data), in float64: curvature terms such as Rosenbrock's
        # 2 - 400(y - x^2) + 800x^2 cancel, and float32 would round them by up to 1e-3 of the result.
        return lambda params: self.fn(params[0].double())


# The toy functions, over the last dimension of x (one point [d] or a stack [C, d]); both engines use them.


def quadratic_loss(x: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
    """(scale·x)^2 summed over the point's coordinates."""
    return ((scale * x) ** 2).sum(-1)


def rosenbrock_loss(x: torch.Tensor, a: float = 1.0, b: float = 100.0) -> torch.Tensor:
    """(a - x)^2 + b(y - x^2)^2 of the point (x, y)."""
    u, v = x[..., 0], x[..., 1]
    return (a - u) ** 2 + b * (v - u**2) ** 2


def rastrigin_loss(x: torch.Tensor, A: float = 10.0) -> torch.Tensor:
    """A·n + Σ(x_i^2 - A cos 2πx_i) over the point's n coordinates."""
    return A * x.shape[-1] + (x**2 - A * torch.cos(2 * math.pi * x)).sum(-1)


def beale_loss(x: torch.Tensor) -> torch.Tensor:
    """(1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2 of the point (x, y)."""
    u, v = x[..., 0], x[..., 1]
    return (1.5 - u + u * v) ** 2 + (2.25 - u + u * v**2) ** 2 + (2.625 - u + u * v**3) ** 2


def _point(x0, dims: int, name: str) -> tuple[float, ...]:
    values = (x0,) if isinstance(x0, (int, float)) else tuple(x0)
    if len(values) != dims or not all(isinstance(v, (int, float)) for v in values):
        raise OptbenchError(f"{name}: x0 must be {dims} number(s), got {x0!r}")
    return tuple(float(v) for v in values)


def _toy_kwargs(name: str, kwargs: dict, allowed: set[str]) -> None:
    unknown = set(kwargs) - allowed
    if unknown:
        raise OptbenchError(
            f"problem {name!r} has no option {sorted(unknown)[0]!r}; valid: {', '.join(sorted(allowed))}"
        )


@problems.register(
    "quadratic", "f(x) = (scale·x)^2 = 4x^2 from x0 = 2 (1-D); minimum 0 at x = 0", default_loss="none"
)
def quadratic(device: str, scale: float = 2.0, x0: float = 2.0, **rest):
    """f(x) = (scale·x)^2; defaults f(x) = (2x)^2 = 4x^2 from x0 = 2, so f(x0) = 16.

    Curvature L = f'' = 2·scale^2 = 8: plain SGD gives x_{t+1} = (1 - lr·L)·x_t, loss_t = 16(1 - 8·lr)^(2t),
    stable iff lr < 2/L = 0.25 (heavy-ball momentum m: iff lr < 2(1 + m)/L). Minimum 0 at x = 0.
    """
    _toy_kwargs("quadratic", rest, {"scale", "x0"})
    return ToyProblem(
        "quadratic",
        functools.partial(quadratic_loss, scale=scale),
        _point(x0, 1, "quadratic"),
        device,
        curvature=2 * scale**2,
    )


@problems.register(
    "rosenbrock", "(a - x)^2 + b(y - x^2)^2 from (-1.2, 1); minimum 0 at (1, 1)", default_loss="none"
)
def rosenbrock(device: str, a: float = 1.0, b: float = 100.0, x0=(-1.2, 1.0), **rest):
    """Rosenbrock's banana: f(x, y) = (a - x)^2 + b(y - x^2)^2, a = 1, b = 100.

    Standard start (-1.2, 1) with f = 24.2; global minimum f = 0 at (a, a^2) = (1, 1).
    """
    _toy_kwargs("rosenbrock", rest, {"a", "b", "x0"})
    return ToyProblem(
        "rosenbrock", functools.partial(rosenbrock_loss, a=a, b=b), _point(x0, 2, "rosenbrock"), device
    )


@problems.register(
    "rastrigin", "10·n + Σ(x_i^2 - 10 cos 2πx_i) from (2.2, -1.8); minimum 0 at 0", default_loss="none"
)
def rastrigin(device: str, A: float = 10.0, x0=(2.2, -1.8), **rest):
    """Rastrigin: f(x) = A·n + Σ (x_i^2 - A cos(2π x_i)), A = 10, n = 2; highly multimodal.

    Start (2.2, -1.8) (inside the usual [-5.12, 5.12]^2 box, between local minima); global minimum 0 at 0.
    """
    _toy_kwargs("rastrigin", rest, {"A", "x0"})
    return ToyProblem("rastrigin", functools.partial(rastrigin_loss, A=A), _point(x0, 2, "rastrigin"), device)


@problems.register(
    "beale",
    "(1.5-x+xy)^2+(2.25-x+xy^2)^2+(2.625-x+xy^3)^2 from (1, 1.5); min 0 at (3, 0.5)",
    default_loss="none",
)
def beale(device: str, x0=(1.0, 1.5), **rest):
    """Beale: f(x, y) = (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2.

    Start (1, 1.5); global minimum f = 0 at (3, 0.5).
    """
    _toy_kwargs("beale", rest, {"x0"})
    return ToyProblem("beale", beale_loss, _point(x0, 2, "beale"), device)


# ----------------------------------------------------------------------------------------------------- MLPs


@dataclass
class Dataset:
    x_train: torch.Tensor
    y_train: torch.Tensor  # class indices [N] or targets [N, out]
    x_val: torch.Tensor
    y_val: torch.Tensor
    classes: int | None = None  # None for regression
    meta: dict = field(default_factory=dict)


def make_regression_data(n_train: int, n_val: int, in_dim: int, noise: float, data_seed: int) -> Dataset:
    """y = sin(2·(x·a)) + 0.5·(x·b)^2/in_dim + noise·ε with x ~ N(0, I), fixed unit vectors a, b."""
    g = torch.Generator().manual_seed(data_seed)
    a = torch.randn(in_dim, generator=g)
    b = torch.randn(in_dim, generator=g)
    a, b = a / a.norm(), b / b.norm()
    x = torch.randn(n_train + n_val, in_dim, generator=g)
    y = torch.sin(2 * x @ a) + 0.5 * (x @ b) ** 2 + noise * torch.randn(n_train + n_val, generator=g)
    y = y.unsqueeze(1)
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def make_spirals(n_train: int, n_val: int, classes: int, noise: float, data_seed: int) -> Dataset:
    """``classes`` interleaved 2-D spiral arms (points shuffled with the data seed), N(0, noise) jitter."""
    g = torch.Generator().manual_seed(data_seed)
    n = n_train + n_val
    labels = torch.arange(n) % classes
    radius = torch.rand(n, generator=g)
    angle = labels * (2 * math.pi / classes) + radius * 2.5 * math.pi
    x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1) * 2
    x = x + noise * torch.randn(n, 2, generator=g)
    order = torch.randperm(n, generator=g)
    x, labels = x[order], labels[order]
    return Dataset(x[:n_train], labels[:n_train], x[n_train:], labels[n_train:], classes=classes)


def minibatch_index(n: int, batch_size: int, steps: int, seed: int) -> torch.Tensor:
    """The rows of each step's minibatch, [steps, batch]: drawn without replacement per epoch (an epoch's
    last partial batch dropped) from a generator seeded with the run's seed; a batch larger than the data
    is the whole data."""
    batch_size = min(batch_size, n)
    g = torch.Generator().manual_seed(seed)
    batches_per_epoch = n // batch_size
    epochs = -(-steps // batches_per_epoch) if steps else 0
    perms = [torch.randperm(n, generator=g)[: batches_per_epoch * batch_size] for _ in range(epochs)]
    return torch.cat(perms).view(-1, batch_size)[:steps] if perms else torch.empty(0, batch_size)


class MLPProblem(Problem):
    """An MLP of ``depth`` hidden layers (Linear + activation) and a Linear head on a fixed data set.

    Minibatches of ``batch_size`` are drawn without replacement per epoch from a generator seeded with the
    run's seed; all batch indices are made up front and moved to the device once.
    """

    def __init__(
        self,
        name: str,
        data: Dataset,
        *,
        width: int,
        depth: int,
        activation: str,
        loss: str,
        init: str,
        device: str,
        seed: int,
        steps: int,
        batch_size: int | None,
        eval_every: int,
    ):
        super().__init__()
        activations.check_activation(activation)
        batch_size = 64 if batch_size is None else batch_size
        self.name, self.activation, self.eval_every = name, activation, eval_every
        if width < 1 or depth < 0:
            raise OptbenchError(
                f"{name}: width must be >= 1 and depth >= 0, got width={width}, depth={depth}"
            )
        if batch_size < 1:
            raise OptbenchError(f"batch size must be >= 1, got {batch_size}")
        in_dim = data.x_train.shape[1]
        out_dim = data.classes or data.y_train.shape[1]
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(in_dim if i == 0 else width, width), activations.make_activation(activation)]
        layers.append(nn.Linear(width if depth else in_dim, out_dim))
        self.model = nn.Sequential(*layers)
        apply_init(self.model, init, activation)
        self.model.to(device)
        self.linears = [m for m in self.model if isinstance(m, nn.Linear)]
        self.params = list(self.model.parameters())

        self.loss_module, target_kind = make_loss(loss)
        self.loss_module.to(device)  # class weights live on the device too
        self.x_train, self.x_val = data.x_train.to(device), data.x_val.to(device)
        self.y_train = self._targets(data.y_train, data.classes, target_kind, loss).to(device)
        self.y_val = self._targets(data.y_val, data.classes, target_kind, loss).to(device)
        self.val_labels = data.y_val.to(device) if data.classes else None

        self.batch_index = minibatch_index(data.x_train.shape[0], batch_size, steps, seed).to(device)

    @staticmethod
    def _targets(y: torch.Tensor, classes: int | None, kind: str, loss: str) -> torch.Tensor:
        if classes is None:  # regression
            if kind != "dense":
                raise NotApplicable(
                    f"loss {loss!r} needs class targets; not applicable to a regression problem"
                )
            return y
        if kind == "index":
            return y
        return torch.nn.functional.one_hot(y, classes).float()

    def param_groups(self, lr: float, head_lr_scale: float = 1.0, freeze: int = 0) -> list[dict]:
        if not 0 <= freeze < len(self.linears):
            raise OptbenchError(
                f"--freeze {freeze}: must be in 0..{len(self.linears) - 1} for {len(self.linears)} layers"
            )
        for layer in self.linears[:freeze]:
            layer.requires_grad_(False)
        head = list(self.linears[-1].parameters())
        body = [p for p in self.model.parameters() if p.requires_grad and all(p is not h for h in head)]
        if head_lr_scale == 1.0:
            return [{"params": body + head, "lr": lr}]
        groups = [{"params": body, "lr": lr}] if body else []
        return groups + [{"params": head, "lr": lr * head_lr_scale}]

    def loss(self, step: int) -> torch.Tensor:
        index = self.batch_index[step]
        return self.loss_module(self.model(self.x_train[index]), self.y_train[index])

    sharpness_rows = 2048  # the fixed batch sharpness is measured on: the first rows of the training set

    def sharpness_loss(self):
        """The loss on the first ``sharpness_rows`` training rows (the whole default training sets), through
        ``torch.func.functional_call``; frozen layers keep the model's own weights."""
        names = [name for name, p in self.model.named_parameters() if p.requires_grad]
        x, y = self.x_train[: self.sharpness_rows], self.y_train[: self.sharpness_rows]

        def loss_of(params):
            out = torch.func.functional_call(self.model, dict(zip(names, params, strict=True)), (x,))
            return self.loss_module(out, y)

        return loss_of

    def evaluate(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            out = self.model(self.x_val)
            val_loss = self.loss_module(out, self.y_val)
            val_acc = (
                (out.argmax(1) == self.val_labels).float().mean() if self.val_labels is not None else None
            )
        self.model.train(was_training)
        return val_loss, val_acc


_MLP_OPTIONS = (
    "width",
    "depth",
    "activation",
    "n_train",
    "n_val",
    "noise",
    "batch_size",
    "eval_every",
    "data_seed",
)


@problems.register(
    "mlp-regression",
    "MLP (width 64, depth 2, relu) on y = sin(2x·a) + (x·b)^2/2 + noise, 8-D x, MSE",
    default_loss="mse",
    batched="mlp",
)
def mlp_regression(
    device,
    *,
    init,
    loss,
    seed,
    steps,
    batch_size=None,
    width=64,
    depth=2,
    activation="relu",
    in_dim=8,
    n_train=1024,
    n_val=256,
    noise=0.1,
    eval_every=10,
    data_seed=0,
):
    """Regression on 8-D Gaussian inputs; 1024 train / 256 held-out points from a fixed data seed."""
    return MLPProblem(
        "mlp-regression",
        make_regression_data(n_train, n_val, in_dim, noise, data_seed),
        width=width,
        depth=depth,
        activation=activation,
        loss=loss,
        init=init,
        device=device,
        seed=seed,
        steps=steps,
        batch_size=batch_size,
        eval_every=eval_every,
    )


@problems.register(
    "mlp-classification",
    "MLP (width 64, depth 2, relu) on 3 interleaved 2-D spirals, cross-entropy",
    default_loss="cross-entropy",
    batched="mlp",
)
def mlp_classification(
    device,
    *,
    init,
    loss,
    seed,
    steps,
    batch_size=None,
    width=64,
    depth=2,
    activation="relu",
    classes=3,
    n_train=1536,
    n_val=384,
    noise=0.05,
    eval_every=10,
    data_seed=0,
):
    """Spiral classification; 1536 train / 384 held-out points; val accuracy reported every ``eval_every``."""
    return MLPProblem(
        "mlp-classification",
        make_spirals(n_train, n_val, classes, noise, data_seed),
        width=width,
        depth=depth,
        activation=activation,
        loss=loss,
        init=init,
        device=device,
        seed=seed,
        steps=steps,
        batch_size=batch_size,
        eval_every=eval_every,
    )


# ------------------------------------------------------------------------------------------------ building


def problem_entry(name: str) -> Entry:
    """The registry entry of a problem name; for an import path ``pkg.mod:factory`` (of an allowed package
    only: ``registry.imports``), an entry made for the user's factory."""
    if is_import_path(name):
        return imported_entry(name)
    return problems.get(name)


def canonical_problem(text: str) -> str:
    spec = parse_spec(text, what="problem")
    name = problem_entry(spec.name).name  # an import path is checked (and imported) here
    return Spec(name, spec.kwargs).canonical()


def default_loss(problem: str) -> str:
    """The problem's own loss: a loss registry name, ``none`` (a toy is its own loss) or ``custom`` (the
    user's ``loss_fn``). Known without importing a user's package."""
    name = parse_spec(problem, what="problem").name
    if is_import_path(name):
        return CUSTOM_LOSS
    return problems.get(name).meta["default_loss"]


@functools.lru_cache(maxsize=256)
def is_toy(problem: str) -> bool:
    """The one test for "is this a toy problem" (a function of a point, no weights, no data, no loss)."""
    return default_loss(problem) == "none"


def build_problem(
    problem: str,
    *,
    init: str = "default",
    loss: str = "auto",
    device: str = "cpu",
    seed: int = 0,
    steps: int = 100,
    batch_size: int | None = None,
) -> Problem:
    """Instantiate a problem from its spec string (seed torch before calling: it draws the init)."""
    spec = parse_spec(problem, what="problem")
    entry = problem_entry(spec.name)
    loss = entry.meta["default_loss"] if loss in ("auto", entry.meta["default_loss"]) else loss
    if entry.meta["default_loss"] == "none":
        if parse_spec(init, what="init").name != "default":
            raise NotApplicable(f"problem {spec.name!r} has no weights: init must be 'default', got {init!r}")
        if loss != "none":
            raise NotApplicable(f"problem {spec.name!r} is its own loss: loss must be 'auto', got {loss!r}")
        if batch_size is not None:
            raise NotApplicable(f"problem {spec.name!r} has no data: --batch-size applies to MLP problems")
        try:
            return entry.factory(device, **spec.kw)
        except TypeError as err:
            raise OptbenchError(f"problem {spec.canonical()!r}: {err}") from None
    try:
        return entry.factory(
            device, init=init, loss=loss, seed=seed, steps=steps, batch_size=batch_size, **spec.kw
        )
    except TypeError as err:
        options = "" if entry.meta.get("user") else f"; options: {', '.join(_MLP_OPTIONS)}, in_dim/classes"
        raise OptbenchError(f"problem {spec.canonical()!r}: {err}{options}") from None


def problem_of(config, device: str | None = None) -> Problem:
    """The problem of a RunConfig as a run builds it (seed torch before calling: it draws the init);
    ``device`` overrides the config's (the batched engine's probes)."""
    return build_problem(
        config.problem,
        init=config.init,
        loss=config.loss,
        device=config.device if device is None else device,
        seed=config.seed,
        steps=config.steps,
        batch_size=config.batch_size,
    )
