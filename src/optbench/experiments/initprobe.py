"""The init report: how the std of a deep MLP's activations evolves with depth under each init scheme.

The classic experiment: a stack of ``depth`` ``nn.Linear(width, width, bias=False)`` layers (default 100 of
width 256), each followed by the activation, fed a batch of N(0,1) inputs (default 16 rows), float32::

    h_{-1} = x ~ N(0, 1)        h_k = act(W_k h_{k-1})        k = 0 .. depth-1

For each (init, activation, seed) we record per layer ``act_std``/``act_mean`` of h_k (after the
activation), ``grad_std`` (std of dL/dW_k for L = mean(h_{depth-1}), one backward pass) and ``finite``
(every element of h_k finite). Weights N(0,1) without activation grow the std by √256 = 16 per layer and
overflow float32 at layer 31; N(0, 1/256) keeps it at 1.

Beside the measurement, the mean-field theory (exact for a linear stack): with iid zero-mean weights of
variance v, the pre-activation variance obeys q_0 = v·width, q_k = v·width·E[act(z)²], z ~ N(0, q_{k-1}),
and the predicted ``theory_std`` is the std of act(z), z ~ N(0, q_k). Without activation this is
std_k = (σ·√width)^(k+1): 16^(k+1) for ``normal`` (σ = 1), 1 for ``normal(std=0.0625)``, xavier, kaiming
and orthogonal (gain 1). ``eye`` is exact (the activation applied k+1 times to x). Schemes without
zero-mean iid weights (``constant``, ``ones``, ``zeros``, ``uniform`` on [0, 1)) have no such prediction:
``theory_std`` is null.

The gain table sets ``nn.init.calculate_gain`` beside the gain measured on 10^6 N(0,1) samples:
std(x)/std(act(x)) (tanh: 5/3 ≈ 1.667 by formula, 1.592 measured) and the RMS version
std(x)/sqrt(E[act(x)²]) that Kaiming's derivation uses (ReLU: √2 by formula, 1.415 measured, while the
std ratio is 1.713 because ReLU's output has a non-zero mean).

Python API::

    report = init_report(["normal", "normal(std=0.0625)"], ["none", "relu"], out=Path("results/init"))
    report.layers            # one row per (init, activation, seed, layer)
    report.first_nonfinite   # first layer whose output is not finite, per (init, activation)
    report.gains             # calculate_gain vs measured gain, per activation
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optbench.engine.runtime import one_torch_thread
from optbench.errors import OptbenchError
from optbench.registry import activations as acts
from optbench.spec import parse_spec, split_top_level
from optbench.store.layout import GAINS_FILE, LAYERS_FILE

# ``default_inits`` adds normal(std=1/√width) to the classic ten: N(0, 1/width), the fixed ``normal``.
DEFAULT_ACTIVATIONS = ("none", "relu", "tanh")
LOSS = "mean of the last layer's output"  # what grad_std differentiates
GAIN_SAMPLES = 1_000_000  # N(0,1) samples behind each measured gain (std error of the ratio ~1e-3)

STD_PLOT_FILE = "std_vs_layer.png"
GAIN_PLOT_FILE = "gain_table.png"


def layers_schema():
    """Explicit schema of layers.parquet: one row per (init, activation, seed, layer)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("init", pa.string()),  # canonical init spec, e.g. "normal(std=0.0625)"
            ("activation", pa.string()),
            ("seed", pa.int64()),
            ("layer", pa.int64()),  # 0-based
            ("act_std", pa.float64()),  # std of the layer's output after the activation (NaN if not finite)
            ("act_mean", pa.float64()),
            ("grad_std", pa.float64()),  # std of dL/dW for L = mean(last output); NaN if not finite
            ("finite", pa.bool_()),  # every element of the layer's output is finite
            ("theory_std", pa.float64()),  # mean-field prediction; null where there is none
        ]
    )


