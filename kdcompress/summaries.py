"""Text summaries of a validation report: the rows and Markdown that ``validation.md``, the run
report and the terminal tables share, so the three never disagree."""

from __future__ import annotations

from kdcompress.artifacts import (
    PREDICTION_ERROR_LIMIT,
    LatencyRow,
    LatencyStats,
    ParityReport,
    ValidationReport,
)


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def validation_summary(report: ValidationReport) -> tuple[list[str], list[list[str]]]:
    """Header and one row per model: size, memory, latency, throughput, speedup, quality."""
    tasks = list(dict.fromkeys(task for m in report.models for task in m.scores))  # suite order
    seq_lens = sorted({row.seq_len for row in report.latency})
    batches = sorted({row.batch for row in report.latency})
    first, widest, longest = batches[0], batches[-1], seq_lens[-1]
    compared = report.teacher_export is not None
    header = [
        "model",
        "quantization",
        "size",
        "peak RSS (model)",
        *(f"p50 ms seq {s}" for s in seq_lens),
        f"p90 ms seq {longest}",
        *([f"sentences/s batch {widest}"] if widest > first else []),
        f"speedup vs {report.reference}",
        *tasks,
        *(["retention"] if compared and tasks else []),
    ]
    rows = []
    for model in report.models:
        p90 = report.stats(model.name, first, longest)
        memory = model.memory
        throughput = report.p50(model.name, widest, longest)
        speedup = report.speedup(first, longest, model.name)
        rows.append(
            [
                model.name,
                model.quantization,
                _mib(model.size_bytes),
                f"{memory.peak_mib:.0f} MiB ({memory.model_mib:.0f})" if memory else "",
                *(_ms(report.p50(model.name, first, s)) for s in seq_lens),
                _ms(p90.p90_ms if p90 else None),
                *(
                    [f"{widest * 1000 / throughput:.1f}" if throughput else ""]
                    if widest > first
                    else []
                ),
                _speedup(speedup, report.speedup_rounds(first, longest, model.name))
                if model.name != report.reference
                else _speedup(speedup, []),
                *(f"{model.scores[t]:.3f}" if t in model.scores else "" for t in tasks),
                *(
                    [f"{model.retention:.1%}" if model.retention is not None else ""]
                    if compared and tasks
                    else []
                ),
            ]
        )
    return header, rows


def _speedup(speedup: float | None, rounds: list[float]) -> str:
    """``7.52x (7.31-7.70)``: the speedup and, in brackets, its range over the rounds."""
    if not speedup:
        return ""
    spread = f" ({min(rounds):.2f}-{max(rounds):.2f})" if len(rounds) > 1 else ""
    return f"{speedup:.2f}x{spread}"


def validation_markdown(report: ValidationReport, *, heading: str | None = None) -> list[str]:
    """The validation as Markdown: one summary row per model, then every latency measured."""
    header, rows = validation_summary(report)
    longest = max(row.seq_len for row in report.latency)
    first = min(row.batch for row in report.latency)
    lines = [
        f"## Validation{f' ({heading})' if heading else ''}",
        "",
        f"`{report.export_dir}`: {report.threads} threads, {report.cpu}; latency at batch "
        f"{first} unless stated, every model timed in turns in one process (speedup: the "
        "median rounds' ratio, in brackets its range over the rounds).",
        "",
        _parity_line("deployed file", report.parity),
    ]
    if report.fp32_parity is not None:
        lines.append(_parity_line("fp32 file", report.fp32_parity))
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    quality = (
        f" Quality: the {report.eval_suite} evaluation suite through the runtime; retention = "
        "mean of per-task ratios to the teacher."
        if report.eval_suite != "none"
        else ""
    )
    lines += [
        "",
        "Peak RSS: a fresh process that imports only the runtime, loads the model and runs it "
        f"at seq {longest}; in brackets, what the model adds to the runtime alone.{quality}",
        "",
        "| model | batch | seq | p50 ms | p90 ms | p95 ms | p99 ms | std ms | min ms | runs "
        "| other processes' CPU | steal | reference kernel |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_latency_row(row) for row in report.latency]
    disturbed = sum(row.latency.disturbed for row in report.latency)
    if disturbed:
        lines.append(
            f"\n**{disturbed} of {len(report.latency)} timings were disturbed** (by other "
            "processes, steal time or a slower machine, as the reference kernel timed around "
            "each block shows): these latencies are not representative; re-run the validation "
            "on a quiet machine."
        )
    lines += [f"\n{line}" for line in prediction_lines(report)]
    return [*lines, ""]


def _latency_row(row: LatencyRow) -> str:
    """One measurement; columns blank in files written before they were kept."""
    stats, load, drift = row.latency, row.latency.foreign_load, row.latency.reference_drift
    cells = [row.model, str(row.batch), str(row.seq_len)]
    cells += [_ms(v) for v in (stats.p50_ms, stats.p90_ms, stats.p95_ms, stats.p99_ms)]
    cells.append(_ms(stats.std_ms))
    cells += [f"{stats.min_ms:.2f}", str(stats.runs), "" if load is None else f"{load:.0%}"]
    cells += ["" if stats.steal is None else f"{stats.steal:.0%}"]
    cells += ["" if drift is None else f"{drift:+.0%}"]
    cells[-1] += f" **disturbed** ({disturbance(stats)})" if stats.flags else ""
    cells[-1] += " **disturbed**" if stats.disturbed and not stats.flags else ""
    return "| " + " | ".join(cells) + " |"


def disturbance(stats: LatencyStats) -> str:
    """A timing's flags with their readings, e.g. ``steal 8%, reference kernel +14%``."""
    readings = {
        "other-processes": f"other processes {stats.foreign_load or 0:.0%}",
        "steal": f"steal {stats.steal or 0:.0%}",
        "reference-drift": f"reference kernel {stats.reference_drift or 0:+.0%}",
    }
    return ", ".join(readings.get(flag, flag) for flag in stats.flags)


def prediction_lines(report: ValidationReport) -> list[str]:
    """The hardware profile's prediction for every model it predicts, next to the measurement;
    a miss over :data:`PREDICTION_ERROR_LIMIT` is flagged."""
    lines = []
    for pred in report.predictions():
        if pred.measured_ms is None or pred.error is None:
            continue
        flag = f": **off by more than {PREDICTION_ERROR_LIMIT:.0%}**" if pred.off else ""
        how = " (its timing of an encoder of this shape)" if pred.how == "profiled" else ""
        lines.append(
            f"Profile prediction for {pred.model} at batch {pred.batch}, seq {pred.seq_len}: "
            f"{pred.predicted_ms:.2f} ms{how}, measured {pred.measured_ms:.2f} ms "
            f"({pred.error * 100:+.0f}%){flag}."
        )
    return lines


def _parity_line(what: str, parity: ParityReport) -> str:
    verdict = "pass" if parity.passed else "**fail**"
    return (
        f"Parity of the {what} with PyTorch on {parity.sentences} multilingual sentences: min "
        f"cosine {parity.min_cosine:.5f} (mean {parity.mean_cosine:.5f}, gate "
        f"{parity.min_cosine_required}), max abs diff {parity.max_abs_diff:.2e}: {verdict}."
    )
