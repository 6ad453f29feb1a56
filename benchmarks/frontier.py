"""One quality-vs-speed frontier, every point measured side by side with the teacher.

Rows (each resumable on its own: its student, export and validation are kept and reused, and a
finished row is written to ``OUTPUT/rows/NAME.json`` at once, so a stop loses at most the row in
progress):

- ``student-*``: students distilled with the tool's default recipe, at about 2x, 4x, 7x, 10x
  and 20x the teacher's speed (``--steps`` each; a killed distillation resumes);
- ``search-*`` / ``random-*``: the 4x and 7x recommendations of a search on ``--profile`` with
  the LSTM controller, and of a random search of the same budget (``--search-episodes`` x
  ``--search-candidates`` proxy distillations), distilled like the students above (a pick of
  a shape already distilled here with the same steps is that student, not distilled twice);
- ``truncated-*``: the teacher cut to its first k layers, no training;
- ``teacher-int8``: the teacher's own ONNX Runtime int8 (dynamic) export;
- ``handpicked``: the usual hand-made choice, a uniform 4-layer slice of the teacher at width
  256, distilled the same way;
- ``model2vec`` (with ``--model2vec-python``: the Python of an environment of its own, made with
  ``pip install torch==2.13.0 'model2vec[quantization]==0.10.0' 'transformers<5.4'``, since
  model2vec needs a newer huggingface-hub than the pinned transformers): static token
  embeddings distilled from the same teacher, ``pca_dims=256``.

Speed: ONNX Runtime fp32 (and int8 for students), batch 1, seq 32 and 128, timed in one process
with the teacher's fp32 export by ``kdcompress validate``; quality: the evaluation suite with
retention of the teacher's scores. The table and the plot (retention vs measured speedup, log x)
go to ``OUTPUT/frontier.md`` and ``frontier.png``, and between the frontier markers of
BENCHMARKS.md with ``--benchmarks-md``.

    .venv/bin/python benchmarks/frontier.py --output runs/frontier --steps 2000 --distill-only
    .venv/bin/python benchmarks/frontier.py --output runs/frontier --steps 2000
    .venv/bin/python benchmarks/frontier.py --output runs/frontier --only truncated-2 teacher-int8
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import KDCOMPRESS, call

from kdcompress.artifacts import (
    STUDENT_FP32,
    STUDENT_INT8,
    TEACHER,
    Frontier,
    FrontierPoint,
    StudentArch,
)
from kdcompress.hardware import cpu_model
from kdcompress.outputs import atomic_write_text

SEQ_LENS = (32, 128)
START_MARK = "<!-- frontier:start -->"
END_MARK = "<!-- frontier:end -->"


@dataclass(frozen=True)
class Row:
    name: str
    what: str
    make: Callable[[argparse.Namespace, Path], Path]  # -> a model folder to export


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", default="me5-small")
    parser.add_argument("--steps", type=int, default=2000, help="distillation steps per student")
    parser.add_argument(
        "--sentences",
        type=int,
        default=None,
        help="English training items per student (default: steps x batch, all the Bible's)",
    )
    parser.add_argument(
        "--cache", type=Path, default=None, help="teacher cache (default: OUTPUT/teacher-cache)"
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="this machine's profile (the search rows)"
    )
    parser.add_argument("--search-episodes", type=int, default=8)
    parser.add_argument("--search-candidates", type=int, default=4)
    parser.add_argument("--suite", default="full", choices=("quick", "full"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model2vec-python", type=Path, default=None)
    parser.add_argument("--only", nargs="*", default=None, help="rows to run, by name")
    parser.add_argument(
        "--distill-only",
        action="store_true",
        help="make the rows' models (the long part) and stop: time them later on a quiet machine",
    )
    parser.add_argument("--output", type=Path, default=Path("runs/frontier"))
    parser.add_argument("--benchmarks-md", type=Path, default=None)
    return parser.parse_args()


# ----------------------------------------------------------------------------- model folders


def student(arch: StudentArch) -> Callable[[argparse.Namespace, Path], Path]:
    """A student distilled with the default recipe (resumes a killed distillation)."""
    shape = json.dumps({k: getattr(arch, k) for k in ("layers", "hidden", "heads", "ffn")})
    return _distilled(lambda _args, _folder: ["--arch-json", shape])


def searched(controller: str, budget: str) -> Callable[[argparse.Namespace, Path], Path]:
    """The ``budget`` recommendation of a search with ``controller`` on ``--profile``, then
    distilled like every student: the search's pick (lstm) against a random search's pick of
    the same search budget. One search per controller serves every budget."""

    def arch_of(args: argparse.Namespace, _folder: Path) -> list[str]:
        found = _search(args, controller) / "search.json"
        return ["--arch", f"{found}#{budget}"]

    return _distilled(arch_of)


def _search(args: argparse.Namespace, controller: str) -> Path:
    out = args.output / "searches" / controller
    log = out.parent / f"{controller}.log"
    if args.profile is None:
        raise SystemExit("search rows need --profile (a profile of this machine)")
    if (out / "search-settings.json").is_file() and not (out / "search.json").is_file():
        call([*KDCOMPRESS, "search", "--resume", str(out)], log)
    elif not (out / "search.json").is_file():
        command = [
            *KDCOMPRESS, "search", "--target", str(args.profile), "--teacher", args.teacher,
            "--output", str(out), "--controller", controller, "--seed", "0",
            "--episodes", str(args.search_episodes),
            "--candidates", str(args.search_candidates),
        ]  # fmt: skip
        call(command, log)
    return out


def _same_student(args: argparse.Namespace, arch: dict[str, Any]) -> Path | None:
    """A student of this exact shape already distilled here with the same steps and data."""
    for done in sorted(args.output.glob("*/student/distill.json")):
        info = json.loads(done.read_text())
        same = {k: info["arch"][k] for k in arch} == arch and info["steps"] == args.steps
        if same and info["sentences"] == (args.sentences or info["sentences"]):
            return done.parent
    return None


def _picked(spec: str) -> dict[str, Any]:
    path, budget = spec.split("#")
    recommended = json.loads(Path(path).read_text())["recommendations"]
    arch = next(r["arch"] for r in recommended if r["budget"] == budget)
    return {k: arch[k] for k in ("layers", "hidden", "heads", "ffn")}


def _distilled(
    arch_of: Callable[[argparse.Namespace, Path], list[str]],
) -> Callable[[argparse.Namespace, Path], Path]:
    def make(args: argparse.Namespace, folder: Path) -> Path:
        from kdcompress.distill import checkpoint_dir_for

        out = folder / "student"
        if not (out / "distill.json").is_file():
            arch = arch_of(args, folder)
            if arch[0] == "--arch":  # a search's pick: maybe a shape distilled here already
                same = _same_student(args, _picked(arch[1]))
                if same is not None:
                    print(f"{folder.name}: the same student as {same.parent.name}", flush=True)
                    return same
            command = [
                *KDCOMPRESS, "distill", "--teacher", args.teacher, *arch,
                "--steps", str(args.steps), "--checkpoint-every", "100", "--output", str(out),
                "--cache", str(args.cache or args.output / "teacher-cache"),
            ]  # fmt: skip
            if args.sentences:
                command += ["--sentences", str(args.sentences)]
            if checkpoint_dir_for(out).exists():
                command.append("--resume")
            call(command, folder / "distill.log")
        return out

    return make


def truncated(layers: int) -> Callable[[argparse.Namespace, Path], Path]:
    """The teacher's embeddings and first ``layers`` layers, unchanged."""

    def make(args: argparse.Namespace, folder: Path) -> Path:
        import shutil

        from transformers import AutoModel

        from kdcompress.models import resolve_model

        out = folder / "model"
        if (out / "config.json").is_file():
            return out
        source = resolve_model(args.teacher)
        model = AutoModel.from_pretrained(source, add_pooling_layer=False)
        model.encoder.layer = model.encoder.layer[:layers]
        model.config.num_hidden_layers = layers
        model.save_pretrained(out)
        for item in source.iterdir():  # tokenizer, pooling and prefix travel with the weights
            copied = item.suffix in (".json", ".model", ".txt")
            if item.is_file() and copied and not (out / item.name).exists():
                shutil.copy2(item, out / item.name)
        return out

    return make


