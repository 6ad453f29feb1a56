"""Peak inference memory of a deployed model, measured in a process of its own.

The number that matters for deployment is the resident memory of a server process that holds
the runtime and the model, not that of kdcompress (which also holds PyTorch, transformers and
the teacher). So a fresh interpreter is started that imports only numpy and the runtime, reads
its RSS, loads the model, runs a few full-length inferences and reports its peak RSS: the
model's share is the difference.

    python -m kdcompress.memory BACKEND MODEL_PATH SEQ_LEN THREADS VOCAB  # prints one JSON line
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from kdcompress.artifacts import MemoryUse
from kdcompress.errors import ArtifactError

_RUNS = 3


def _peak_rss_mib() -> float:
    """This process's resident high-water mark (``VmHWM``).

    Not ``getrusage``'s ``ru_maxrss``: Linux carries it over from the parent across fork and
    exec, so a probe started by a large process would report the parent's memory. ``VmHWM``
    belongs to the address space, which exec creates anew.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise ArtifactError("cannot read peak memory: /proc/self/status has no VmHWM (not Linux?)")


def measure_memory(
    *, backend: str, model_path: Path, seq_len: int, threads: int, vocab_size: int
) -> MemoryUse:
    """Start a clean process that loads and runs ``model_path`` and read its peak RSS."""
    command = [sys.executable, "-m", "kdcompress.memory", backend, str(model_path)]
    numbers = [str(seq_len), str(threads), str(vocab_size)]
    try:
        done = subprocess.run([*command, *numbers], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as exc:
        raise ArtifactError(f"measuring the memory of {model_path} took over 600 s") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ArtifactError(f"measuring the memory of {model_path} failed: {last}")
    try:
        return MemoryUse(**json.loads(done.stdout.strip().splitlines()[-1]))
    except (IndexError, ValueError, TypeError) as exc:
        raise ArtifactError(
            f"measuring the memory of {model_path} failed: unreadable probe output"
        ) from exc


def _probe(
    backend_name: str, model_path: Path, seq_len: int, threads: int, vocab_size: int
) -> MemoryUse:
    import numpy as np

    from kdcompress.backends import get_backend

    backend = get_backend(backend_name)
    backend.version()  # imports the runtime: its memory is not the model's
    runtime = _peak_rss_mib()
    model = backend.load(model_path=model_path, threads=threads)
    # The token values do not change the memory; they only have to exist in the vocabulary.
    ids = np.random.default_rng(0).integers(0, vocab_size, size=(1, seq_len), dtype=np.int64)
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    for _ in range(_RUNS):
        model.run(batch)
    return MemoryUse(runtime_mib=runtime, peak_mib=_peak_rss_mib(), seq_len=seq_len)


if __name__ == "__main__":
    name, path, length, count, vocab = sys.argv[1:6]
    use = _probe(name, Path(path), int(length), int(count), int(vocab))
    print(json.dumps(dataclasses.asdict(use)))
