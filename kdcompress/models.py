"""Resolve what the user names as a model (a built-in teacher, a local folder or a hub id), and
read its shape."""

from __future__ import annotations

import json
import re
from pathlib import Path

from kdcompress.artifacts import StudentArch
from kdcompress.errors import ModelNotFoundError, first_line

# "org/name" or "name": what a Hugging Face Hub id looks like (and a local path usually not).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _builtin_names() -> list[str]:
    from kdcompress.assets import TEACHERS

    return sorted(TEACHERS)


def resolve_model(name_or_path: str) -> Path:
    """A local Hugging Face model folder for ``name_or_path``.

    Order: an existing local folder; a built-in offline teacher (fetched and cached on first
    use); a Hugging Face Hub id (for users who have hub access).
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path.is_dir() and (path / "config.json").is_file()):
            raise ModelNotFoundError(f"{path}: not a Hugging Face model folder (no config.json)")
        return path
    if not _HUB_ID.match(name_or_path) or name_or_path.startswith("."):
        raise ModelNotFoundError(f"model '{name_or_path}' not found: no such folder")
    if name_or_path in _builtin_names():
        from kdcompress.assets import teacher_dir

        return teacher_dir(name_or_path)
    return _from_hub(name_or_path)


def _from_hub(model_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                model_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]
            )
        )
    except Exception as exc:  # offline, unknown repo, auth: all mean "cannot use this model"
        builtins = ", ".join(_builtin_names())
        reason = first_line(exc)
        raise ModelNotFoundError(
            f"model '{model_id}' not found: not a local folder, not a built-in teacher "
            f"({builtins}), and not available from the Hugging Face Hub ({reason})"
        ) from exc


def teacher_arch(teacher_dir: Path) -> StudentArch:
    """The teacher's own shape, to predict its latency with the same latency model."""
    config = json.loads((teacher_dir / "config.json").read_text())
    return StudentArch(
        layers=int(config["num_hidden_layers"]),
        hidden=int(config["hidden_size"]),
        heads=int(config["num_attention_heads"]),
        ffn=int(config["intermediate_size"]),
        activation=str(config.get("hidden_act", "gelu")),
    )