def gains_schema():
    """Explicit schema of gains.parquet: one row per activation."""
    import pyarrow as pa

    return pa.schema(
        [
            ("activation", pa.string()),
            ("nonlinearity", pa.string()),  # the calculate_gain name the activation maps to
            ("calculate_gain", pa.float64()),  # nn.init.calculate_gain(nonlinearity)
            ("measured_gain", pa.float64()),  # std(x) / std(act(x)), x ~ N(0, 1)
            ("measured_rms_gain", pa.float64()),  # std(x) / sqrt(mean(act(x)^2))
            ("samples", pa.int64()),
        ]
    )


@dataclass
class InitReport:
    """What ``init_report`` measured and wrote."""

    layers: Any  # pandas.DataFrame, layers_schema()
    first_nonfinite: Any  # pandas.DataFrame: init, activation, first_nonfinite_layer (<NA>: always finite)
    gains: Any  # pandas.DataFrame, gains_schema()
    inits: list[str]
    activations: list[str]
    depth: int
    width: int
    batch: int
    seeds: int
    out: Path | None = None
    paths: dict[str, Path] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ validation


def default_inits(width: int = 256) -> list[str]:
    """The ten classic schemes plus ``normal(std=1/√width)`` (width 256: normal(std=0.0625))."""
    from optbench.registry.inits import CLASSIC_INITS

    return [*CLASSIC_INITS, f"normal(std={float(f'{1 / math.sqrt(width):.4g}')!r})"]


def resolve_inits(values: list[str] | None, width: int = 256) -> list[str]:
    """Canonical init specs from CLI values (each may hold several, comma-separated); duplicates dropped.

    Each spec is tried on a small weight so a bad argument fails here, before anything runs.
    """
    import torch

    from optbench.registry.inits import canonical_init, init_weight

    texts = [t for v in values for t in split_top_level(v)] if values else default_inits(width)
    if not texts:
        raise OptbenchError("no init given")
    specs: list[str] = []
    for text in texts:
        spec = canonical_init(text)
        try:
            init_weight(torch.empty(4, 4), spec, "none")
        except OptbenchError:
            raise
        except (TypeError, ValueError, RuntimeError) as err:  # torch rejects a value: normal(std="a")
            detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise OptbenchError(f"init {spec!r} cannot fill a weight: {detail}") from None
        if spec not in specs:
            specs.append(spec)
    return specs


def resolve_activations(values: list[str] | None) -> list[str]:
    """Activation names from CLI values (repeatable, comma-separated allowed); duplicates dropped."""
    names = [n for v in values for n in split_top_level(v)] if values else list(DEFAULT_ACTIVATIONS)
    if not names:
        raise OptbenchError("no activation given")
    return list(dict.fromkeys(acts.check_activation(n) for n in names))


def check_sizes(depth: int, width: int, batch: int, seeds: int) -> None:
    """Each size at least its minimum, and the stack within this machine's memory (8·w² bytes per layer:
    ``--width 200000`` would need 298 GiB a layer)."""
    from optbench.registry.limits import check_init_stack

    for name, value, least in (
        ("depth", depth, 1),
        ("width", width, 2),
        ("batch", batch, 1),
        ("seeds", seeds, 1),
    ):
        if value < least:
            raise OptbenchError(f"invalid {name}: {value} (must be >= {least})")
    check_init_stack(depth, width, batch)


# --------------------------------------------------------------------------------------------- measuring


