"""A user's model folder is checked before any work: each kind of damage is one clear error."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from kdcompress.errors import ModelNotFoundError
from kdcompress.models import ResolvedModel, resolve_model, resolve_teacher, resolved


def _copy(tiny_bert: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bert, tmp_path / "model"))


def _cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _edit_config(folder: Path, **changes: object) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _rename_tensors(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    save_file({f"h.{i}.w": t for i, t in enumerate(tensors.values())}, folder / "model.safetensors")


def _torch_bin_cut_short(folder: Path) -> None:
    import torch
    from safetensors.torch import load_file

    weights = folder / "model.safetensors"
    torch.save(load_file(weights), folder / "pytorch_model.bin")
    weights.unlink()
    _cut(folder / "pytorch_model.bin", 4000)


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "weights cut short": (
        lambda f: _cut(f / "model.safetensors", 5000),
        "model.safetensors: damaged weights file (incomplete metadata",
    ),
    "weights last bytes lost": (
        lambda f: _cut(f / "model.safetensors", (f / "model.safetensors").stat().st_size - 4),
        "model.safetensors: damaged weights file",
    ),
    "weights garbage": (
        lambda f: (f / "model.safetensors").write_bytes(b"\x93garbage" * 999),
        "model.safetensors: damaged weights file",
    ),
    "no weights": (
        lambda f: (f / "model.safetensors").unlink(),
        "no weights file (model.safetensors or pytorch_model.bin)",
    ),
    "other model's weights": (_rename_tensors, "the weights hold none of the tensors"),
    "torch weights cut short": (
        _torch_bin_cut_short,
        "pytorch_model.bin: damaged weights file (cut short)",
    ),
    "config garbage": (
        lambda f: (f / "config.json").write_text("garbage{"),
        "config.json: not a readable JSON model config",
    ),
    "config cut short": (
        lambda f: _cut(f / "config.json", 100),
        "config.json: not a readable JSON model config",
    ),
    "config not a model's": (
        lambda f: (f / "config.json").write_text("{}"),
        "config.json: no 'model_type': not a Hugging Face model config",
    ),
    "config of another size": (
        lambda f: _edit_config(f, hidden_size=64),
        "config.json does not match the weights (embeddings.word_embeddings.weight is "
        "[51, 32] in the weights file, [51, 64] by the config)",
    ),
    "config value of a wrong type": (
        lambda f: _edit_config(f, hidden_size="abc"),
        "config.json: describes no model the libraries can build",
    ),
    "tokenizer garbage": (
        lambda f: (f / "tokenizer.json").write_text('{"x":'),
        "the tokenizer does not load (expected",
    ),
    "no tokenizer": (
        lambda f: [(f / n).unlink() for n in ("tokenizer.json", "vocab.txt")],
        "the tokenizer does not load (none of tokenizer.json, vocab.txt",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_model_folder_is_one_error_naming_the_file(
    tmp_path: Path, tiny_bert: Path, damage: str
) -> None:
    folder = _copy(tiny_bert, tmp_path)
    spoil, message = DAMAGES[damage]
    spoil(folder)
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model(str(folder))
    assert message in str(caught.value)
    assert str(folder) in str(caught.value)


def test_a_checkpoint_saved_with_a_head_is_accepted(tmp_path: Path, tiny_bert: Path) -> None:
    from transformers import AutoModelForMaskedLM

    folder = _copy(tiny_bert, tmp_path)
    AutoModelForMaskedLM.from_pretrained(tiny_bert).save_pretrained(folder)  # keys "bert.*"
    assert resolve_model(str(folder)) == folder


def test_a_model_resolved_once_is_passed_on_with_its_name(
    tiny_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    teacher = resolve_teacher(str(tiny_bert))
    assert teacher == ResolvedModel(str(tiny_bert), tiny_bert)

    def again(*_: object, **__: object) -> Path:
        raise AssertionError("a resolved model was resolved again")

    monkeypatch.setattr("kdcompress.models.resolve_model", again)
    assert resolved(teacher) is teacher
