"""Output parity of a runtime model with its PyTorch source, and model file sizes.

Shared by export (the parity gate of fp32 and int8 files), quantization (each int8 plan is held
to it) and validation (the report's parity table).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kdcompress.artifacts import ParityReport
from kdcompress.backends import LoadedModel, get_backend
from kdcompress.encoding import SAMPLE_SENTENCES, load_tokenizer, mean_pool, row_cosine, tokenize


def _text_prefix(model_dir: Path) -> str:
    info = model_dir / "kdcompress_model.json"
    return str(json.loads(info.read_text()).get("text_prefix", "")) if info.is_file() else ""


def check_parity(
    *, source_dir: Path, candidate: LoadedModel, min_cosine: float = 0.999
) -> ParityReport:
    """Compare ``candidate`` with the PyTorch model in ``source_dir`` on multilingual sentences."""
    reference = get_backend("torch").load(model_path=source_dir, threads=candidate.threads)
    prefix = _text_prefix(source_dir)
    batch = tokenize(load_tokenizer(source_dir), [prefix + s for s in SAMPLE_SENTENCES])
    expected, actual = reference.run(batch), candidate.run(batch)
    mask = batch["attention_mask"]
    cosines = row_cosine(mean_pool(expected, mask), mean_pool(actual, mask))
    return ParityReport(
        sentences=len(SAMPLE_SENTENCES),
        max_abs_diff=float(np.abs(expected - actual)[mask.astype(bool)].max()),
        min_cosine=float(cosines.min()),
        mean_cosine=float(cosines.mean()),
        min_cosine_required=min_cosine,
    )


def model_bytes(model_file: Path) -> int:
    """Size of a model file and its weights file (OpenVINO's .bin, ONNX external data)."""
    files = [model_file, model_file.with_suffix(".bin"), Path(f"{model_file}_data")]
    return sum(f.stat().st_size for f in files if f.is_file())
