"""bench amp: the plan (sizes, memory cap, time budget), block timing, the table's arithmetic and warnings,
the crossover and summary, the figures, the CLI end to end; CUDA tests (graph replay = eager, the ceiling,
device time) skip without a GPU. No test asserts a measured speed: timings live in bench/test_amp_speed.py.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from optbench.errors import NotApplicable, OptbenchError
from optbench.experiments.amp import amp_benchmark, amp_schema, crossover, plan, table, timing
from optbench.experiments.amp import ceiling as amp_ceiling
from optbench.experiments.amp.plan import AmpPlan, fit_to_budget, make_plan, step_bytes
from optbench.experiments.amp.step import TrainingStep
from optbench.figures.amp import bars_figure, plot_title, scaling_figure
from optbench.registry.precision import AUTOCAST_DTYPES

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")

TINY = {"depth": 2, "batch": 32, "min_run_time_s": 0.02, "warmup_steps": 2, "num_threads": 1}


@pytest.fixture(autouse=True)
def small_ceiling(monkeypatch):
    """A 256^3 ceiling matmul for 0.02 s: the arithmetic is the same, the tests are faster."""
    monkeypatch.setattr(amp_ceiling, "CPU_N", 256)
    monkeypatch.setattr(amp_ceiling, "CEILING_RUN_TIME_S", 0.02)


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """One tiny CPU run shared by the tests that read its files. Width 20 is not a multiple of 8."""
    out = tmp_path_factory.mktemp("amp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(amp_ceiling, "CPU_N", 256)
        mp.setattr(amp_ceiling, "CEILING_RUN_TIME_S", 0.02)
        result = amp_benchmark("cpu", widths=[16, 20], precisions=["bf16", "fp16"], out=out, **TINY)
    return result, pd.read_parquet(out / "amp.parquet")


# --------------------------------------------------------------------------------------------- the API


@pytest.mark.slow
def test_parquet_has_the_explicit_schema_and_one_row_per_width_and_precision(cpu_run):
    result, frame = cpu_run
    assert list(frame.columns) == amp_schema().names
    assert len(frame) == 2 * 3  # fp32 is added as the baseline
    assert sorted(zip(frame["width"], frame["precision"], strict=True)) == sorted(
        (w, p) for w in (16, 20) for p in ("fp32", "fp16", "bf16")
    )
    assert (frame["device"] == "cpu").all() and (~frame["tf32"]).all()
    assert frame["peak_mem_bytes"].isna().all() and frame["device_s"].isna().all()  # CUDA only
    assert (frame["torch_version"] == torch.__version__).all()
    assert (frame["num_threads"] == 1).all()
    assert (frame["depth"] == 2).all() and (frame["batch"] == 32).all()


def test_every_row_is_timed_in_enough_blocks_for_an_iqr(cpu_run):
    """The issue's 'IQR 0.000' came from rows timed in one block; now every row has >= 5 blocks."""
    _, frame = cpu_run
    assert (frame["n_blocks"] >= table.MIN_BLOCKS).all()
    assert (frame["iqr_s"] > 0).all()


def test_each_row_ran_in_the_precision_it_is_labelled(cpu_run):
    _, frame = cpu_run
    for precision, dtype in zip(frame["precision"], frame["compute_dtype"], strict=True):
        assert dtype == (AUTOCAST_DTYPES[precision] or "float32")


def test_speedups_errors_and_ceiling_shares_follow_their_formulas(cpu_run):
    result, frame = cpu_run
    rates = result.ceiling_tflops
    assert set(rates) == {"fp32", "fp16", "bf16"} and all(v > 0 for v in rates.values())
    for _, group in frame.groupby("width"):
        base = group[group["precision"] == "fp32"].iloc[0]
        for _, row in group.iterrows():
            speedup = base["median_s"] / row["median_s"]
            assert row["speedup"] == pytest.approx(speedup)
            half_iqrs = row["iqr_s"] / 2 / row["median_s"] + base["iqr_s"] / 2 / base["median_s"]
            assert row["speedup_err"] == pytest.approx(speedup * half_iqrs)
            assert row["matmul_tflops"] == pytest.approx(rates[row["precision"]])
            matmul_s = row["flops_per_step"] / (rates[row["precision"]] * 1e12)
            assert row["matmul_share"] == pytest.approx(matmul_s / row["median_s"])
            if row["precision"] == "fp32":  # the baseline itself: no ceiling to reach
                assert math.isnan(row["ceiling_speedup"]) and math.isnan(row["ceiling_share"])
                continue
            assert row["ceiling_speedup"] == pytest.approx(rates[row["precision"]] / rates["fp32"])
            assert row["ceiling_share"] == pytest.approx(speedup / row["ceiling_speedup"])
    assert frame["speedup_tf32"].isna().all()  # no TF32 baseline on CPU