def probe_stack(
    init: str, activation: str, *, depth: int = 100, width: int = 256, batch: int = 16, seed: int = 0
) -> list[dict[str, Any]]:
    """Build, initialise and run one stack; one row per layer (without ``theory_std``).

    ``torch.manual_seed(seed)`` comes first, then the input, then the layers, so every init and activation
    sees the same input for a given seed. Non-finite values are data: the loop never raises on them.
    """
    import torch
    from torch import nn

    from optbench.registry.inits import init_weight

    # batch-16 matmuls are too small to split; on a busy 2-core box the thread pool's synchronisation
    # made four 100-layer stacks 8x slower (5.7 s vs 0.7 s on one thread).
    with one_torch_thread():
        torch.manual_seed(seed)
        x = torch.randn(batch, width, dtype=torch.float32)
        layers = [nn.Linear(width, width, bias=False, dtype=torch.float32) for _ in range(depth)]
        with torch.no_grad():
            for layer in layers:
                init_weight(layer.weight, init, activation)
        act = acts.make_activation(activation)

        outputs = []
        h = x
        for layer in layers:
            h = act(layer(h))
            outputs.append(h.detach())
        h.mean().backward()  # the simple loss behind grad_std

        rows = []
        for k, (out, layer) in enumerate(zip(outputs, layers, strict=True)):
            out64 = out.double()  # float64 stats: the std of values near float32's max must not overflow
            grad = layer.weight.grad
            rows.append(
                {
                    "init": init,
                    "activation": activation,
                    "seed": seed,
                    "layer": k,
                    "act_std": float(out64.std()),
                    "act_mean": float(out64.mean()),
                    "grad_std": float(grad.double().std()) if grad is not None else math.nan,
                    "finite": bool(torch.isfinite(out).all()),
                }
            )
    return rows


def measure_rows(
    inits: list[str],
    activations: list[str],
    *,
    depth: int = 100,
    width: int = 256,
    batch: int = 16,
    seeds: int = 1,
) -> list[dict[str, Any]]:
    """The rows of layers.parquet for every (init, activation, seed), seeds 0..seeds-1."""
    rows: list[dict[str, Any]] = []
    for init in inits:
        for activation in activations:
            theory = theory_std(init, activation, depth=depth, width=width)
            for seed in range(seeds):
                for row in probe_stack(init, activation, depth=depth, width=width, batch=batch, seed=seed):
                    row["theory_std"] = theory[row["layer"]]
                    rows.append(row)
    return rows


def measure(inits: list[str], activations: list[str], **sizes: int):
    """``measure_rows`` as a DataFrame with the dtypes of ``layers_schema()`` (no files written)."""
    from optbench.store import table_from_rows

    return table_from_rows(measure_rows(inits, activations, **sizes), layers_schema()).to_pandas()


def first_nonfinite(layers):
    """Per (init, activation): the first layer whose output is not finite in any seed (<NA> if none)."""
    import pandas as pd

    bad = layers[~layers["finite"].astype(bool)]
    first = bad.groupby(["init", "activation"], sort=False)["layer"].min()
    table = layers[["init", "activation"]].drop_duplicates().reset_index(drop=True)
    table["first_nonfinite_layer"] = pd.array(
        [first.get((i, a)) for i, a in zip(table["init"], table["activation"], strict=True)], dtype="Int64"
    )
    return table


# ------------------------------------------------------------------------------------------------ theory


def _trunc_normal_var(mean: float, std: float, a: float, b: float) -> float | None:
    """Variance of N(mean, std²) truncated to [a, b]; None unless symmetric about 0."""
    if mean != 0 or a != -b or std <= 0:
        return None
    pdf = lambda t: math.exp(-t * t / 2) / math.sqrt(2 * math.pi)
    cdf = lambda t: 0.5 * (1 + math.erf(t / math.sqrt(2)))
    alpha, beta = a / std, b / std
    z = cdf(beta) - cdf(alpha)
    return std**2 * (1 + (alpha * pdf(alpha) - beta * pdf(beta)) / z - ((pdf(alpha) - pdf(beta)) / z) ** 2)


