"""What each part of the distillation recipe contributes, at equal budget.

Every variant distils the same student shape from the same teacher for the same number of
steps and batch size, then runs the quick evaluation suite against the teacher's own report.
A variant is a set of ``kdcompress distill`` options; each row's command is written beside it.
Finished variants are kept and skipped when the script is run again (row-by-row resume); a
killed distillation continues from its checkpoint.

    .venv/bin/python benchmarks/recipe_ablation.py --output runs/ablation
    .venv/bin/python benchmarks/recipe_ablation.py --output runs/ablation --only default hidden
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

from common import KDCOMPRESS, call, distill_then_score

from kdcompress.artifacts import DistillResult
from kdcompress.hardware import cpu_model
from kdcompress.outputs import atomic_write_text
from kdcompress.quality import EvalReport

ARCH = '{"layers": 2, "hidden": 384, "heads": 12, "ffn": 1536}'

# name -> (what it changes, extra distill options, teacher-cache group). "default" is the
# tool's default recipe. Variants of one group distil on the same sentences, so they share one
# teacher cache (built by the first of them that needs the most layers).
VARIANTS: dict[str, tuple[str, list[str], str]] = {
    "default": ("default: sentence embedding, cross-lingual targets, lr 3e-4", [], "xling"),
    "previous": (
        "previous default: hidden states + pooled, own targets, languages interleaved, lr 1e-4",
        ["--loss", "hidden", "--targets", "own", "--lr", "1e-4"],
        "own",
    ),
    "lr1e-4": ("default at learning rate 1e-4", ["--lr", "1e-4"], "xling"),
    "lr1e-3": ("default at learning rate 1e-3", ["--lr", "1e-3"], "xling"),
    "own-targets": ("default with own targets", ["--targets", "own"], "own"),
    "hidden": ("default + hidden-state loss (English side)", ["--loss", "hidden"], "xling-hidden"),
    "contrastive": (
        "default + in-batch contrastive term",
        ["--contrastive-weight", "1"],
        "xling",
    ),
    "trim": ("default + vocabulary trimming", ["--trim-vocab"], "xling"),
    "random-init": ("default from a random init", ["--init", "random"], "xling"),
    "activations": (
        "default, init by activations (Minitron: layers by block influence)",
        ["--init", "activations"],
        "xling",
    ),
    "passages": (
        "default + 15% passages of 3-8 verses, up to 256 tokens",
        ["--passages", "0.15", "--max-length", "256"],
        "xling-passages",
    ),
    "general-lr1e-3": (
        "lr 1e-3 + 25% general-domain sentences (news, speeches)",
        ["--lr", "1e-3", "--general", "0.25"],
        "xling-general",
    ),
}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", default="me5-small")
    parser.add_argument("--arch-json", default=ARCH)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--lr", default="3e-4", help="learning rate of the rows without their own (as measured)"
    )
    parser.add_argument("--only", nargs="*", default=None, help="variants to run, in order")
    parser.add_argument("--output", type=Path, default=Path("runs/ablation"))
    return parser.parse_args()


def teacher_reference(args: argparse.Namespace) -> Path:
    path = args.output / "teacher-quick.json"
    if not path.is_file():
        command = [*KDCOMPRESS, "eval", "--model", args.teacher, "--quick", "--output", str(path)]
        call(command, args.output / "teacher.log")
    return path


def distill_command(args: argparse.Namespace, name: str, student: Path) -> list[str]:
    command = [
        *KDCOMPRESS, "distill", "--teacher", args.teacher, "--arch-json", args.arch_json,
        "--steps", str(args.steps), "--batch", str(args.batch), "--output", str(student),
    ]  # fmt: skip
    _what, options, group = VARIANTS[name]
    if "--lr" not in options:  # explicit, so a row reproduces whatever the tool's default
        options = ["--lr", args.lr, *options]
    return command + options + ["--cache", str(args.output / f"cache-{group}")]


def variant(args: argparse.Namespace, name: str, reference: Path) -> dict[str, object]:
    folder = args.output / name
    folder.mkdir(parents=True, exist_ok=True)
    student, report = folder / "student", folder / "eval-quick.json"
    command = distill_command(args, name, student)
    distill_then_score(command, reference, folder)
    result, scores = DistillResult.load(student / "distill.json"), EvalReport.load(report)
    assert scores.retention is not None
    return {
        "name": name,
        "what": VARIANTS[name][0],
        "scores": {t.task: t.score for t in scores.tasks},
        "retention": scores.retention.overall,
        "train_min": result.wall_s / 60,
        "cache_min": result.teacher_cache_s / 60,
        "command": shlex.join(["kdcompress", *command[3:]]),
    }


def table(rows: list[dict[str, object]], args: argparse.Namespace) -> str:
    lines = [
        f"Student {args.arch_json}, {args.steps} steps x batch {args.batch}, teacher "
        f"{args.teacher}; quick suite; CPU: {cpu_model()}.",
        "",
        "| variant | retrieval | IMDB | zh-inews | retention | training | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        scores = row["scores"]
        assert isinstance(scores, dict)
        lines.append(
            f"| {row['what']} | {scores['retrieval']:.3f} | {scores['imdb']:.3f} | "
            f"{scores['zh-inews']:.3f} | {100 * float(row['retention']):.1f}% | "  # type: ignore[arg-type]
            f"{float(row['train_min']):.1f} min | `{row['command']}` |"  # type: ignore[arg-type]
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse()
    args.output.mkdir(parents=True, exist_ok=True)
    reference = teacher_reference(args)
    rows = []
    for name in args.only or list(VARIANTS):
        started = time.time()
        rows.append(variant(args, name, reference))
        print(f"{name}: {rows[-1]['retention']:.3f} ({(time.time() - started) / 60:.1f} min)")
        atomic_write_text(args.output / "rows.json", json.dumps(rows, indent=1))
        atomic_write_text(args.output / "ablation.md", table(rows, args))
    print(table(rows, args))


if __name__ == "__main__":
    main()