def test_no_slower_amp_row_is_left_unexplained(cpu_run):
    _, frame = cpu_run
    slower = frame[(frame["precision"] != "fp32") & (frame["speedup"] < 1)]
    assert slower["warning"].notna().all()


def test_only_fp16_rows_carry_a_loss_scale(cpu_run):
    _, frame = cpu_run
    assert (frame["final_loss_scale"].notna() == (frame["precision"] == "fp16")).all()


def test_dims_not_multiple_of_8_are_warned_by_row(cpu_run):
    result, frame = cpu_run
    by_width = {w: g["warning"].fillna("") for w, g in frame.groupby("width")}
    assert by_width[20].str.contains("not multiples of 8").all()
    assert not by_width[16].str.contains("not multiples of 8").any()
    line = next(w for w in result.warnings if "not multiples of 8" in w)
    assert line.startswith("width 20, fp32, width 20, bf16, width 20, fp16:")


def test_manifest_has_the_plan_ceiling_summary_and_files(cpu_run):
    result, _ = cpu_run
    manifest = json.loads((result.out / "manifest.json").read_text())
    assert manifest["command"] == "amp" and manifest["ended_at"] is not None
    assert manifest["amp"]["precisions"] == ["fp32", "bf16", "fp16"]
    assert manifest["amp"]["sizes"] == [[16, 32], [20, 32]]
    assert manifest["amp_ceiling"]["n"] == 256 and manifest["amp_ceiling"]["tflops"] == result.ceiling_tflops
    assert manifest["amp_summary"]["lines"] == result.summary and len(result.summary) == 2
    assert manifest["files"] == ["amp.parquet", "amp.png", "amp_scaling.png"]
    assert manifest["cpu"] == result.device_name  # one home for the environment: store.environment
    assert result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.scaling_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_training_step_trains_in_the_requested_precision(precision, dtype):
    step = TrainingStep("cpu", 16, 2, 8, precision, "sgd")
    before = [p.detach().clone() for p in step.parameters()]
    assert step.eager() == dtype
    assert step.scaler is None and step.loss.dtype == torch.float32
    assert all(not torch.equal(a, b) for a, b in zip(before, step.parameters(), strict=True))


def test_a_precision_the_device_cannot_do_is_recorded_not_faked(tmp_path, monkeypatch):
    from optbench.experiments.amp import step as amp_step

    def refuse_fp16(precision, device):
        if precision == "fp16":
            raise NotApplicable("fp16 autocast does not work on cpu (test)")

    monkeypatch.setattr(amp_step, "check_precision", refuse_fp16)
    result = amp_benchmark("cpu", widths=[16], precisions=["fp16"], out=tmp_path, plot=False, **TINY)
    fp16 = [r for r in result.rows if r["precision"] == "fp16"][0]
    assert fp16["median_s"] is None and fp16["speedup"] is None and fp16["compute_dtype"] is None
    assert "fp16 autocast does not work on cpu (test); not measured" in fp16["warning"]


def test_a_wrong_dtype_discards_the_timing_before_any_ratio():
    rows = [_row(64, "fp32", 2e-3), _row(64, "bf16", 1e-3, compute_dtype="float32")]
    table.discard_wrong_dtypes(rows)
    table.add_ratios(rows, {})
    assert rows[1]["median_s"] is None and rows[1]["speedup"] is None
    assert "autocast did not take effect, timing discarded" in rows[1]["notes"][0]


# -------------------------------------------------------------------------------------------- the plan