def teacher_itself(args: argparse.Namespace, _folder: Path) -> Path:
    from kdcompress.models import resolve_model

    return resolve_model(args.teacher)


# Shapes chosen by their measured speed (random weights, ONNX Runtime fp32, batch 1, seq 128,
# AMD EPYC Zen 4): 3L x 384 x 1536 3.7x, 2L x 384 x 768 7.0x, 2L x 384 x 512 7.7x,
# 1L x 384 x 1536 10.9x, 1L x 384 x 768 13.9x, 1L x 256 x 512 28x.
ROWS = (
    Row("student-2x", "student 6L x 384", student(StudentArch(6, 384, 12, 1536))),
    Row("student-4x", "student 3L x 384, FFN 1152", student(StudentArch(3, 384, 12, 1152))),
    Row("student-7x", "student 2L x 384, FFN 512", student(StudentArch(2, 384, 12, 512))),
    Row("student-10x", "student 1L x 384", student(StudentArch(1, 384, 12, 1536))),
    Row("student-15x", "student 1L x 384, FFN 384", student(StudentArch(1, 384, 12, 384))),
    Row("student-20x", "student 1L x 256, FFN 512", student(StudentArch(1, 256, 8, 512))),
    Row("handpicked", "hand-picked 4L x 256, FFN 1024", student(StudentArch(4, 256, 8, 1024))),
    Row("search-4x", "the search's 4x pick (LSTM controller)", searched("lstm", "4x")),
    Row("random-4x", "a random search's 4x pick, same search budget", searched("random", "4x")),
    Row("search-7x", "the search's 7x pick (LSTM controller)", searched("lstm", "7x")),
    Row("random-7x", "a random search's 7x pick, same search budget", searched("random", "7x")),
    Row("truncated-6", "teacher, first 6 layers, no training", truncated(6)),
    Row("truncated-3", "teacher, first 3 layers, no training", truncated(3)),
    Row("truncated-2", "teacher, first 2 layers, no training", truncated(2)),
    Row("truncated-1", "teacher, first layer, no training", truncated(1)),
    Row("teacher-int8", "teacher, ONNX Runtime int8 (dynamic)", teacher_itself),
)

