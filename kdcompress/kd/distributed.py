"""Where a process sits in a ``torchrun`` job, and the collective steps the loop needs."""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from kdcompress.errors import KDCompressError


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a ``torchrun`` job (all zeros and ones when alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    node: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env() -> DistEnv:
    """Read the ``torchrun`` environment variables."""

    def read(name: str, default: int) -> int:
        return int(os.environ.get(name, default))

    world = read("WORLD_SIZE", 1)
    return DistEnv(
        rank=read("RANK", 0),
        world=world,
        local_rank=read("LOCAL_RANK", 0),
        local_world=read("LOCAL_WORLD_SIZE", world),
        node=read("GROUP_RANK", 0),
    )


@contextmanager
def process_group(env: DistEnv) -> Iterator[None]:
    """Join the ``torchrun`` job (gloo on CPU, NCCL on GPU) if there is one and we are not in."""
    dist = torch.distributed
    created = env.world > 1 and not dist.is_initialized()
    if created:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(env.local_rank)
        # Long timeout: rank 0 may spend minutes writing outputs while the others wait.
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))
    try:
        yield
    finally:
        if created:
            dist.destroy_process_group()


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def device_for(env: DistEnv) -> torch.device:
    return (
        torch.device("cuda", env.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    )


def all_reduce(values: Tensor) -> Tensor:
    if is_distributed():
        torch.distributed.all_reduce(values)
    return values


def agree(env: DistEnv, check: Callable[[], Any]) -> Any:
    """Run ``check`` on rank 0 only and give every rank its result, or its error.

    For decisions about files that may exist only on rank 0's node (checkpoints, outputs):
    all ranks then raise the same error instead of some waiting forever for the others.
    """
    outcome: list[Any] = [None, None]
    if env.is_main:
        try:
            outcome[0] = check()
        except KDCompressError as exc:
            outcome[1] = exc
    if is_distributed():
        torch.distributed.broadcast_object_list(outcome, src=0)
    if outcome[1] is not None:
        raise outcome[1]
    return outcome[0]