def test_cpu_defaults_are_the_small_sizes():
    p = make_plan("cpu", None, None, None, None, "auto", "adamw", 0.5, 3, False, None)
    assert p.sizes == ((256, 512), (512, 512), (1024, 512)) and p.depth == 3 and p.tf32_modes == (False,)
    assert p.precisions[:2] == ("fp32", "bf16") and p.budget_s == plan.BUDGET_S["cpu"]


def test_cuda_sizes_scale_the_batch_with_the_width_unless_given():
    assert plan._sizes("cuda", None, None) == tuple((w, 2 * w) for w in plan.CUDA_WIDTHS)
    assert plan._sizes("cuda", [512, 256], 64) == ((256, 64), (512, 64))
    assert plan._sizes("cpu", [64], None) == ((64, 512),)


def test_fp16_and_bf16_are_timed_once_and_compared_with_both_fp32s():
    configs = _plan(tf32_modes=(False, True)).configs
    assert [(c.precision, c.tf32, c.key) for c in configs] == [
        ("fp32", False, "fp32"),
        ("fp32", True, "tf32"),
        ("fp16", False, "fp16"),
        ("bf16", False, "bf16"),
    ]
    assert [c.tf32 for c in _plan(tf32_modes=(True,)).configs] == [True, True, True]


def test_step_bytes_is_the_documented_sum():
    params, acts = 3 * (300000**2 + 300000), 512 * 300000
    assert step_bytes(300000, 512, 3, "adamw", False) == 18 * params + 16 * acts + 36 * acts
    assert (
        step_bytes(64, 8, 1, "sgd", True)
        == step_bytes(64, 8, 1, "sgd", False) + 4 * (64 * 64 + 64) + 12 * 8 * 64
    )


def test_default_sizes_that_do_not_fit_are_dropped_and_named_sizes_refused(monkeypatch):
    monkeypatch.setattr(plan, "available_bytes", lambda device: 2 * step_bytes(512, 512, 3, "adamw", False))
    kept, notes = plan.fit_to_memory(_plan(device="cpu", auto_sizes=True, depth=3))
    assert kept.sizes == ((256, 512), (512, 512))
    assert len(notes) == 1 and notes[0].startswith("width 1024 (batch 512, depth 3) needs ~")
    with pytest.raises(OptbenchError, match=r"width 1024 \(batch 512, depth 3\) needs ~.* use a smaller"):
        plan.fit_to_memory(_plan(device="cpu", auto_sizes=False, depth=3))


H200_RATES = {"fp32": 51e12, "tf32": 340e12, "fp16": 635e12, "bf16": 658e12}  # the 8192^3 matmuls


def test_the_default_cuda_sweep_fits_its_budget_on_an_h200_and_shrinks_on_a_small_gpu():
    cuda_plan = _plan(device="cuda", sizes=tuple((w, 2 * w) for w in plan.CUDA_WIDTHS), depth=4)
    kept, notes, predicted = fit_to_budget(cuda_plan, H200_RATES, floor_s=2e-3)
    assert kept.sizes == cuda_plan.sizes and notes == [] and predicted < 60
    small = {"fp32": 8e12, "tf32": 8e12, "fp16": 60e12, "bf16": 8e12}  # a T4-like GPU
    kept, notes, predicted = fit_to_budget(cuda_plan, small, floor_s=2e-3)
    assert kept.sizes[-1][0] < 8192 and predicted <= 60
    assert notes[-1].startswith(
        "width 8192 (batch 16384) left out of the default sweep: timing it would take"
    )
    named = _plan(device="cuda", sizes=cuda_plan.sizes, depth=4, auto_sizes=False)
    assert fit_to_budget(named, small, floor_s=2e-3)[0].sizes == named.sizes  # named sizes always run


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tf32": "on"}, "TF32 is a CUDA matmul mode"),
        ({"tf32": "both"}, "TF32 is a CUDA matmul mode"),
        ({"tf32": "maybe"}, "unknown TF32 setting 'maybe'"),
        ({"precisions": ["fp8"]}, "unknown precision 'fp8'; valid: fp32, fp16, bf16"),
        ({"widths": [0]}, "invalid width: 0"),
        ({"widths": []}, "no widths given"),
        ({"widths": [64, 64]}, "duplicate width"),
        ({"widths": [300000]}, r"width 300000 \(batch 512, depth 3\) needs ~4.43 TiB"),
        ({"depth": 0}, "invalid depth: 0"),
        ({"batch": -1}, "invalid batch: -1"),
        ({"optimizer": "lion"}, "unknown optimizer 'lion'; valid: adamw, sgd"),
        ({"min_run_time_s": 0}, "invalid min run time: 0"),
        ({"min_run_time_s": float("nan")}, "invalid min run time: nan"),
        ({"min_run_time_s": float("inf")}, "invalid min run time: inf"),
        ({"warmup_steps": 0}, "invalid warm-up steps: 0"),
        ({"num_threads": 0}, "invalid thread count: 0"),
        ({"budget_s": -1.0}, "invalid time budget: -1.0"),
        ({"cuda_graphs": True}, "--cuda-graphs needs a CUDA device"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
    ],
)
def test_bad_input_is_rejected_before_anything_is_written(tmp_path, kwargs, message):
    out = tmp_path / "amp"
    with pytest.raises(OptbenchError, match=message):
        amp_benchmark(**{"device": "cpu", "widths": [16], "out": out, **kwargs})
    assert not out.exists()


