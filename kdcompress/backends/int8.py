"""What the int8 flow of :mod:`kdcompress.quantize` needs from a runtime (NNCF's shape).

The flow is generic: CPU presets, the plans from most to least aggressive, the parity and
quality gates and the fallbacks live in ``quantize.py``. Each runtime implements this interface
in a module of its own (``onnxruntime_int8.py``, ``openvino_int8.py``), which the flow imports
in the runtime's own branch, so a missing runtime costs nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from kdcompress.artifacts import Int8Settings


@dataclass(frozen=True)
class Int8Setup:
    """The fp32 export to quantize and the CPU-dependent choices made for it."""

    fp32_file: Path
    model_dir: Path  # the Hugging Face folder the export came from (config.json)
    work: Path  # scratch folder for intermediate graphs and attempts
    preset: str  # the CPU preset's name, recorded in the settings
    reduce_range: bool  # 7-bit weights against non-VNNI saturation
    per_channel: bool


class Int8Backend(ABC):
    """One runtime's int8 specifics: exclusions, settings, the library call, the final file."""

    suffix: ClassVar[str]  # of the runtime's model files: .onnx, .xml

    def __init__(self, setup: Int8Setup) -> None:
        self.setup = setup

    @property
    def work(self) -> Path:
        return self.setup.work

    @abstractmethod
    def exclusions(self, static: bool, layers: set[int]) -> tuple[list[str], set[str]]:
        """Names of the operations of ``layers`` (and the embeddings) to keep fp32; parts found."""

    @abstractmethod
    def settings(self, static: bool, calibrated: int) -> Int8Settings:
        """The settings a static or dynamic plan runs with on this CPU (before keep_fp32)."""

    @abstractmethod
    def quantize(
        self,
        static: bool,
        target: Path,
        calibration: Sequence[Mapping[str, np.ndarray]],
        exclude: Sequence[str],
    ) -> None:
        """Write the int8 model to ``target``; operations named in ``exclude`` stay fp32."""

    def move(self, source: Path, target: Path) -> Path:
        """Move the accepted attempt ``source`` to ``target`` (its place in the export)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        source.replace(target)
        return target
