"""segvol's memory model of one training step, and the budget it is held to (docs/plan.md, "Memory model").

Bytes of one training step (fp32, Adam)::

    process + workspace + 16 x parameters + 16 x 4 x batch x (sum over stages of features x voxels at that stage
                                                             + (in_channels + 3 x out_channels) x patch voxels)

- ``process``: what the process holds before the network exists: about 0.6 GB of resident memory for Python,
  PyTorch and MONAI on the CPU, about 0.5 GB for the CUDA context on a GPU.
- ``workspace``: 0.2 GB for convolution workspaces and the allocator's slack.
- 16 bytes per parameter: the weights, their gradients and Adam's two moments.
- 16 activation tensors of each stage's size kept for the backward pass (two conv + norm + activation blocks in the
  encoder, the up-convolution, the concatenation and two more blocks in the decoder), measured on PyTorch 2.13
  (CPU): a 5-stage DynUNet at 64³, batch 2, peaked at 2.13 GB resident against 2.5 GB modelled; 4 stages at 32³:
  0.96 GB against 1.07 GB. The model is meant to err high.

Mixed precision halves most activations; the model does not count on it. The training cache (``data.cache``) is
not in the budget: on the CPU it adds its own size (the plan reports it).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from functools import lru_cache

__all__ = ["GB", "PROCESS_GB", "WORKSPACE_GB", "ACTIVATION_TENSORS", "training_bytes", "parameter_count",
           "memory_budget", "stage_voxels"]

log = logging.getLogger(__name__)

GB = 1024 ** 3
PROCESS_GB = {"cpu": 0.6, "cuda": 0.5}
WORKSPACE_GB = 0.2
ACTIVATION_TENSORS = 16
BYTES_PER_PARAMETER = 16
CPU_DEFAULT_GB = 8.0  # nnU-Net's default target; the CPU budget is at most half the RAM


def stage_voxels(patch: Sequence[int], strides: Sequence[Sequence[int]]) -> list[int]:
    """Voxels of each stage's feature map for ``patch`` under the per-stage ``strides``."""
    size = [int(p) for p in patch]
    out = []
    for stride in strides:
        size = [math.ceil(s / int(f)) for s, f in zip(size, stride)]
        out.append(math.prod(size))
    return out


@lru_cache(maxsize=256)
def parameter_count(name: str, kwargs_key: str) -> int:
    """Parameters of the network ``{"name": name, "kwargs": json.loads(kwargs_key)}``, built on the meta device
    (no memory, no initialisation)."""
    import json

    import torch

    from segvol.networks import build_network

    with torch.device("meta"):
        net = build_network({"name": name, "kwargs": json.loads(kwargs_key)})
    return int(sum(p.numel() for p in net.parameters()))


def training_bytes(patch: Sequence[int], batch: int, in_channels: int, out_channels: int,
                   filters: Sequence[int], strides: Sequence[Sequence[int]], parameters: int,
                   device: str = "cpu") -> int:
    """Modelled peak bytes of one training step (see the module's docstring)."""
    per_sample = sum(int(f) * v for f, v in zip(filters, stage_voxels(patch, strides)))
    per_sample += (int(in_channels) + 3 * int(out_channels)) * math.prod(int(p) for p in patch)
    fixed = (PROCESS_GB["cuda" if device.startswith("cuda") else "cpu"] + WORKSPACE_GB) * GB
    return int(fixed + BYTES_PER_PARAMETER * parameters + ACTIVATION_TENSORS * 4 * batch * per_sample)


def _ram_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    except (ValueError, OSError, AttributeError):
        return 2 * CPU_DEFAULT_GB


def memory_budget(device: str = "auto", memory_gb: float | None = None) -> tuple[float, str, str]:
    """``(GB, where it came from, "cpu" | "cuda")``: ``memory_gb`` when given, else the GPU's memory (``cuda`` or
    ``auto`` with a GPU present), else ``min(8, RAM / 2)`` on the CPU."""
    kind = "cpu"
    if device.startswith("cuda") or device == "auto":
        import torch

        if torch.cuda.is_available():
            kind = "cuda"
        elif device.startswith("cuda"):
            from segvol.errors import SegvolError

            raise SegvolError(f"--device {device}: PyTorch sees no CUDA device here")
    if memory_gb is not None:
        if not memory_gb > 0:
            from segvol.errors import SegvolError

            raise SegvolError(f"--memory-gb {memory_gb}: expected a positive number of GB")
        return float(memory_gb), "--memory-gb", kind
    if kind == "cuda":
        import torch

        index = int(device.split(":")[1]) if ":" in device else 0
        total = torch.cuda.get_device_properties(index).total_memory / GB
        return round(total, 2), f"memory of {torch.cuda.get_device_name(index)}", kind
    gb = min(CPU_DEFAULT_GB, _ram_gb() / 2)
    return round(gb, 2), f"CPU: min({CPU_DEFAULT_GB:g} GB, half of {_ram_gb():.1f} GB RAM)", kind