# ------------------------------------------------------------------------------------------ the timing


class FakeClock:
    """``time.perf_counter`` that advances only when the fake step runs."""

    def __init__(self, step_s: float):
        self.now, self.step_s, self.calls = 0.0, step_s, 0

    def __call__(self) -> float:
        return self.now

    def step(self) -> None:
        self.now += self.step_s
        self.calls += 1


@pytest.mark.parametrize(
    ("step_s", "number", "n_blocks"),
    [
        (1e-3, 71, 8),  # 0.5 s / (7 blocks * 1 ms): 71 steps per block; 7 blocks are 0.497 s: one more
        (0.3, 1, 7),  # slower than a block: one step per block, still 7 blocks (2.1 s)
        (4.0, 1, 3),  # stops after 20 x min_run_time (10 s) with 3 blocks: flagged by the table
    ],
)
def test_time_blocks_fills_the_run_time_in_enough_blocks(monkeypatch, step_s, number, n_blocks):
    clock = FakeClock(step_s)
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    blocks = timing.time_blocks(clock.step, "cpu", 0.5, step_estimate_s=step_s)
    assert (blocks.number, blocks.n_blocks) == (number, n_blocks)
    assert blocks.median_s == pytest.approx(step_s) and blocks.iqr_s == pytest.approx(0.0, abs=1e-12)
    assert clock.calls == number * n_blocks


# ------------------------------------------------------------------------------------------- the table


def _row(width, precision, median, tf32=False, **extra):
    row = {
        "width": width,
        "batch": 2 * width,
        "precision": precision,
        "tf32": tf32,
        "median_s": median,
        "iqr_s": 0.02 * median if median else None,
        "n_blocks": 7,
        "compute_dtype": AUTOCAST_DTYPES[precision] or "float32",
        "flops_per_step": 6 * 2 * width * width * width * 4,
        "notes": [],
    }
    return row | extra


def _facts(**extra):
    return {"on_cuda": True, "device_name": "GPU", "tf32_capable": True, "floor_s": 1e-3} | extra


def test_ratios_against_both_fp32_baselines_and_the_ceiling():
    rows = [
        _row(8192, "fp32", 0.54, device_s=0.53, peak_mem_bytes=4000),
        _row(8192, "fp32", 0.09, tf32=True, device_s=0.088, peak_mem_bytes=4000),
        _row(8192, "fp16", 0.05, device_s=0.049, graph_median_s=0.049, peak_mem_bytes=2200),
    ]
    table.add_ratios(rows, H200_RATES)
    fp16 = rows[2]
    assert fp16["speedup"] == pytest.approx(0.54 / 0.05) and fp16["speedup_tf32"] == pytest.approx(
        0.09 / 0.05
    )
    assert fp16["device_speedup"] == pytest.approx(0.53 / 0.049)
    assert fp16["graph_speedup"] is None  # fp32 was not replayed
    assert fp16["graph_over_eager"] == pytest.approx(0.05 / 0.049)
    assert fp16["ceiling_speedup"] == pytest.approx(635 / 51) and fp16[
        "ceiling_speedup_tf32"
    ] == pytest.approx(635 / 340)
    assert fp16["ceiling_share"] == pytest.approx((0.54 / 0.05) / (635 / 51))
    assert fp16["peak_mem_ratio"] == pytest.approx(0.55) and fp16["matmul_tflops"] == pytest.approx(635)
    tf32 = rows[1]
    assert tf32["speedup"] == pytest.approx(0.54 / 0.09) and tf32["speedup_tf32"] == 1.0
    assert tf32["ceiling_speedup"] == pytest.approx(340 / 51) and rows[0]["speedup"] == 1.0


