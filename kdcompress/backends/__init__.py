"""Backend registry: look a backend up by name without importing the libraries of the others.

Each backend module is imported only inside its own branch, so a missing runtime costs nothing
until it is asked for, and then it is reported as unavailable with the fix, not as a traceback.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from kdcompress.backends.base import Backend, BackendName, LoadedModel, benchmark
from kdcompress.errors import BackendUnavailableError, parse_choice

__all__ = [
    "Backend",
    "BackendName",
    "BackendStatus",
    "LoadedModel",
    "benchmark",
    "get_backend",
    "parse_backend_name",
]

# The Python package each backend needs, and the pip requirement that provides it.
_REQUIRES: dict[BackendName, tuple[str, str]] = {
    BackendName.TORCH: ("torch", "torch==2.13.0"),
    BackendName.ONNXRUNTIME: ("onnxruntime", "onnxruntime==1.32.0"),
    BackendName.OPENVINO: ("openvino", "openvino==2026.4.1"),
}


@dataclass(frozen=True)
class BackendStatus:
    name: BackendName
    available: bool
    detail: str  # the library version, or why it is unavailable


def parse_backend_name(name: str) -> BackendName:
    return parse_choice(BackendName, name, what="backend", error=BackendUnavailableError)


def _check_installed(name: BackendName) -> None:
    module, requirement = _REQUIRES[name]
    if importlib.util.find_spec(module) is None:
        raise BackendUnavailableError(
            f"backend '{name}' is unavailable: Python package '{module}' is not installed "
            f"(pip install '{requirement}')"
        )


def get_backend(name: str | BackendName) -> Backend:
    """The backend called ``name``; a clear error if unknown or its library is missing."""
    backend = parse_backend_name(str(name))
    _check_installed(backend)
    if backend is BackendName.TORCH:
        from kdcompress.backends.torch import TorchBackend

        return TorchBackend()
    if backend is BackendName.ONNXRUNTIME:
        from kdcompress.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend()
    from kdcompress.backends.openvino import OpenVinoBackend

    return OpenVinoBackend()


def backend_statuses() -> list[BackendStatus]:
    """Every known backend with its library version or the reason it cannot be used."""
    statuses = []
    for name in BackendName:
        try:
            statuses.append(BackendStatus(name, True, get_backend(name).version()))
        except BackendUnavailableError as exc:
            statuses.append(BackendStatus(name, False, str(exc)))
    return statuses