def weight_scale(init: str, activation: str, width: int) -> float | None:
    """s = Var(W)·fan_in for a width x width weight with iid zero-mean entries; None if not of that kind.

    ``normal(std=σ)``: σ²·width. xavier/kaiming/orthogonal: gain², with the gain ``optbench.inits`` derives
    from the activation (kaiming_normal + relu: 2). ``default`` (nn.Linear's kaiming_uniform(a=√5)): 1/3.
    For orthogonal weights s = gain² holds exactly (‖Wh‖ = gain·‖h‖), not just on average.
    """
    from torch import nn

    spec = parse_spec(init, what="init")
    kw, name = spec.kw, spec.name
    if name == "normal":
        return kw.get("std", 1.0) ** 2 * width if kw.get("mean", 0.0) == 0 else None
    if name == "uniform":
        a, b = kw.get("a", 0.0), kw.get("b", 1.0)
        return (b - a) ** 2 / 12 * width if a == -b else None
    if name == "trunc_normal":
        var = _trunc_normal_var(kw.get("mean", 0.0), kw.get("std", 1.0), kw.get("a", -2.0), kw.get("b", 2.0))
        return None if var is None else var * width
    if name in ("xavier_uniform", "xavier_normal", "orthogonal"):  # square: 2/(fan_in+fan_out) = 1/width
        return kw.get("gain", acts.gain(activation)) ** 2
    if name in ("kaiming_uniform", "kaiming_normal"):  # mirrors optbench.inits' derivation of the defaults
        nonlinearity = kw.get("nonlinearity", acts.gain_nonlinearity(activation))
        slope = acts.LEAKY_RELU_SLOPE if nonlinearity == "leaky_relu" and "nonlinearity" not in kw else 0.0
        return nn.init.calculate_gain(nonlinearity, kw.get("a", slope)) ** 2
    if name == "sparse":  # sparse_ zeroes ceil(sparsity·rows) entries of each column, the rest N(0, std²)
        zeros = min(math.ceil(kw.get("sparsity", 0.1) * width), width)
        return (1 - zeros / width) * kw.get("std", 0.01) ** 2 * width
    if name == "default":
        return 1 / 3
    return None  # constant, ones, zeros, eye: not random with zero mean


def _std_normal_grid(points: int = 8001):
    """Nodes z and weights w with sum(w·f(z)) ≈ E[f(Z)], Z ~ N(0, 1) (dense grid on [-10, 10])."""
    import numpy as np

    z = np.linspace(-10.0, 10.0, points)
    w = np.exp(-z * z / 2)
    return z, w / w.sum()


def theory_std(init: str, activation: str, *, depth: int = 100, width: int = 256) -> list[float | None]:
    """Predicted std of each layer's output for an N(0,1) input (see the module docstring).

    Linear stack with ``normal(std=σ)``: (σ·√width)^(k+1), e.g. σ = 1, width 256: 16, 256, 4096, ...
    ``eye`` is exact: h_k = act applied k+1 times to x. None per layer where there is no prediction or
    the prediction overflows float64.
    """
    import numpy as np
    import torch

    name = parse_spec(init, what="init").name
    act = acts.make_activation(activation)
    phi = lambda v: act(torch.from_numpy(v)).numpy()
    z, w = _std_normal_grid()

    def std_of(values) -> float:
        mean = float(np.sum(w * values))
        return math.sqrt(max(float(np.sum(w * values * values)) - mean * mean, 0.0))

    stds: list[float] = []
    if name == "eye":  # no randomness: the input goes through the activation again and again
        values = z
        for _ in range(depth):
            values = phi(values)
            stds.append(std_of(values))
    else:
        s = weight_scale(init, activation, width)
        if s is None or not s >= 0:  # also a nan or negative scale from odd arguments
            return [None] * depth
        if activation == "none":  # closed form (σ·√width)^(k+1) = s^((k+1)/2), in logs: no overflow error
            with np.errstate(divide="ignore", over="ignore"):
                stds = list(np.exp((np.arange(depth) + 1) / 2 * np.log(s)))
        else:
            q = s  # pre-activation variance of layer 0: s·E[x²], x ~ N(0, 1)
            with np.errstate(over="ignore", invalid="ignore"):
                for _ in range(depth):
                    values = phi(math.sqrt(q) * z) if math.isfinite(q) else np.full_like(z, math.nan)
                    stds.append(std_of(values))
                    q = s * float(np.sum(w * values * values))
    return [float(v) if math.isfinite(v) else None for v in stds]


# -------------------------------------------------------------------------------------------------- gains