def _warned(rows, facts=None, rates=None):
    table.add_ratios(rows, rates or H200_RATES)
    table.add_warnings(rows, facts or _facts())
    return ["\n".join(r["notes"]) for r in rows]


def test_a_launch_bound_row_is_shown_as_such_not_as_amp_is_slower():
    fp32, fp16 = _warned([_row(256, "fp32", 1e-3, device_s=2e-4), _row(256, "fp16", 1.3e-3, device_s=1e-4)])
    assert "launch-bound: the GPU computed for 8% of the step's wall time" in fp16
    assert "launch-bound" in fp32 and "slower than fp32" not in fp16


def test_without_device_time_the_width_8_floor_flags_small_steps():
    notes = _warned([_row(16, "fp32", 1e-3), _row(16, "bf16", 1.2e-3)], _facts(on_cuda=False, floor_s=6e-4))
    assert all("too small to occupy the CPU" in n for n in notes)
    notes = _warned([_row(512, "fp32", 1e-2), _row(512, "bf16", 5e-3)], _facts(on_cuda=False, floor_s=6e-4))
    assert not any("too small" in n for n in notes)


def test_few_blocks_and_noise_are_flagged():
    (note,) = _warned([_row(64, "fp32", 1e-3, n_blocks=2, iqr_s=3e-4)])
    assert "timed in 2 block(s) only (< 5)" in note and "noisy: IQR is 30% of the median (2 blocks)" in note


def test_a_cpu_without_native_fp16_kernels_says_so_on_every_fp16_row():
    why = "this CPU has no native fp16 matmul kernels (no AVX512-FP16 or AMX-FP16 ...)"
    facts = _facts(on_cuda=False, tf32_capable=False, cpu_native={"fp16": (False, why)})
    rates = {"fp32": 1e11, "fp16": 1e10}  # fp16 matmuls at 0.1x: the AMD EPYC
    notes = _warned([_row(512, "fp32", 1e-2), _row(512, "fp16", 0.1)], facts, rates)
    assert why + ": expect a slowdown" in notes[1]
    assert "fp16 matmuls run at 0.10x the fp32 rate (the ceiling)" in notes[1]
    assert "slower than fp32" not in notes[1]  # explained already


def test_a_slowdown_nothing_else_explains_gets_the_time_outside_the_matmuls():
    rates = {"fp32": 1e14, "fp16": 4e14}
    rows = [_row(1024, "fp32", 2e-3), _row(1024, "fp16", 2.5e-3)]  # 51.5 GFLOP: 0.52 / 0.13 ms of matmuls
    notes = _warned(rows, _facts(on_cuda=False, floor_s=1e-4), rates)
    assert "slower than fp32 (0.80x) although its matmuls allow 4.00x" in notes[1]
    assert (
        "(2.37 ms of this step against 1.48 ms of fp32's, beyond the FLOPs at the ceiling rate)" in notes[1]
    )


def test_finished_rows_have_every_column_and_warnings_name_their_rows():
    rows = [_row(16, "fp32", 1e-3, notes=["a"]), _row(16, "fp16", 1e-3, notes=["a", "b"])]
    finished, lines = table.finish_rows(rows)
    assert list(finished[0]) == amp_schema().names and finished[1]["warning"] == "a\nb"
    assert lines == ["width 16, fp32 (TF32 off), width 16, fp16: a", "width 16, fp16: b"]


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ([(256, 0.7), (512, 1.2), (1024, 0.9), (2048, 1.5)], 2048),
        ([(256, 0.7), (512, 1.2), (1024, 1.1), (2048, 1.5)], 512),
        ([(256, 1.1), (512, 1.2)], 256),
        ([(256, 1.1), (512, 0.9)], None),
        ([(256, 0.5), (512, None), (1024, 2.0)], 1024),
        ([(256, None)], None),
        ([(512, 1.0), (256, 3.0)], None),  # unsorted input; exactly 1.0 does not pay
    ],
)
def test_crossover_is_the_smallest_width_from_which_amp_always_pays(points, expected):
    assert crossover(points) == expected


