"""PyTorch DDP under ``torchrun``: process group set-up, rank-0-only side effects, collectives.

Every collective goes through this module and sends its tensors on :attr:`DistInfo.comm_device`, decided once by
:func:`communication_device`: the rank's GPU for NCCL (which only takes CUDA tensors), the CPU for gloo. The
same code therefore runs on a GPU node and in CPU CI, and a unit test can check the device of every collective.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from segvol.config import distributed_env

__all__ = ["DistInfo", "init_distributed", "communication_device", "all_reduce_sum", "broadcast_flag",
           "broadcast_object", "gather_objects", "barrier", "weights_in_sync", "shard", "gather_shards", "shutdown"]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    comm_device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives' tensors live

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def communication_device(backend: str, device: torch.device) -> torch.device:
    """The device a collective's tensors must sit on: ``device`` (the rank's GPU) for NCCL, the CPU otherwise."""
    if backend == "nccl":
        if device.type == "cpu":
            raise ValueError("the NCCL backend needs the rank's CUDA device, not the CPU")
        return device
    return torch.device("cpu")


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by ``torchrun`` (NCCL on CUDA, gloo on the CPU). Idempotent.

    Returns the rank info and this rank's device (``cuda:<local_rank>`` on GPUs).
    """
    rank, local_rank, world = distributed_env()
    if world <= 1:
        return DistInfo(rank, local_rank, world), device
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        log.info("distributed: rank %d of %d on %s (%s)", rank, world, device, dist.get_backend())
    info = DistInfo(rank, local_rank, world, communication_device(dist.get_backend(), device))
    return info, device


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks (a no-op in a single process); the result is on ``values``' device."""
    if not info.enabled:
        return values
    sent = values.to(info.comm_device)
    dist.all_reduce(sent, op=dist.ReduceOp.SUM)
    return sent.to(values.device)


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """Rank 0's decision (e.g. early stopping) for every rank."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.comm_device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def broadcast_object(obj: T, info: DistInfo) -> T:
    """Rank 0's ``obj`` (any picklable value, e.g. the run name) on every rank."""
    if not info.enabled:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0, device=info.comm_device)
    return box[0]  # type: ignore[return-value]


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` in rank order on rank 0 (other ranks get an empty list)."""
    if not info.enabled:
        return [obj]
    out: list[Any] | None = [None] * info.world_size if info.is_main else None
    if info.comm_device.type == "cuda":  # gather_object with NCCL picks the current device; make it the rank's
        torch.cuda.set_device(info.comm_device)
    dist.gather_object(obj, out, dst=0)
    return out or []


def barrier(info: DistInfo) -> None:
    """Wait for every rank (e.g. until rank 0 has prepared the run folder)."""
    if info.enabled:
        dist.barrier(device_ids=[info.comm_device.index] if info.comm_device.type == "cuda" else None)


def weights_in_sync(model: torch.nn.Module, info: DistInfo) -> bool:
    """True when every rank holds the same parameters (checked through a per-rank checksum)."""
    if not info.enabled:
        return True
    flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])
    mine = torch.stack([flat.sum(), (flat * torch.arange(len(flat), dtype=torch.float64, device=flat.device)).sum()])
    mine = mine.to(info.comm_device)
    gathered = [torch.zeros_like(mine) for _ in range(info.world_size)]
    dist.all_gather(gathered, mine)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def shard(items: Sequence[T], info: DistInfo) -> list[T]:
    """This rank's share of ``items`` (every ``world_size``-th, from ``rank``): shards differ by at most one."""
    return list(items[info.rank::info.world_size])


def gather_shards(mine: list[T], info: DistInfo) -> list[T]:
    """The inverse of :func:`shard`: every rank's results on rank 0, back in the order of the sharded items
    (other ranks get an empty list)."""
    if not info.enabled:
        return list(mine)
    parts = gather_objects(list(mine), info)
    return [part[i] for i in range(max((len(p) for p in parts), default=0)) for part in parts if i < len(part)]


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