# ----------------------------------------------------------------------------- measuring


def measure(args: argparse.Namespace, row: Row) -> dict[str, Any]:
    """Export (fp32 + dynamic int8) and validate against the teacher; the row's numbers."""
    from kdcompress.export import ExportFormat, teacher_export
    from kdcompress.hardware import threads_or_default
    from kdcompress.pipeline import export_stage
    from kdcompress.quantize import Quantization, QuantizeOptions
    from kdcompress.validate import validate_export

    folder = args.output / row.name
    folder.mkdir(parents=True, exist_ok=True)
    model = row.make(args, folder)
    measured = args.output / "rows" / f"{model.parent.name}.json"
    if model.parent != folder and measured.is_file():  # that very student, measured already
        same = json.loads(measured.read_text())
        return same | {"name": row.name, "what": f"{row.what} = {same['what']}"}
    threads = threads_or_default(args.threads)
    options = QuantizeOptions(mode=Quantization.DYNAMIC, seed=0)
    out = export_stage(str(model), folder / "export", ExportFormat.ONNX, threads, options)
    report = validate_export(
        export_dir=out,
        teacher=teacher_export(args.teacher, "onnxruntime", threads),
        seq_lens=SEQ_LENS,
        batch_sizes=(1,),
        threads=threads,
        quality=args.suite,
    )
    teacher = report.summary(TEACHER)
    if teacher is not None:
        atomic_write_text(args.output / "teacher-scores.json", json.dumps(teacher.scores))
    result: dict[str, Any] = {"name": row.name, "what": row.what, "cpu": cpu_model()}
    if (model / "distill.json").is_file():  # students: their own budget, since rows may differ
        distilled = json.loads((model / "distill.json").read_text())
        result["what"] += f", {distilled['steps']} steps x {distilled['batch_size']}"
    for kind, name in (("fp32", STUDENT_FP32), ("int8", STUDENT_INT8)):
        summary = report.summary(name)
        if summary is None:
            continue
        result[kind] = {
            "speedup": {str(s): report.speedup(1, s, name) for s in SEQ_LENS},
            "scores": summary.scores,
            "retention": summary.retention,
            "size_mib": summary.size_bytes / 2**20,
        }
    return result


class _StaticEmbeddings:
    """model2vec's model as a backend model: a token's embedding is its row of the matrix."""

    def __init__(self, folder: Path) -> None:
        from safetensors.numpy import load_file

        self.matrix = next(iter(load_file(str(folder / "model.safetensors")).values()))
        self.threads = 1

    def run(self, batch: dict[str, Any]) -> Any:
        return self.matrix[batch["input_ids"]]

    # The timing method's interface (kdcompress.backends.base.benchmark): the lookup and the
    # mean over tokens are all the encoding model2vec does.
    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {"input_ids": batch["input_ids"]}

    def _run(self, inputs: dict[str, Any]) -> Any:
        return self.matrix[inputs["input_ids"]].mean(axis=1)