def _gpu_rows():
    """H200-like rows: launch-bound at 256, compute-bound at 8192 (device time = wall)."""
    rows = []
    for width, fp32, tf32, fp16 in (
        (256, 1.0e-3, 0.9e-3, 1.2e-3),
        (2048, 9e-3, 2.4e-3, 1.6e-3),
        (8192, 0.54, 0.09, 0.05),
    ):
        device = width >= 2048
        rows += [
            _row(
                width,
                "fp32",
                fp32,
                device_s=fp32 if device else 2e-4,
                graph_median_s=fp32 / (1 if device else 4),
            ),
            _row(width, "fp32", tf32, tf32=True, device_s=tf32 if device else 1e-4),
            _row(
                width,
                "fp16",
                fp16,
                device_s=fp16 if device else 8e-5,
                graph_median_s=fp16 / (1 if device else 6),
            ),
        ]
    table.add_ratios(rows, H200_RATES)
    return rows


def test_summary_says_where_amp_pays_and_how_close_to_the_ceiling():
    result = table.summary(_gpu_rows(), H200_RATES)
    strict, tf32 = result["lines"][:2]
    assert strict.startswith(
        "fp16 vs fp32 (TF32 off): pays from width 2048 (batch 4096) on; at width 8192: 10.80x"
    )
    assert "= 87% of the ceiling (12.45x); on device time alone it pays from width 256" in strict
    assert tf32.startswith(
        "fp16 vs fp32 with TF32: pays from width 2048 (batch 4096) on; at width 8192: 1.80x = 96%"
    )
    targets = result["targets"]
    assert targets["crossover"]["fp16"] == {"fp32": 2048, "tf32": 2048}
    assert targets["largest"]["fp16"]["fp32"]["share"] == pytest.approx(10.8 / (635 / 51))
    assert targets["graph_over_eager_smallest"] == {"fp32 (TF32 off)": 4.0, "fp16": 6.0}
    assert (
        result["lines"][-1]
        == "CUDA graphs at width 256: replaying the captured step is faster than eager by fp32 (TF32 off) 4.00x, fp16 6.00x"
    )


# ----------------------------------------------------------------------------------------- the figures


def _gpu_frame():
    rows = _gpu_rows()
    for row in rows:
        row.update(depth=4, device="cuda", device_name="NVIDIA H200", optimizer="adamw", torch_version="2.11.0",
                   cuda_version="13.0", num_threads=16)  # fmt: skip
    finished, _ = table.finish_rows(rows)
    return pd.DataFrame(finished)


def _lines_by_style(ax):
    return [(line.get_color(), line.get_linestyle()) for line in ax.get_lines() if line.get_label()[0] != "_"]


def test_scaling_figure_draws_both_baselines_with_ceilings_inside_the_limits():
    import matplotlib.pyplot as plt

    fig = scaling_figure(_gpu_frame())
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["over fp32 (TF32 off)", "over fp32 with TF32"]
    frame = _gpu_frame()
    for ax, suffix in zip(axes, ("", "_tf32"), strict=True):
        low, high = ax.get_ylim()
        drawn = frame[(frame["precision"] != "fp32") | (frame["tf32"] & (suffix == ""))]
        for column in (f"speedup{suffix}", f"device_speedup{suffix}", f"ceiling_speedup{suffix}"):
            values = drawn[column].dropna()
            assert ((values >= low) & (values <= high)).all(), column
        styles = _lines_by_style(ax)
        assert len(styles) == len(set(styles))  # no two lines share colour and style
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "fp16 / fp32 (TF32 off), ceiling 12.45x" in labels and "fp16 / fp32 with TF32, device" in labels
    assert len(labels) == len(set(labels)) <= 16
    plt.close(fig)


