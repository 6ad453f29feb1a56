"""``kdcompress report RUN_DIR``: one self-contained page (HTML, and the same as Markdown).

It reads only the artifacts the stages wrote into the run directory, so it can be produced
for a finished or a partial run: each section appears when its stage has run.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from kdcompress.artifacts import (
    DistillResult,
    ValidationReport,
)
from kdcompress.console import info
from kdcompress.errors import UsageError
from kdcompress.outputs import atomic_write_text
from kdcompress.summaries import validation_markdown


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
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    path.write_bytes(buffer.getvalue())


def _validation(run_dir: Path) -> list[str]:
    lines: list[str] = []
    for path in sorted(run_dir.glob("export-*/validation.json")):
        lines += validation_markdown(ValidationReport.load(path), heading=path.parent.name)
    return lines


def build_markdown(run_dir: Path) -> str:
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run directory")
    sections = _search(run_dir) + _distill(run_dir) + _validation(run_dir)
    if not sections:
        raise UsageError(f"{run_dir}: no stage artifacts found (search/, student/, export-*/)")
    return "\n".join([f"# kdcompress run `{run_dir.name}`", "", *sections])


def _inline_images(markdown_html: str, run_dir: Path) -> str:
    """Replace image paths by data URIs so the HTML page is self-contained."""
    for png in [*run_dir.glob("*.png"), *run_dir.glob("search/*.png")]:
        rel = png.relative_to(run_dir).as_posix()
        data = base64.b64encode(png.read_bytes()).decode()
        markdown_html = markdown_html.replace(f'src="{rel}"', f'src="data:image/png;base64,{data}"')
    return markdown_html


def _to_html(markdown: str) -> str:
    """Just enough Markdown (headings, tables, images, paragraphs) for this report.

    Hand-written on purpose: the report uses four constructs, which does not justify a
    Markdown library in the dependency set.
    """
    out, table = [], False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            tag = "th" if not table else "td"
            if not table:
                out.append("<table>")
                table = True
            out.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if table:
            out.append("</table>")
            table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](")
            out.append(f'<img alt="{html.escape(alt)}" src="{html.escape(src.rstrip(")"))}">')
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    if table:
        out.append("</table>")
    style = (
        "body{font-family:sans-serif;max-width:960px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        "img{max-width:100%}"
    )
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head>" + (
        "<body>" + "\n".join(out) + "</body></html>"
    )


def write_report(run_dir: Path) -> tuple[Path, Path]:
    """Write ``report.md`` and a self-contained ``report.html`` into ``run_dir``."""
    markdown = build_markdown(run_dir)
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    atomic_write_text(md_path, markdown + "\n")
    atomic_write_text(html_path, _inline_images(_to_html(markdown), run_dir))
    info(f"[green]Report written[/] to {html_path} and {md_path}")
    return html_path, md_path
