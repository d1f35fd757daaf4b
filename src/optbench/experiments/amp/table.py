"""The table: amp.parquet's schema, the speed-ups and ceiling shares of every row, the warnings that explain
a row, the crossover width and the summary lines. Pure Python on measured rows: no torch here.

Per row, with ``base`` the fp32 step at the same width (TF32 off for ``speedup``, on for ``speedup_tf32``)::

    speedup = median_s(base) / median_s                     (fp32 rows: 1.0 against themselves)
    speedup_err = speedup * (iqr_s / 2 / median_s + iqr_s(base) / 2 / median_s(base))   half-IQRs, added
    device_speedup, graph_speedup: the same ratio of device_s, of graph_median_s
    ceiling_speedup = matmul rate of the row's precision / fp32 matmul rate (module ``ceiling``)
    ceiling_share = speedup / ceiling_speedup              0.88: the step got 88 % of what the matmuls allow
    matmul_share = flops_per_step / matmul rate / median_s  the step's time its matmuls take at the ceiling
                                                           rate; the rest (1 - share) is everything else
    peak_mem_ratio = peak_mem_bytes / peak_mem_bytes(base)  0.55: AMP saved 45 % of the peak memory

The crossover of a precision is the smallest width from which every measured width is faster than the
baseline (speed-up > 1): where AMP starts to pay on this device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

NOISY_IQR_SHARE = 0.10  # IQR > 10 % of the median: noisy (torch.utils.benchmark's own threshold)
MIN_BLOCKS = 5  # a row timed in fewer blocks has no meaningful IQR and is flagged
LAUNCH_BOUND_SHARE = 0.5  # device time < 50 % of the wall time: the host, not the GPU, sets the pace
OVERHEAD_SHARE_LIMIT = 0.5  # no device time: warn when the width-8 step is >= 50 % of the fp32 step
FLOOR_WIDTH = 8
NO_GAIN_CEILING = 1.1  # a ceiling below 1.1x: no speed-up to expect (below 1 / 1.1: a slowdown)
BASELINES = {"": False, "_tf32": True}  # column suffix -> the TF32 setting of the fp32 baseline
TIMES = {"": "median_s", "device_": "device_s", "graph_": "graph_median_s"}  # speed-up prefix -> time


def amp_schema():
    """Explicit schema of amp.parquet: one row per timed configuration (width, precision, TF32)."""
    import pyarrow as pa

    f64, i64, text = pa.float64(), pa.int64(), pa.string()
    columns = [
        ("width", i64), ("depth", i64), ("batch", i64), ("precision", text),
        ("tf32", pa.bool_()),  # were TF32 matmuls allowed while this row was timed
        ("median_s", f64), ("iqr_s", f64),  # wall time per step (eager); null when not measured
        ("n_blocks", i64), ("number_per_run", i64),  # blocks behind median and IQR, steps per block
        ("device_s", f64),  # CUDA: GPU time per step (events around graph replays); null on CPU
        ("graph_median_s", f64), ("graph_iqr_s", f64), ("graph_n_blocks", i64),  # --cuda-graphs
        ("graph_status", text),  # CUDA: "captured" or why capture failed
        ("speedup", f64), ("speedup_err", f64),  # over fp32 with TF32 off, same width
        ("speedup_tf32", f64), ("speedup_tf32_err", f64),  # over fp32 with TF32 on, same width
        ("device_speedup", f64), ("device_speedup_tf32", f64),
        ("graph_speedup", f64), ("graph_speedup_tf32", f64),
        ("graph_over_eager", f64),  # median_s / graph_median_s of this row
        ("matmul_tflops", f64),  # the ceiling matmul's rate in this row's precision
        ("matmul_share", f64),  # flops_per_step / matmul rate / median_s: the step's share in matmuls
        ("ceiling_speedup", f64), ("ceiling_speedup_tf32", f64),
        ("ceiling_share", f64), ("ceiling_share_tf32", f64),
        ("peak_mem_bytes", i64),  # CUDA: torch.cuda.max_memory_allocated; null on CPU
        ("peak_mem_ratio", f64),  # over the fp32 row of the same width
        ("device", text), ("device_name", text),
        ("compute_dtype", text),  # dtype of the model output seen during warm-up
        ("optimizer", text), ("flops_per_step", i64), ("achieved_tflops", f64),
        ("overhead_floor_s", f64),  # the width-8 step (fp32, TF32 off)
        ("final_loss_scale", f64),  # GradScaler's scale after timing (fp16 only)
        ("num_threads", i64), ("torch_version", text), ("cuda_version", text),
        ("warning", text),  # one explanation per line, null when none
    ]  # fmt: skip
    return pa.schema(columns)


def row_label(row: dict[str, Any]) -> str:
    """``width 256, fp16`` or ``width 256, fp32 (TF32 on)`` (plain fp32 on CPU): how warnings name their row."""
    what = row["precision"]
    if what == "fp32" and str(row.get("device", "cuda")).startswith("cuda"):
        what += f" (TF32 {'on' if row['tf32'] else 'off'})"
    return f"width {row['width']}, {what}"


def _ratio(a, b) -> float | None:
    return a / b if a and b and math.isfinite(a) and math.isfinite(b) else None


# -------------------------------------------------------------------------------------- the columns


def add_ratios(rows: list[dict[str, Any]], rates: dict[str, float]) -> None:
    """Speed-ups (wall, device, graph) over both fp32 baselines, their errors, the ceiling and its
    share, the peak-memory ratio; in place."""
    bases = {(r["width"], r["tf32"]): r for r in rows if r["precision"] == "fp32"}
    for row in rows:
        key = "tf32" if row["precision"] == "fp32" and row["tf32"] else row["precision"]
        row["matmul_tflops"] = rates[key] / 1e12 if rates.get(key) else None
        row["matmul_share"] = _ratio(_ratio(row.get("flops_per_step"), rates.get(key)), row.get("median_s"))
        row["graph_over_eager"] = _ratio(row.get("median_s"), row.get("graph_median_s"))
        for suffix, tf32 in BASELINES.items():
            base = bases.get((row["width"], tf32), {})
            for prefix, time in TIMES.items():
                row[f"{prefix}speedup{suffix}"] = _ratio(base.get(time), row.get(time))
            row[f"speedup{suffix}_err"] = _speedup_err(row, base, row[f"speedup{suffix}"])
            # fp32 rows: only TF32's gain over strict fp32 has a ceiling (the others are 1 or inverse)
            gains = row["precision"] != "fp32" or (row["tf32"] and not tf32)
            ceiling = _ratio(rates.get(key), rates.get("tf32" if tf32 else "fp32")) if gains else None
            row[f"ceiling_speedup{suffix}"] = ceiling
            row[f"ceiling_share{suffix}"] = _ratio(row[f"speedup{suffix}"], ceiling)
        mem_base = bases.get((row["width"], False)) or bases.get((row["width"], True)) or {}
        row["peak_mem_ratio"] = _ratio(row.get("peak_mem_bytes"), mem_base.get("peak_mem_bytes"))


def _speedup_err(row: dict[str, Any], base: dict[str, Any], speedup: float | None) -> float | None:
    if speedup is None or row.get("iqr_s") is None or base.get("iqr_s") is None:
        return None
    return speedup * (row["iqr_s"] / 2 / row["median_s"] + base["iqr_s"] / 2 / base["median_s"])


# ------------------------------------------------------------------------------------- the warnings


def add_warnings(rows: list[dict[str, Any]], facts: dict[str, Any]) -> None:
    """Append to each row's ``notes`` what explains its numbers; in place.

    ``facts``: ``on_cuda``, ``device_name``, ``tf32_capable``, ``floor_s`` (the width-8 step) and
    ``cpu_native`` ({precision: (native, why)}, CPU only). A slower AMP row that nothing else explains
    gets a note that says what is left (the step's work outside the matmuls).
    """
    fp32: dict[int, dict[str, Any]] = {}  # per width: the fp32 row, TF32 off where there is one
    for row in rows:
        if row["precision"] == "fp32" and (row["width"] not in fp32 or not row["tf32"]):
            fp32[row["width"]] = row
    for row in rows:
        base = fp32.get(row["width"], {})
        row["notes"] += _timing_notes(row)
        size, size_explains = _size_notes(row, facts, base.get("median_s"))
        precision, precision_explains = _precision_notes(row, facts)
        row["notes"] += size + precision
        if not (size_explains or precision_explains):
            row["notes"] += _slowdown_note(row, base)


def discard_wrong_dtypes(rows: list[dict[str, Any]]) -> None:
    """A row whose model output was not in its precision's dtype loses its timings (before any ratio):
    an fp32 timing must never be labelled fp16."""
    from optbench.registry.precision import AUTOCAST_DTYPES

    for row in rows:
        expected = AUTOCAST_DTYPES[row["precision"]] or "float32"
        if row.get("median_s") is None or row.get("compute_dtype") == expected:
            continue
        for column in ("median_s", "iqr_s", "device_s", "graph_median_s", "graph_iqr_s", "achieved_tflops"):
            row[column] = None
        row["notes"].append(
            f"the model output was {row.get('compute_dtype')}, not {expected}: autocast did not take effect, "
            "timing discarded"
        )


def _timing_notes(row: dict[str, Any]) -> list[str]:
    """Too few blocks and noisy timings are flagged."""
    if row.get("median_s") is None:
        return []
    notes = []
    if row["n_blocks"] < MIN_BLOCKS:
        notes.append(
            f"timed in {row['n_blocks']} block(s) only (< {MIN_BLOCKS}): its IQR means little; raise "
            "--min-run-time"
        )
    if row["iqr_s"] > NOISY_IQR_SHARE * row["median_s"]:
        notes.append(
            f"noisy: IQR is {row['iqr_s'] / row['median_s']:.0%} of the median ({row['n_blocks']} blocks); "
            "raise --min-run-time, use fewer --threads or quiet the machine"
        )
    return notes


def _size_notes(row: dict[str, Any], facts: dict[str, Any], fp32_s: float | None) -> tuple[list[str], bool]:
    """Launch-bound (device time vs wall time on CUDA; else the width-8 floor), and dims not multiples of 8.
    The flag: a note explains a slowdown."""
    notes = []
    wall, device = row.get("median_s"), row.get("device_s")
    if wall and device and device < LAUNCH_BOUND_SHARE * wall:
        notes.append(
            f"launch-bound: the GPU computed for {device / wall:.0%} of the step's wall "
            f"time ({device * 1e3:.3g} of {wall * 1e3:.3g} ms); the rest is the host issuing kernels "
            "(Python, autograd, optimizer, scaler), which no precision shortens: compare device time, "
            "or replay the step with --cuda-graphs"
        )
    elif wall and device is None and fp32_s and facts["floor_s"] >= OVERHEAD_SHARE_LIMIT * fp32_s:
        what = "GPU" if facts["on_cuda"] else "CPU"
        notes.append(
            f"too small to occupy the {what}: the fixed per-step overhead (the width-"
            f"{FLOOR_WIDTH} step, {facts['floor_s'] * 1e3:.3g} ms) is {facts['floor_s'] / fp32_s:.0%} of "
            f"the fp32 step ({fp32_s * 1e3:.3g} ms); expect little or no speed-up"
        )
    explains = bool(notes)
    if row["width"] % 8 or row["batch"] % 8:
        notes.append(
            f"width {row['width']} / batch {row['batch']}: not multiples of 8; fp16/bf16 tensor-core (GPU) "
            "and AMX (CPU) kernels want multiples of 8 and may fall back to slower ones"
        )
    return notes, explains


def _precision_notes(row: dict[str, Any], facts: dict[str, Any]) -> tuple[list[str], bool]:
    """TF32 without TF32 hardware; a 16-bit precision without native CPU kernels; a ceiling below 1.
    The flag: a note explains a slowdown."""
    notes = []
    if row["tf32"] and facts["on_cuda"] and not facts["tf32_capable"]:
        notes.append(
            f"TF32 was allowed, but {facts['device_name']} has no TF32 tensor cores (needs compute "
            "capability 8.0+): TF32 on and off measure the same fp32"
        )
    if row["precision"] == "fp32":
        return notes, False
    native, why = facts.get("cpu_native", {}).get(row["precision"], (True, ""))
    ceiling = row.get("ceiling_speedup") or row.get("ceiling_speedup_tf32")
    if not native:
        notes.append(why + ": expect a slowdown, not a speed-up")
    slow = ceiling is not None and ceiling < NO_GAIN_CEILING
    if slow:
        notes.append(f"on this device {_ceiling_words(row['precision'], ceiling)}")
    return notes, not native or slow


def _ceiling_words(precision: str, ceiling: float) -> str:
    """What a ceiling below ``NO_GAIN_CEILING`` means, in words."""
    if ceiling < 1 / NO_GAIN_CEILING:
        return f"{precision} matmuls run at {ceiling:.2f}x the fp32 rate (the ceiling): expect a slowdown, not a speed-up"
    return (
        f"{precision} matmuls run at about the fp32 rate ({ceiling:.2f}x, the ceiling): expect no speed-up "
        "from this precision here"
    )


def _slowdown_note(row: dict[str, Any], base: dict[str, Any]) -> list[str]:
    """A slower AMP row that nothing else explains: how much of its step is not matmuls, against fp32."""
    speedup = row.get("speedup") if row.get("speedup") is not None else row.get("speedup_tf32")
    if row["precision"] == "fp32" or speedup is None or speedup >= 1:
        return []
    ceiling = row.get("ceiling_speedup") or row.get("ceiling_speedup_tf32")
    allowed = f" although its matmuls allow {ceiling:.2f}x" if ceiling else ""
    outside = ""
    if row.get("matmul_share") is not None and base.get("matmul_share") is not None:
        mine = row["median_s"] * (1 - row["matmul_share"]) * 1e3
        theirs = base["median_s"] * (1 - base["matmul_share"]) * 1e3
        outside = f" ({mine:.3g} ms of this step against {theirs:.3g} ms of fp32's, beyond the FLOPs at the ceiling rate)"
    return [
        f"slower than fp32 ({speedup:.2f}x){allowed}: at this size the step's work outside the matmuls"
        f"{outside} -- autocast's casts, the scaler, the optimizer on fp32 weights, elementwise ops -- "
        "outweighs the faster matmuls"
    ]


def finish_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows with every schema column (None where not measured) and ``warning`` = their notes, one per line;
    and the grouped warning lines (each message once, naming its rows)."""
    columns = amp_schema().names
    grouped: dict[str, list[str]] = {}
    finished = []
    for row in rows:
        notes = list(dict.fromkeys(row.pop("notes")))
        for note in notes:
            grouped.setdefault(note, []).append(row_label(row))
        done = {name: row.get(name) for name in columns}
        done["warning"] = "\n".join(notes) if notes else None
        finished.append(done)
    return finished, [f"{', '.join(labels)}: {note}" for note, labels in grouped.items()]


# ------------------------------------------------------------------------------------- the summary


def crossover(points: Sequence[tuple[int, float | None]]) -> int | None:
    """The smallest width from which every measured width has speed-up > 1; None when the largest
    measured width is not faster. ``[(256, 0.7), (512, 1.2), (1024, 0.9), (2048, 1.5)]`` -> 2048."""
    measured = sorted((w, s) for w, s in points if s is not None and math.isfinite(s))
    found = None
    for width, speedup in reversed(measured):
        if speedup <= 1:
            break
        found = width
    return found


def summary(rows: list[dict[str, Any]], rates: dict[str, float]) -> dict[str, Any]:
    """The answer in a few lines, and the numbers behind it (``targets``) for scripts and the report."""
    lines: list[str] = []
    targets: dict[str, Any] = {"crossover": {}, "largest": {}, "graph_over_eager_smallest": {}}
    amp = sorted({r["precision"] for r in rows if r["precision"] != "fp32"}, key=["fp16", "bf16"].index)
    for precision in amp:
        mine = [r for r in rows if r["precision"] == precision]
        for suffix, tf32 in BASELINES.items():
            if not any(r["precision"] == "fp32" and r["tf32"] == tf32 for r in rows):
                continue
            base = "fp32 with TF32" if tf32 else "fp32 (TF32 off)" if any(r["tf32"] for r in rows) else "fp32"
            line, numbers = _baseline_line(mine, suffix, base)
            lines.append(line)
            name = "tf32" if tf32 else "fp32"
            targets["crossover"].setdefault(precision, {})[name] = numbers["crossover"]
            targets["largest"].setdefault(precision, {})[name] = numbers["largest"]
    lines += _memory_lines(rows) + _graph_lines(rows, targets)
    if rates:
        targets["matmul_tflops"] = {k: v / 1e12 for k, v in rates.items()}
    return {"lines": lines, "targets": targets}


def _baseline_line(rows: list[dict[str, Any]], suffix: str, base: str) -> tuple[str, dict[str, Any]]:
    precision = rows[0]["precision"]
    points = [(r["width"], r[f"speedup{suffix}"]) for r in rows]
    cross = crossover(points)
    measured = [r for r in rows if r[f"speedup{suffix}"] is not None]
    if not measured:
        return f"{precision} vs {base}: not measured", {"crossover": None, "largest": None}
    top = max(measured, key=lambda r: r["width"])
    smallest = min(r["width"] for r in measured)
    if cross is None:
        best = max(measured, key=lambda r: r[f"speedup{suffix}"])
        best_text = f"best {best[f'speedup{suffix}']:.2f}x at width {best['width']}"
        if best[f"speedup{suffix}"] > 1:
            where = f"faster only at some smaller widths ({best_text}), not at the largest"
        else:
            where = f"not faster at any width up to {top['width']} ({best_text})"
    elif cross == smallest:
        where = f"faster at every width measured ({smallest} to {top['width']})"
    else:
        batch = next(r["batch"] for r in rows if r["width"] == cross)
        where = f"pays from width {cross} (batch {batch}) on"
    line = f"{precision} vs {base}: {where}; at width {top['width']}: {top[f'speedup{suffix}']:.2f}x"
    ceiling, share = top[f"ceiling_speedup{suffix}"], top[f"ceiling_share{suffix}"]
    if ceiling is not None and ceiling < NO_GAIN_CEILING:
        line += f"; {_ceiling_words(precision, ceiling)}"
    elif ceiling is not None and share is not None:
        line += f" = {share:.0%} of the ceiling ({ceiling:.2f}x)"
    device = crossover([(r["width"], r[f"device_speedup{suffix}"]) for r in rows])
    if device is not None and device != cross:
        line += f"; on device time alone it pays from width {device}"
    largest = {"width": top["width"], "speedup": top[f"speedup{suffix}"], "ceiling": ceiling, "share": share}
    return line, {"crossover": cross, "largest": largest}


def _memory_lines(rows: list[dict[str, Any]]) -> list[str]:
    with_mem = [r for r in rows if r["precision"] != "fp32" and r.get("peak_mem_ratio") is not None]
    if not with_mem:
        return []
    width = max(r["width"] for r in with_mem)
    parts = [
        f"{r['precision']} {r['peak_mem_ratio']:.2f}x ({r['peak_mem_ratio'] - 1:+.0%})"
        for r in with_mem
        if r["width"] == width
    ]
    return [f"peak memory vs fp32 at width {width}: {', '.join(parts)}"]


def _graph_lines(rows: list[dict[str, Any]], targets: dict[str, Any]) -> list[str]:
    replayed = [r for r in rows if r.get("graph_over_eager") is not None]
    if not replayed:
        return []
    width = min(r["width"] for r in replayed)
    smallest = [r for r in replayed if r["width"] == width]
    for r in smallest:
        targets["graph_over_eager_smallest"][row_label(r).split(", ", 1)[1]] = r["graph_over_eager"]
    parts = ", ".join(f"{row_label(r).split(', ', 1)[1]} {r['graph_over_eager']:.2f}x" for r in smallest)
    return [f"CUDA graphs at width {width}: replaying the captured step is faster than eager by {parts}"]