def measured_gain(activation: str, *, samples: int = GAIN_SAMPLES, seed: int = 0) -> tuple[float, float]:
    """(std(x)/std(act(x)), std(x)/sqrt(mean(act(x)²))) on ``samples`` N(0,1) draws; tanh: (1.592, 1.592)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, generator=generator, dtype=torch.float64)
    y = acts.make_activation(activation)(x)
    return float(x.std() / y.std()), float(x.std() / y.pow(2).mean().sqrt())


def gain_table(activations: list[str], *, samples: int = GAIN_SAMPLES, seed: int = 0):
    """``nn.init.calculate_gain`` against the measured gains, one row per activation."""
    import pandas as pd

    rows = []
    for activation in activations:
        std_gain, rms_gain = measured_gain(activation, samples=samples, seed=seed)
        rows.append(
            {
                "activation": activation,
                "nonlinearity": acts.gain_nonlinearity(activation),
                "calculate_gain": acts.gain(activation),
                "measured_gain": std_gain,
                "measured_rms_gain": rms_gain,
                "samples": samples,
            }
        )
    return pd.DataFrame(rows, columns=gains_schema().names)


# ------------------------------------------------------------------------------------------------- report


def init_report(
    inits: list[str] | None = None,
    activations: list[str] | None = None,
    *,
    depth: int = 100,
    width: int = 256,
    batch: int = 16,
    seeds: int = 1,
    out: Path | None = None,
    plots: bool = True,
    command: str = "init-report",
) -> InitReport:
    """Measure every (init, activation, seed), write the Parquet files, plots and manifest into ``out``.

    Args:
        inits: init specs (``"normal(std=0.0625)"``); None = ``default_inits(width)``.
        activations: activation names; None = none, relu, tanh.
        depth, width, batch: the stack (100 layers of width 256, batch 16 of N(0,1) inputs by default).
        seeds: seeds 0..seeds-1 per (init, activation).
        out: results folder; None = a new ``results/init-report-<time>``.
        plots: also draw std_vs_layer.png and gain_table.png.
    """
    import pandas as pd

    from optbench import store

    check_sizes(depth, width, batch, seeds)
    inits = resolve_inits(inits, width)
    activations = resolve_activations(activations)
    out = Path(out) if out is not None else store.default_out("init-report")
    params = {
        "depth": depth,
        "width": width,
        "batch": batch,
        "seeds": seeds,
        "inits": inits,
        "activations": activations,
        "loss": LOSS,
    }
    manifest = store.start_manifest(out, command, extra=params)

    layer_table = store.table_from_rows(
        measure_rows(inits, activations, depth=depth, width=width, batch=batch, seeds=seeds), layers_schema()
    )
    gains = gain_table(activations)
    paths = {"layers": out / LAYERS_FILE, "gains": out / GAINS_FILE}
    store.write_parquet_atomic(layer_table, paths["layers"])
    store.write_parquet_atomic(
        store.table_from_rows(gains.to_dict("records"), gains_schema()), paths["gains"]
    )
    layers = layer_table.to_pandas()
    if plots:
        from optbench.figures import init as initplots

        seed_text = "seed 0" if seeds == 1 else f"seeds 0-{seeds - 1}"
        title = (
            f"Std of each layer's output: {depth} layers of width {width}, "
            f"batch {batch} of N(0,1) inputs, {seed_text}"
        )
        paths["std_vs_layer"] = initplots.plot_std_vs_layer(layers, out / STD_PLOT_FILE, title)
        paths["gain_table"] = initplots.plot_gain_table(gains, out / GAIN_PLOT_FILE)
    paths["manifest"] = out / store.MANIFEST_FILE

    table = first_nonfinite(layers)
    store.finish_manifest(
        out,
        manifest,
        files=sorted(p.name for p in paths.values()),
        first_nonfinite={
            f"{i} / {a}": None if layer is pd.NA else int(layer)
            for i, a, layer in table.itertuples(index=False)
        },
    )
    return InitReport(layers, table, gains, inits, activations, depth, width, batch, seeds, out, paths)
