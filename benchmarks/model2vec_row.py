"""Distil static token embeddings from the teacher with model2vec (MinishLab), offline.

Runs in an environment of its own with ``model2vec==0.10.0`` (it needs a huggingface-hub newer
than the one the pinned transformers accepts); ``benchmarks/frontier.py`` calls it with that
environment's Python and scores the result with the project's own evaluation suite.

    python benchmarks/model2vec_row.py --teacher ~/.cache/kdcompress/me5-small --output DIR
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", type=Path, required=True, help="a local model folder")
    parser.add_argument("--pca-dims", type=int, default=256)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()

    from model2vec.distill import distill

    started = time.perf_counter()
    model = distill(model_name=str(args.teacher), pca_dims=args.pca_dims)
    model.save_pretrained(str(args.output / "model"))
    facts = {"pca_dims": args.pca_dims, "distill_s": time.perf_counter() - started}
    (args.output / "model2vec.json").write_text(json.dumps(facts, indent=1))


if __name__ == "__main__":
    main()
