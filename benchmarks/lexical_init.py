"""The IMDB gap, one more hypothesis: word embeddings that already mean what the teacher means.

A student's frozen word embeddings are the teacher's *input* embeddings, while its first layer
starts from a late teacher layer, which was trained on the teacher's layer-(s-1) states. This
experiment gives every token of the vocabulary, once, the state that layer expects: the teacher's
layer-(s-1) hidden state of the token alone (``<s> token </s>``, the token's position; the idea
of model2vec, which takes the last layer's output of each lone token), stored before the affine
part of that layer's LayerNorm, whose weight and bias become the student's embedding LayerNorm.
Position and token-type embeddings are the teacher's, rescaled to the new word embeddings' norm.
The distillation then runs unchanged (``kdcompress distill`` arguments after ``--``):

    .venv/bin/python benchmarks/lexical_init.py --states runs/lex -- --teacher me5-small \\
      --arch-json '{"layers":1,"hidden":384,"heads":12,"ffn":384}' --steps 1000 \\
      --sentences 12800 --output runs/lex/1x384/student --cache runs/ablation/cache-xling

The lone-token states (250,037 tokens through 11 layers: about 11 min on 2 busy cores) are kept
in ``--states`` and reused. Result in BENCHMARKS.md ("The IMDB gap"): it lowers IMDB.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch


def lone_token_states(teacher: Any, layers: int, folder: Path, batch: int = 2048) -> np.ndarray:
    """The teacher's hidden state after ``layers`` layers of every token alone, cached."""
    path = folder / f"lone-tokens-L{layers}.npy"
    if path.is_file():
        return np.load(path)
    cls = teacher.config.bos_token_id if teacher.config.bos_token_id is not None else 0
    sep = teacher.config.eos_token_id if teacher.config.eos_token_id is not None else 2
    model = copy.deepcopy(teacher).eval()
    model.encoder.layer = model.encoder.layer[:layers]
    vocab = teacher.get_input_embeddings().weight.shape[0]
    states = np.zeros((vocab, teacher.config.hidden_size), np.float32)
    with torch.inference_mode():
        for start in range(0, vocab, batch):
            ids = torch.arange(start, min(vocab, start + batch))
            inputs = torch.stack([torch.full_like(ids, cls), ids, torch.full_like(ids, sep)], 1)
            hidden = model(input_ids=inputs, attention_mask=torch.ones_like(inputs))
            states[start : start + len(ids)] = hidden.last_hidden_state[:, 1].numpy()
            print(f"lone tokens: {start + len(ids)}/{vocab}", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(path, states)
    return states


def lexical_init(folder: Path) -> None:
    """Wrap the distillation's student builder to replace the embeddings as described above."""
    import kdcompress.kd.loop as loop
    from kdcompress.kd.mapping import init_source_layers

    build = loop.build_student

    def build_student(teacher: Any, arch: Any, **options: Any) -> Any:
        student, report = build(teacher, arch, **options)
        first = init_source_layers(teacher.config.num_hidden_layers, arch.layers)[0]
        if first <= 1 or options.get("keep_tokens") is not None:
            return student, report  # input embeddings already fit layer 1; no trimmed vocab
        norm = teacher.encoder.layer[first - 2].output.LayerNorm
        states = torch.from_numpy(lone_token_states(teacher, first - 1, folder))
        normalised = (states - norm.bias.detach()) / norm.weight.detach()
        dims = torch.as_tensor(report.hidden_dims)
        source, target = teacher.embeddings, student.embeddings
        scale = normalised.norm(dim=1).mean() / source.word_embeddings.weight.norm(dim=1).mean()
        with torch.no_grad():
            target.word_embeddings.weight.copy_(normalised[:, dims])
            target.LayerNorm.weight.copy_(norm.weight[dims])
            target.LayerNorm.bias.copy_(norm.bias[dims])
            for name in ("position_embeddings", "token_type_embeddings"):
                weight = getattr(source, name).weight[:, dims] * scale
                getattr(target, name).weight.copy_(weight)
        print(f"word embeddings: teacher layer {first - 1} states of lone tokens", flush=True)
        return student, report

    loop.build_student = build_student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--states", type=Path, required=True, help="folder for the token states")
    parser.add_argument("distill", nargs=argparse.REMAINDER, help="-- kdcompress distill args")
    args = parser.parse_args()
    lexical_init(args.states)
    from kdcompress.cli import main as cli

    sys.argv = ["kdcompress", "distill", *[a for a in args.distill if a != "--"]]
    cli()


if __name__ == "__main__":
    main()