def test_bars_figure_and_titles_name_the_device(cpu_run):
    import matplotlib.pyplot as plt

    _, frame = cpu_run
    assert "CPU: " in plot_title(frame) and "GPU" not in plot_title(frame)
    gpu_title = plot_title(_gpu_frame())
    assert "GPU: NVIDIA H200" in gpu_title and "CUDA 13.0" in gpu_title and "batch 2 x width" in gpu_title
    fig = bars_figure(_gpu_frame())
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["fp32 with TF32 / fp32 (TF32 off)", "fp16 / fp32 (TF32 off)", "fp16 / fp32 with TF32"]
    assert fig.axes[0].get_ylim()[1] > _gpu_frame()["speedup"].max()
    plt.close(fig)


# --------------------------------------------------------------------------------------------- the CLI


def test_cli_cpu_end_to_end(cli, tmp_path):
    out = tmp_path / "amp"
    args = ["--device", "cpu", "--widths", "16,24", "--depth", "2", "--batch", "32", "--precision", "bf16"]
    result = cli("amp", *args, "--min-run-time", "0.02", "--threads", "1", "--out", out)
    assert result.exit_code == 0, result.output
    assert "CPU:" in result.stdout and "ceiling (256^3 matmul" in result.stdout
    assert "answer: bf16 vs fp32:" in result.stdout and "vs fp32" in result.stdout
    frame = pd.read_parquet(out / "amp.parquet")
    assert sorted(frame["precision"].unique()) == ["bf16", "fp32"]
    assert (frame.loc[frame["precision"] == "bf16", "compute_dtype"] == "bfloat16").all()
    assert (out / "amp.png").exists() and (out / "amp_scaling.png").exists()
    assert "amp: width 24 (batch 32), bf16" in result.stderr  # progress


def test_cli_precision_option_repeats_and_takes_commas(cli, tmp_path):
    out = tmp_path / "amp"
    args = ["--device", "cpu", "--widths", "16", "--depth", "1", "--batch", "8", "--precision", "bf16"]
    result = cli("amp", *args, "--precision", "fp32,bf16", "--min-run-time", "0.01", "--out", out)
    assert result.exit_code == 0, result.output
    assert list(pd.read_parquet(out / "amp.parquet")["precision"]) == ["fp32", "bf16"]


