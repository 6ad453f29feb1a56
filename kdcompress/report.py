"""``kdcompress report RUN_DIR``: one self-contained page (HTML, and the same as Markdown).

It reads only the artifacts the stages wrote into the run directory, so it can be produced
for a finished or a partial run: each section appears when its stage has run.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TYPE_CHECKING

from kdcompress.artifacts import (
    MANIFEST,
    STUDENT_FP32,
    STUDENT_INT8,
    TEACHER,
    DistillResult,
    ExportManifest,
    Frontier,
    Int8Attempt,
    QuantizationReport,
    ValidationReport,
)
from kdcompress.console import info
from kdcompress.errors import UsageError
from kdcompress.outputs import atomic_write_text
from kdcompress.summaries import validation_markdown

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PROFILE_FILE = "profile.json"  # the hardware profile a run used (kdcompress run writes it)


def _profile(run_dir: Path) -> list[str]:
    """The hardware profile a run used, with the latency model's own held-out error."""
    from kdcompress.latency.schema import HardwareProfile

    path = run_dir / PROFILE_FILE
    if not path.is_file():
        return []
    profile = HardwareProfile.load(path)
    fp, settings = profile.fingerprint, profile.settings
    lines = [
        "## Hardware profile",
        "",
        f"`{profile.name}`: {fp.cpu}, {fp.physical_cores} cores ({', '.join(fp.isa) or '-'}); "
        f"{settings.backend} {profile.backend_version}, {settings.threads} threads; "
        f"{len(profile.blocks)} blocks and {len(profile.models)} encoders timed, median noise "
        f"{profile.noise:.1%}.",
        "",
    ]
    err = profile.error
    if err is None:
        return [*lines, "The profile has no held-out error (no encoders were held out).", ""]
    return [
        *lines,
        f"Latency model error on {err.heldout_architectures} held-out architectures it was not "
        f"fitted on: **MAPE {err.mape:.1f}%**, worst {err.worst_ape:.1f}% (on the fitted ones "
        f"{err.fit_mape:.1f}%); {err.disturbed_excluded} left out as disturbed.",
        "",
    ]


def _search(run_dir: Path) -> list[str]:
    from kdcompress.search.runner import RESULT_FILE, SearchResult

    path = run_dir / "search" / RESULT_FILE
    if not path.is_file():
        return []
    result = SearchResult.load(path)
    lines = [
        "## Search",
        "",
        f"{len(result.ranked)} candidates proxy-distilled in {result.wall_s / 60:.1f} min "
        f"(controller `{result.settings.controller}`, {result.settings.episodes} episodes); "
        f"teacher {result.teacher_arch.describe()}: {result.teacher_latency_ms:.2f} ms "
        f"predicted at seq {result.settings.seq_len}.",
        "",
        "| budget | architecture | predicted ms | speedup | proxy retrieval |",
        "|---|---|---|---|---|",
    ]
    for rec in result.recommendations:
        if rec.arch is None:
            lines.append(f"| {rec.budget} | none under {rec.budget_ms:.2f} ms | | | |")
        else:
            lines.append(
                f"| {rec.budget} | {rec.arch.describe()} | {rec.latency_ms:.2f} | "
                f"{rec.speedup:.1f}x | {1 - (rec.proxy_loss or 0.0):.3f} |"
            )
    lines += ["", "![search](search/search.png)", ""]
    return lines


def _distill(run_dir: Path) -> list[str]:
    path = run_dir / "student" / "distill.json"
    if not path.is_file():
        return []
    result = DistillResult.load(path)
    lines = [
        "## Distillation",
        "",
        f"Student {result.arch.describe()} (init: {result.init}), {result.steps} steps of "
        f"batch {result.batch_size} on {result.sentences} sentences, "
        f"{result.sentences_per_s:.1f} sentences/s, {result.wall_s / 60:.1f} min; "
        f"loss {result.loss}, {result.targets} targets. {_final_losses(result)}",
        "",
    ]
    if result.vocab is not None:
        v = result.vocab
        lines += [
            f"Vocabulary trimmed from {v.vocab_before:,} to {v.vocab_after:,} tokens: "
            f"{v.params_before / 1e6:.1f}M -> {v.params_after / 1e6:.1f}M parameters.",
            "",
        ]
    lines += ["![distillation curve](student-curve.png)", ""]
    _curve_png(result, run_dir / "student-curve.png")
    return lines


