"""Does the search's proxy score predict the student a full distillation makes?

For a fixed set of architectures spanning depth and width, this measures

- the search's proxy quality (``kdcompress.search.proxy``: a short cross-lingual distillation
  on the proxy split, then retrieval top-1 on held-out proxy verses),
- the paper's proxy quality for comparison (``1 - L_HS`` after a short hidden-state
  distillation on the same proxy books, the embedding pair left out),
- the result of a full distillation (``kdcompress distill`` with the tool's defaults for the
  given steps) on the quick evaluation suite: retention of the teacher's scores,

and reports the Spearman rank correlation of each proxy with the final retention. Every
architecture's numbers are stored as they finish and reused when the script runs again.

    .venv/bin/python benchmarks/proxy_correlation.py --output runs/proxy-correlation \\
        --cache runs/ablation/cache-xling --reference runs/ablation/teacher-quick.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
from pathlib import Path
from typing import Any

from common import KDCOMPRESS, distill_then_score

from kdcompress.artifacts import StudentArch
from kdcompress.hardware import cpu_model
from kdcompress.outputs import atomic_write_text
from kdcompress.quality import EvalReport
from kdcompress.search.proxy import ProxyEvaluator, ProxySettings

ARCHS = (
    StudentArch(layers=1, hidden=384, heads=12, ffn=768),
    StudentArch(layers=2, hidden=384, heads=12, ffn=1536),
    StudentArch(layers=3, hidden=384, heads=12, ffn=1152),
    StudentArch(layers=2, hidden=256, heads=8, ffn=1024),
    StudentArch(layers=4, hidden=256, heads=8, ffn=512),
    StudentArch(layers=1, hidden=192, heads=6, ffn=384),
    StudentArch(layers=6, hidden=128, heads=4, ffn=256),
)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", default="me5-small")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", default="3e-4")
    parser.add_argument("--proxy-sentences", type=int, default=256)
    parser.add_argument("--proxy-steps", type=int, default=60)
    parser.add_argument("--cache", type=Path, default=None, help="shared distill teacher cache")
    parser.add_argument("--reference", type=Path, required=True, help="teacher's quick eval")
    parser.add_argument("--output", type=Path, default=Path("runs/proxy-correlation"))
    return parser.parse_args()


def arch_json(arch: StudentArch) -> str:
    return json.dumps({k: getattr(arch, k) for k in ("layers", "hidden", "heads", "ffn")})


def paper_proxy(args: argparse.Namespace, teacher_dir: Path, arch: StudentArch) -> float:
    """1 - L_HS after the paper's short hidden-state distillation on the proxy books."""
    from kdcompress.corpus import iter_sentences
    from kdcompress.kd import LossKind, TeacherCache, distill_student

    settings = ProxySettings(sentences=args.proxy_sentences, steps=args.proxy_steps)
    texts = list(iter_sentences("proxy", settings.languages, seed=0, limit=settings.sentences))
    cache = TeacherCache.build(teacher_dir, texts, settings.max_length, args.output / "lhs-cache")
    outcome = distill_student(
        teacher_dir=teacher_dir,
        arch=arch,
        sentences=texts,
        steps=settings.steps,
        batch_size=settings.batch_size,
        lr=settings.lr,
        seed=0,
        max_length=settings.max_length,
        cache=cache,
        loss=LossKind.HIDDEN,
        eval_sentences=min(128, len(texts)),
    )
    assert outcome.layer_loss is not None
    return 1.0 - float(outcome.layer_loss)


def final(args: argparse.Namespace, arch: StudentArch) -> dict[str, Any]:
    folder = args.output / arch.arch_id
    student, report = folder / "student", folder / "eval-quick.json"
    command = [
        *KDCOMPRESS, "distill", "--teacher", args.teacher, "--arch-json", arch_json(arch),
        "--steps", str(args.steps), "--batch", str(args.batch), "--lr", args.lr,
        "--output", str(student),
    ]  # fmt: skip
    if args.cache is not None:
        command += ["--cache", str(args.cache)]
    folder.mkdir(parents=True, exist_ok=True)
    distill_then_score(command, args.reference, folder)
    scores = EvalReport.load(report)
    assert scores.retention is not None and scores.retention.overall is not None
    return {
        "retention": scores.retention.overall,
        "scores": {t.task: t.score for t in scores.tasks},
        "command": shlex.join(["kdcompress", *command[3:]]),
    }


def measure(
    args: argparse.Namespace, evaluator: ProxyEvaluator, arch: StudentArch
) -> dict[str, Any]:
    path = args.output / "rows" / f"{arch.arch_id}.json"
    row: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    row["arch"] = dataclasses.asdict(arch)
    if "proxy" not in row:
        row["proxy"] = 1.0 - evaluator.proxy_loss(arch)
    if "paper_proxy" not in row:
        row["paper_proxy"] = paper_proxy(args, evaluator.teacher_dir, arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(row, indent=1))
    if "retention" not in row:
        row.update(final(args, arch))
        atomic_write_text(path, json.dumps(row, indent=1))
    return row


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    from scipy.stats import spearmanr

    ours = spearmanr([r["proxy"] for r in rows], [r["retention"] for r in rows]).statistic
    paper = spearmanr([r["paper_proxy"] for r in rows], [r["retention"] for r in rows]).statistic
    lines = [
        f"Proxy: {args.proxy_steps} steps x {ProxySettings().batch_size} on "
        f"{args.proxy_sentences} proxy verses; final: {args.steps} steps x {args.batch}, quick "
        f"suite; teacher {args.teacher}; CPU: {cpu_model()}.",
        "",
        "| architecture | proxy retrieval (ours) | 1 - L_HS (paper) | final retrieval | "
        "final retention |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: -r["retention"]):
        arch = StudentArch(**r["arch"])
        lines.append(
            f"| {arch.describe()} | {r['proxy']:.3f} | {r['paper_proxy']:.3f} | "
            f"{r['scores']['retrieval']:.3f} | {100 * r['retention']:.1f}% |"
        )
    lines += [
        "",
        f"Spearman correlation with the final retention over {len(rows)} architectures: "
        f"**ours {ours:.2f}**, the paper's L_HS {paper:.2f}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    from kdcompress.models import resolve_model

    args = parse()
    args.output.mkdir(parents=True, exist_ok=True)
    teacher_dir = resolve_model(args.teacher)
    settings = ProxySettings(sentences=args.proxy_sentences, steps=args.proxy_steps)
    evaluator = ProxyEvaluator(
        teacher_dir=teacher_dir,
        settings=settings,
        cache_path=args.output / "proxy-cache",
        seed=0,
    )
    rows = []
    for arch in ARCHS:
        rows.append(measure(args, evaluator, arch))
        print(f"{arch.describe()}: {rows[-1]}", flush=True)
    text = table(rows, args)
    atomic_write_text(args.output / "correlation.md", text)
    print(text)


if __name__ == "__main__":
    main()
