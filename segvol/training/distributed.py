"""PyTorch DDP under ``torchrun``: process group set-up, rank-0-only side effects, reductions."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist

from segvol.config import distributed_env

__all__ = ["DistInfo", "init_distributed", "all_reduce_sum", "broadcast_flag", "weights_in_sync", "shutdown"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by ``torchrun`` (NCCL on CUDA, gloo on the CPU).

    Returns the rank info and this rank's device (``cuda:<local_rank>`` on GPUs).
    """
    rank, local_rank, world = distributed_env()
    info = DistInfo(rank, local_rank, world)
    if not info.enabled:
        return info, device
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    log.info("distributed: rank %d of %d on %s", rank, world, device)
    return info, device


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks (a no-op in a single process)."""
    if info.enabled:
        backend_device = values.device if dist.get_backend() == "nccl" else torch.device("cpu")
        values = values.to(backend_device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """Rank 0's decision (e.g. early stopping) for every rank."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.broadcast(t, src=0)
    return bool(t.item())


def weights_in_sync(model: torch.nn.Module, info: DistInfo) -> bool:
    """True when every rank holds the same parameters (checked through a per-rank checksum)."""
    if not info.enabled:
        return True
    flat = torch.cat([p.detach().double().flatten() for p in model.parameters()]).cpu()
    mine = torch.stack([flat.sum(), (flat * torch.arange(len(flat), dtype=torch.float64)).sum()])
    gathered = [torch.zeros_like(mine) for _ in range(info.world_size)]
    dist.all_gather(gathered, mine)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