def _final_losses(result: DistillResult) -> str:
    parts = [f"pooled {result.final_pooled_loss:.4f}"]
    if result.final_hidden_loss is not None:
        parts.insert(0, f"L_HS {result.final_hidden_loss:.4f}")
    if result.final_cosine is not None:
        parts.append(f"cosine to the teacher {result.final_cosine:.3f}")
    return "Final " + ", ".join(parts) + "."


def _curve_png(result: DistillResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [p.step for p in result.curve]
    if result.final_hidden_loss is not None:
        hidden = [p.hidden if p.hidden is not None else float("nan") for p in result.curve]
        ax.plot(steps, hidden, label="hidden-state L_HS")
    ax.plot(steps, [p.pooled for p in result.curve], label="pooled embedding")
    ax.set_xlabel("step")
    ax.set_ylabel("normalised loss")
    ax.legend()
    fig.tight_layout()
    _save_png(fig, path)


def _validation(run_dir: Path) -> list[str]:
    lines: list[str] = []
    for path in sorted(run_dir.glob("export-*/validation.json")):
        report = ValidationReport.load(path)
        name = path.parent.name
        lines += validation_markdown(report, heading=name)
        png = run_dir / f"quality-latency-{name}.png"
        lines += _quality_latency(report, png, reference_frontier(_teacher_of(run_dir)))
        lines += _int8_attempts(path.parent / MANIFEST)
    return lines


# The models of a validation on the quality-vs-latency plot, with their colours.
_PLOTTED = {TEACHER: "tab:gray", STUDENT_FP32: "tab:blue", STUDENT_INT8: "tab:orange"}


def _teacher_of(run_dir: Path) -> str | None:
    path = run_dir / "student" / "distill.json"
    return DistillResult.load(path).teacher if path.is_file() else None


def reference_frontier(teacher: str | None) -> Frontier | None:
    """The frontier the project measured for ``teacher`` (``benchmarks/frontier.py``), if any."""
    from importlib import resources

    if teacher is None:
        return None
    found = resources.files("kdcompress") / "reference" / f"frontier-{teacher}.json"
    return Frontier.load(Path(str(found))) if found.is_file() else None


def _quality_latency(
    report: ValidationReport, png: Path, frontier: Frontier | None = None
) -> list[str]:
    """Retention against *measured* latency (batch 1, longest input) for each model, and the
    reference frontier of the teacher placed at this run's teacher latency."""
    batch = min(row.batch for row in report.latency)
    seq_len = max(row.seq_len for row in report.latency)
    points = {}
    for name in _PLOTTED:
        summary, ms = report.summary(name), report.p50(name, batch, seq_len)
        quality = 1.0 if name == TEACHER else (summary.retention if summary else None)
        if ms is not None and quality is not None and (name != TEACHER or report.teacher_export):
            points[name] = (ms, quality * 100)
    if len(points) < 2:
        return []
    teacher_ms = points.get(TEACHER, (None, None))[0]
    fig = _quality_figure(points, batch, seq_len)
    lines = [
        f"Quality (retention of the teacher's scores) against the latency measured above, "
        f"batch {batch}, seq {seq_len}:",
        "",
    ]
    if frontier is not None and teacher_ms is not None:
        _draw_frontier(fig, frontier, teacher_ms)
        lines += [
            f"Grey: the reference frontier of {frontier.teacher} ({frontier.suite} suite, "
            f"measured on {frontier.cpu}, `benchmarks/frontier.py`), each point at this run's "
            "teacher latency divided by its measured speedup.",
            "",
        ]
    _save_png(fig, png)
    return [*lines, f"![quality against measured latency]({png.name})", ""]


def _draw_frontier(fig: Figure, frontier: Frontier, teacher_ms: float) -> None:
    ax = fig.axes[0]
    points = sorted((teacher_ms / p.speedup, 100 * p.retention, p.name) for p in frontier.points)
    ax.plot([x for x, _, _ in points], [y for _, y, _ in points], "o", color="0.6", ms=4, zorder=2)
    for x, y, name in points:
        ax.annotate(
            name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=6, color="0.4"
        )
    low, high = ax.get_xlim()
    ax.set_xlim(min(low, points[0][0] / 1.5), max(high, points[-1][0] * 1.5))
    ax.set_ylim(min(ax.get_ylim()[0], min(y for _, y, _ in points) - 5), 108)


def _quality_figure(points: dict[str, tuple[float, float]], batch: int, seq_len: int) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, (ms, quality) in points.items():
        ax.scatter([ms], [quality], s=60, color=_PLOTTED[name], zorder=3)
        label = f"{name}\n{ms:.2f} ms, {quality:.1f}%"
        ax.annotate(label, (ms, quality), textcoords="offset points", xytext=(7, -16), fontsize=8)
    latencies = [ms for ms, _ in points.values()]
    ax.set_xscale("log")
    ax.set_xlim(min(latencies) / 1.5, max(latencies) * 3)  # room for the labels on the right
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"measured p50 latency, ms (batch {batch}, seq {seq_len}; log scale)")
    ax.set_ylabel("retention of the teacher, %")
    ax.set_ylim(max(0.0, min(q for _, q in points.values()) - 15), 108)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def _save_png(fig: Figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    path.write_bytes(buffer.getvalue())


def _int8_attempts(manifest_path: Path) -> list[str]:
    """Every int8 plan the export tried, in order, and the fp32-vs-int8 speed check."""
    if not manifest_path.is_file():
        return []
    int8 = ExportManifest.load(manifest_path).int8
    if int8 is None:
        return []
    lines = [
        f"int8 attempts ({int8.requested} requested; CPU preset {int8.settings.preset}, "
        f"{', '.join(int8.isa) or 'no ISA flags'}), most aggressive first:",
        "",
        "| plan | method | weights | min cosine | mean cosine | quality drop | verdict |",
        "|---|---|---|---|---|---|---|",
        *[_attempt_row(attempt) for attempt in int8.attempts],
        "",
        _int8_outcome(int8),
        "",
    ]
    return lines


def _attempt_row(attempt: Int8Attempt) -> str:
    s = attempt.settings
    plan = s.mode + (f" ({', '.join(s.keep_fp32)} in fp32)" if s.keep_fp32 else "")
    parity = attempt.parity
    cosines = [f"{parity.min_cosine:.5f}", f"{parity.mean_cosine:.5f}"] if parity else ["", ""]
    drop = f"{attempt.quality.drop_pct:.1f}%" if attempt.quality else ""
    verdict = "deployed" if attempt.accepted else (attempt.note or "rejected: parity")
    cells = [plan, s.method, f"{s.weight_type}, {s.weight_range}", *cosines, drop, verdict]
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def _int8_outcome(int8: QuantizationReport) -> str:
    size = f"{int8.fp32_bytes / 2**20:.1f} MiB fp32 -> {int8.int8_bytes / 2**20:.1f} MiB int8"
    fallback = f" Fallback: {int8.fallback}." if int8.fallback else ""
    speed = int8.speed
    if speed is None:
        return f"{size}.{fallback}"
    return (
        f"{size}; at batch {speed.batch}, seq {speed.seq_len}: fp32 {speed.fp32.p50_ms:.2f} ms, "
        f"int8 {speed.int8.p50_ms:.2f} ms p50 ({speed.speedup:.2f}x).{fallback}"
    )


def build_markdown(run_dir: Path) -> str:
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run directory")
    sections = _search(run_dir) + _distill(run_dir) + _validation(run_dir)
    if not sections:
        raise UsageError(f"{run_dir}: no stage artifacts found (search/, student/, export-*/)")
    sections = _profile(run_dir) + sections
    return "\n".join([f"# kdcompress run `{run_dir.name}`", "", *sections])


def _inline_images(markdown_html: str, run_dir: Path) -> str:
    """Replace image paths by data URIs so the HTML page is self-contained."""
    for png in [*run_dir.glob("*.png"), *run_dir.glob("search/*.png")]:
        rel = png.relative_to(run_dir).as_posix()
        data = base64.b64encode(png.read_bytes()).decode()
        markdown_html = markdown_html.replace(f'src="{rel}"', f'src="data:image/png;base64,{data}"')
    return markdown_html


_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.4}"
    "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
    "code{background:#f3f3f3;padding:0 3px}img{max-width:100%}"
)


def _to_html(markdown: str) -> str:
    """The report's Markdown as a page (CommonMark and tables, through markdown-it-py)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>kdcompress report</title>"
        f"<style>{_STYLE}</style></head><body>\n{body}</body></html>\n"
    )


def write_report(run_dir: Path) -> tuple[Path, Path]:
    """Write ``report.md`` and a self-contained ``report.html`` into ``run_dir``."""
    markdown = build_markdown(run_dir)
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    atomic_write_text(md_path, markdown + "\n")
    atomic_write_text(html_path, _inline_images(_to_html(markdown), run_dir))
    info(f"[green]Report written[/] to {html_path} and {md_path}")
    return html_path, md_path
