"""PyTorch eager backend: the reference every exported model is compared against."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from kdcompress.backends.base import Backend, BackendName, LoadedModel
from kdcompress.errors import ModelNotFoundError

# Files of a Hugging Face model folder that make up the deployable PyTorch artifact, and the
# sentence-transformers module folders (``1_Pooling/``) that keep it a sentence-transformers model.
_HF_FILES = ("*.json", "*.safetensors", "*.bin", "*.txt", "*.model", "README.md")
_ST_MODULE_DIRS = "[0-9]_*"


class TorchModuleModel(LoadedModel):
    """Any ``nn.Module`` taking named tensors (building blocks when profiling, or a model)."""

    def __init__(
        self, module: Any, *, input_names: tuple[str, ...], threads: int, path: Path | None = None
    ) -> None:
        import torch

        super().__init__(backend=BackendName.TORCH, path=path or Path("<module>"), threads=threads)
        # torch's intra-op pool is per process: the thread count applies to everything torch
        # runs in this process from here on.
        torch.set_num_threads(threads)
        self._torch = torch
        self._module = module.eval()
        self._inputs = input_names

    @property
    def input_names(self) -> tuple[str, ...]:
        return self._inputs

    def _forward(self, tensors: dict[str, Any]) -> Any:
        return self._module(**tensors)

    def _run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        tensors = {k: self._torch.from_numpy(v) for k, v in inputs.items()}
        with self._torch.inference_mode():
            output: np.ndarray = self._forward(tensors).numpy()
        return output


class TorchModel(TorchModuleModel):
    """A Hugging Face encoder folder, run in PyTorch eager mode."""

    def __init__(self, *, path: Path, threads: int) -> None:
        import torch
        import transformers
        from transformers import AutoModel

        from kdcompress.assets import read_embedding_info

        # Only last_hidden_state is used: warnings about an unused pooler are noise here.
        transformers.logging.set_verbosity_error()
        # Checkpoints without pooler weights (e5) would otherwise get a random, unused pooler;
        # the argument is only passed when needed, as not every model class takes it.
        extra = {} if read_embedding_info(path).add_pooling_layer else {"add_pooling_layer": False}
        model = AutoModel.from_pretrained(path, dtype=torch.float32, **extra)
        names = model.forward.__code__.co_varnames
        inputs = tuple(n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names)
        super().__init__(model, input_names=inputs, threads=threads, path=path)

    def _forward(self, tensors: dict[str, Any]) -> Any:
        return self._module(**tensors).last_hidden_state


class TorchBackend(Backend):
    name = BackendName.TORCH

    def version(self) -> str:
        import torch

        return str(torch.__version__)

    def export(self, *, model_dir: Path, output_dir: Path) -> Path:
        output_dir.mkdir(parents=True, exist_ok=True)
        for pattern in _HF_FILES:
            for file in model_dir.glob(pattern):
                shutil.copy2(file, output_dir / file.name)
        for folder in model_dir.glob(_ST_MODULE_DIRS):
            if folder.is_dir():
                shutil.copytree(folder, output_dir / folder.name, dirs_exist_ok=True)
        return output_dir

    def load(self, *, model_path: Path, threads: int) -> LoadedModel:
        folder = model_path if model_path.is_dir() else model_path.parent
        if not (folder / "config.json").is_file():
            raise ModelNotFoundError(
                f"{model_path}: not a Hugging Face model folder (no config.json)"
            )
        return TorchModel(path=folder, threads=threads)