def model2vec_row(args: argparse.Namespace, teacher_scores: dict[str, float]) -> dict[str, Any]:
    """model2vec of the teacher (distilled in its own environment), scored by the same suite
    and timed side by side with the teacher's ONNX Runtime export."""
    import numpy as np
    from transformers import PreTrainedTokenizerFast

    from kdcompress.backends import get_backend
    from kdcompress.backends.base import compare_latency
    from kdcompress.encoding import synthetic_batch
    from kdcompress.export import teacher_export
    from kdcompress.hardware import threads_or_default
    from kdcompress.models import resolve_model
    from kdcompress.quality import (
        Embedder,
        evaluate_suite,
        full_settings,
        load_plan,
        quick_settings,
    )

    folder = args.output / "model2vec"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "model" / "model.safetensors").is_file():
        script = Path(__file__).with_name("model2vec_row.py")
        teacher_dir = str(resolve_model(args.teacher))
        command = [str(args.model2vec_python), str(script), "--teacher", teacher_dir]
        call([*command, "--output", str(folder)], folder / "distill.log")
    static = _StaticEmbeddings(folder / "model")
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "model" / "tokenizer.json"))
    embedder = Embedder(
        static,  # type: ignore[arg-type]
        tokenizer,
        text_prefix="",
        pooling="mean",
        max_positions=512,
        batch_size=32,
    )
    settings = quick_settings() if args.suite == "quick" else full_settings()
    scores = {t.task: t.score for t in evaluate_suite(embedder, load_plan(settings), settings)}
    threads = threads_or_default(args.threads)
    export = teacher_export(args.teacher, "onnxruntime", threads)
    teacher = get_backend("onnxruntime").load(model_path=export / "model.onnx", threads=threads)
    vocab = min(static.matrix.shape[0], 250_000)
    speedup = {}
    for seq in SEQ_LENS:
        batch = synthetic_batch(vocab_size=vocab, batch=1, seq_len=seq)
        stats = compare_latency({"teacher": teacher, "model2vec": static}, batch)  # type: ignore[dict-item]
        speedup[str(seq)] = stats["teacher"].p50_ms / stats["model2vec"].p50_ms
    ratios = [scores[t] / teacher_scores[t] for t in scores if teacher_scores.get(t)]
    return {
        "name": "model2vec",
        "what": "model2vec of the teacher, pca_dims 256 (no training)",
        "cpu": cpu_model(),
        "fp32": {
            "speedup": speedup,
            "scores": scores,
            "retention": float(np.mean(ratios)) if ratios else None,
            "size_mib": static.matrix.nbytes / 2**20,
        },
    }


def teacher_scores(args: argparse.Namespace) -> dict[str, float]:
    """The teacher's suite scores, kept by the first validated row (run one row first)."""
    path = args.output / "teacher-scores.json"
    if not path.is_file():
        raise SystemExit(f"{path}: measure a kdcompress row first (e.g. --only truncated-2)")
    scores: dict[str, float] = json.loads(path.read_text())
    return scores


