"""A random-init teacher of a real model's configuration, for running the pipeline at that size
offline: e.g. XLM-RoBERTa base (12 x 768, FFN 3072, 250k vocabulary) with the tokenizer of the
built-in me5-small (the same XLM-R SentencePiece vocabulary).

    .venv/bin/python benchmarks/random_teacher.py --type xlm-roberta --output runs/xlmr-base-random
    .venv/bin/kdcompress run --teacher runs/xlmr-base-random --budget quick --output runs/xlmr-base

Its scores mean nothing (the weights are random); what it shows is that every stage runs, and
how long each takes, for a teacher of that shape.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--type", default="xlm-roberta", help="a transformers model type")
    parser.add_argument("--tokenizer-from", default="me5-small", help="built-in teacher or folder")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--ffn", type=int, default=3072)
    parser.add_argument("--positions", type=int, default=514, help="XLM-R: 512 + 2 offsets")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    if args.output.exists():
        raise SystemExit(f"{args.output} exists")

    import torch
    from transformers import AutoConfig, AutoModel

    from kdcompress.models import resolve_model

    source = resolve_model(args.tokenizer_from)
    known = json.loads((source / "config.json").read_text())
    config = AutoConfig.for_model(
        args.type,
        vocab_size=known["vocab_size"],
        pad_token_id=known.get("pad_token_id", 0),
        num_hidden_layers=args.layers,
        hidden_size=args.hidden,
        num_attention_heads=args.heads,
        intermediate_size=args.ffn,
        max_position_embeddings=args.positions,
        type_vocab_size=1,
    )
    torch.manual_seed(0)
    staging = args.output.with_name(args.output.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    AutoModel.from_config(config).eval().save_pretrained(staging)
    for name in TOKENIZER_FILES:
        shutil.copy2(source / name, staging / name)
    staging.rename(args.output)
    print(f"{args.output}: random-init {args.type}, {args.layers} x {args.hidden}")


if __name__ == "__main__":
    main()