@no_cuda
def test_cli_cuda_without_cuda_is_one_line_and_exit_2(cli, tmp_path):
    out = tmp_path / "amp"
    result = cli("amp", "--device", "cuda", "--out", out)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: device 'cuda' needs CUDA")
    assert "Traceback" not in result.output and not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--widths", "10x"], "invalid --widths '10x'"),
        (["--widths", "0"], "invalid --widths '0'"),
        (["--widths", "300000"], "error: width 300000 (batch 512, depth 3) needs ~"),
        (["--batch", "many"], "invalid --batch 'many'"),
        (["--min-run-time", "nan"], "invalid min run time: nan"),
        (["--min-run-time", "inf"], "invalid min run time: inf"),
        (["--precision", "fp8"], "unknown precision 'fp8'"),
        (["--tf32", "on"], "TF32 is a CUDA matmul mode"),
        (["--tf32", "sometimes"], "unknown --tf32 'sometimes'"),
        (["--optimizer", "lion"], "unknown optimizer 'lion'"),
        (["--cuda-graphs"], "--cuda-graphs needs a CUDA device"),
    ],
)
def test_cli_bad_input_exit_2(cli, tmp_path, args, message):
    out = tmp_path / "amp"
    result = cli("amp", "--device", "cpu", "--out", out, *args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ CUDA


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_graph_replay_trains_exactly_like_eager_steps(precision, optimizer):
    """Same seed, same number of steps: the captured step replayed gives eager's loss and parameters."""
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    eager = TrainingStep("cuda", 256, 3, 64, precision, optimizer)
    graphed = TrainingStep("cuda", 256, 3, 64, precision, optimizer)
    start = [p.detach().clone() for p in graphed.parameters()]
    eager.warm_up(2)
    graphed.warm_up(2)
    graph = graphed.capture()  # runs 3 warm-up steps on a side stream, captures without running
    replays = 4
    for _ in range(3 + replays):
        eager.eager()
    for _ in range(replays):
        graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(graphed.loss, eager.loss, rtol=1e-4, atol=1e-6)
    for g, e, s in zip(graphed.parameters(), eager.parameters(), start, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
        assert not torch.equal(g, s)
    if precision == "fp16":
        assert graphed.scaler.get_scale() == eager.scaler.get_scale()


@pytest.mark.cuda
@cuda
def test_the_ceiling_and_device_time_are_positive_and_finite():
    rates, notes = amp_ceiling.measure_ceiling("cuda", ["fp32", "tf32", "fp16"], 1024)
    assert notes == [] and all(math.isfinite(r) and r > 0 for r in rates.values())
    step = TrainingStep("cuda", 512, 2, 256, "fp16", "adamw")
    step.warm_up(2)
    graph = step.capture()
    device_s = timing.device_time_s(graph, "cuda", count=5)
    assert math.isfinite(device_s) and 0 < device_s < 1.0


@pytest.mark.cuda
@cuda
def test_cuda_run_records_device_time_graphs_memory_and_the_dtypes(tmp_path):
    result = amp_benchmark(
        "cuda", widths=[256, 512], depth=2, tf32="both", min_run_time_s=0.05, cuda_graphs=True, out=tmp_path
    )
    frame = result.frame()
    assert sorted(frame["tf32"].unique()) == [False, True]
    assert (frame["graph_status"] == "captured").all(), frame["graph_status"].tolist()
    assert (frame["device_s"] > 0).all() and (frame["graph_median_s"] > 0).all()
    assert (frame["peak_mem_bytes"] > 0).all() and (frame["n_blocks"] >= table.MIN_BLOCKS).all()
    assert (frame["device_name"] == torch.cuda.get_device_name(0)).all()
    for precision, dtype in zip(frame["precision"], frame["compute_dtype"], strict=True):
        assert dtype == (AUTOCAST_DTYPES[precision] or "float32")
    assert (frame.loc[frame["precision"] == "fp16", "final_loss_scale"] > 0).all()
    assert frame["speedup_tf32"].notna().all() and frame["ceiling_speedup"].notna().all()
    assert any(line.startswith("CUDA graphs at width 256") for line in result.summary)


def _plan(**changes) -> AmpPlan:
    base = {
        "device": "cpu",
        "sizes": ((256, 512), (512, 512), (1024, 512)),
        "depth": 3,
        "precisions": ("fp32", "fp16", "bf16"),
        "tf32_modes": (False,),
        "optimizer": "adamw",
        "min_run_time_s": 0.5,
        "warmup_steps": 3,
        "cuda_graphs": False,
        "auto_sizes": True,
        "budget_s": 60.0,
    }
    return AmpPlan(**(base | changes))


def test_printed_gpu_tables_fit_80_columns_without_truncation(capsys, tmp_path):
    from optbench.cli.amp import print_result
    from optbench.experiments.amp.benchmark import AmpResult

    rows = _gpu_rows() + [_row(w, "bf16", 1e-3, device_s=1e-3) for w in (256, 2048, 8192)]
    table.add_ratios(rows, H200_RATES)
    for row in rows:
        row.update(depth=4, device="cuda", optimizer="adamw", peak_mem_bytes=50 * 2**30)
    table.add_ratios(rows, H200_RATES)  # again: the peak-memory ratios
    finished, warnings = table.finish_rows(rows)
    result = AmpResult(
        out=tmp_path, rows=finished, device="cuda", device_name="NVIDIA H200", torch_version="2.11.0",
        cuda_version="13.0", num_threads=16, tf32_modes=(False, True), ceiling_n=8192,
        ceiling_tflops={k: v / 1e12 for k, v in H200_RATES.items()}, summary=["a line"], warnings=warnings,
    )  # fmt: skip
    print_result(result)
    printed = capsys.readouterr().out
    table_lines = [
        line for line in printed.splitlines() if line.split()[:1] in (["256"], ["2048"], ["8192"], ["width"])
    ]
    assert len(table_lines) == 2 * (1 + 4 * 3)  # two tables: header + 12 rows each
    assert all(len(line) <= 80 and "…" not in line for line in table_lines)
    assert "10.80x" in printed and "87%" in printed and "graph ms" in printed and "6.00x" in printed
    assert "memory: peak memory / fp32's" in printed