# ----------------------------------------------------------------------------- reporting


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"Teacher {args.teacher}; ONNX Runtime, batch 1, {args.suite} suite; students: "
        "the default recipe (steps in each row)"
        + (f" over {args.sentences:,} English items" if args.sentences else "")
        + f"; CPU: {cpu_model()}.",
        "",
        "| model | speedup seq 32 | speedup seq 128 | int8 speedup seq 128 | retrieval | IMDB | "
        "zh-inews | retention | int8 retention |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: _speed(r)):
        fp32, int8 = row.get("fp32", {}), row.get("int8", {})
        scores = fp32.get("scores", {})
        cells = [
            row["what"],
            _x(fp32, "32"),
            _x(fp32, "128"),
            _x(int8, "128"),
            *(f"{scores.get(t, float('nan')):.3f}" for t in ("retrieval", "imdb", "zh-inews")),
            _pct(fp32.get("retention")),
            _pct(int8.get("retention")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    names = " ".join(row["name"] for row in sorted(rows, key=_speed))
    lines += [
        "",
        "Reproduce (a row's student, export and scores are kept; a finished row is reused):",
        "",
        "```bash",
        f".venv/bin/python benchmarks/frontier.py --output runs/frontier --steps STEPS "
        f"--sentences {args.sentences or 'N'} --suite {args.suite} --only ROW",
        f"# rows: {names}; model2vec: --model2vec-python ENV/bin/python; "
        "search-*/random-*: --profile PROFILE",
        "```",
    ]
    return "\n".join(lines) + "\n"


def frontier(rows: list[dict[str, Any]], args: argparse.Namespace) -> Frontier:
    """The rows as the artifact run reports plot (copy it to kdcompress/reference/ as
    ``frontier-TEACHER.json`` to ship it)."""
    points = []
    for row in rows:
        for kind in ("fp32", "int8"):
            part = row.get(kind, {})
            speedup, retention = part.get("speedup", {}).get("128"), part.get("retention")
            if (
                speedup
                and retention is not None
                and (kind == "fp32" or row["name"] == "teacher-int8")
            ):
                name = row["name"] if kind == "fp32" else f"{row['name']} int8"
                points.append(FrontierPoint(name, row["what"], speedup, retention))
    return Frontier(
        teacher=args.teacher,
        cpu=cpu_model(),
        suite=args.suite,
        runtime="ONNX Runtime fp32",
        batch=1,
        seq_len=128,
        points=tuple(points),
    )


def _speed(row: dict[str, Any]) -> float:
    return float(row.get("fp32", {}).get("speedup", {}).get("128") or 0.0)


def _x(part: dict[str, Any], seq: str) -> str:
    value = part.get("speedup", {}).get(seq)
    return f"{value:.1f}x" if value else ""


def _pct(value: float | None) -> str:
    return f"{100 * value:.1f}%" if value is not None else ""


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for row in rows:
        if " = " in row["what"]:  # the same model as another row: drawn once
            continue
        for kind, marker in (("fp32", "o"), ("int8", "^")):
            part = row.get(kind)
            if part and part.get("retention") is not None and part["speedup"].get("128"):
                x, y = part["speedup"]["128"], 100 * part["retention"]
                ax.scatter([x], [y], marker=marker, color=_colour(row["name"]))
                if kind == "fp32":  # int8 (triangles) sits to the right of its fp32 point
                    ax.annotate(row["name"], (x, y), fontsize=7, rotation=25)
    ax.scatter([], [], marker="o", color="grey", label="fp32")
    ax.scatter([], [], marker="^", color="grey", label="dynamic int8")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("measured speedup vs the teacher (ONNX Runtime, batch 1, seq 128)")
    ax.set_ylabel("retention of the teacher's scores (%)")
    ax.axhline(90, color="grey", linewidth=0.5)
    ax.axvline(7, color="grey", linewidth=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _colour(name: str) -> str:
    colours = (("student", "C0"), ("truncated", "C1"), ("teacher", "C2"), ("search", "C4"))
    for prefix, colour in colours:
        if name.startswith(prefix):
            return colour
    return "C3"


def write_benchmarks(path: Path, text: str) -> None:
    body = path.read_text(encoding="utf-8")
    block = f"{START_MARK}\n{text}{END_MARK}"
    if START_MARK in body:
        before, rest = body.split(START_MARK, 1)
        body = before + block + rest.split(END_MARK, 1)[1]
    else:
        body = body.rstrip() + "\n\n## Frontier\n\n" + block + "\n"
    atomic_write_text(path, body)


def main() -> None:
    args = parse()
    (args.output / "rows").mkdir(parents=True, exist_ok=True)
    chosen = [r for r in ROWS if args.only is None or r.name in args.only]
    for row in chosen:
        path = args.output / "rows" / f"{row.name}.json"
        if path.is_file():
            continue
        if args.distill_only:
            folder = args.output / row.name
            folder.mkdir(parents=True, exist_ok=True)
            row.make(args, folder)
            print(f"{row.name}: model ready", flush=True)
            continue
        atomic_write_text(path, json.dumps(measure(args, row), indent=1))
        print(f"{row.name}: done", flush=True)
    if args.distill_only:
        return
    m2v = args.output / "rows" / "model2vec.json"
    if args.model2vec_python is not None and not m2v.is_file():
        atomic_write_text(m2v, json.dumps(model2vec_row(args, teacher_scores(args)), indent=1))
    rows = [json.loads(p.read_text()) for p in sorted((args.output / "rows").glob("*.json"))]
    text = table(rows, args)
    atomic_write_text(args.output / "frontier.md", text)
    frontier(rows, args).save(args.output / "frontier.json")
    plot(rows, args.output / "frontier.png")
    if args.benchmarks_md is not None:
        write_benchmarks(args.benchmarks_md, text)
    print(text)


if __name__ == "__main__":
    main()
