"""Collectives on the communication device, per-rank augmentation streams, device-side augmentation on the CPU."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from segvol import distributed as D
from segvol.distributed import DistInfo, communication_device


def test_communication_device_follows_the_backend():
    assert communication_device("gloo", torch.device("cpu")) == torch.device("cpu")
    assert communication_device("gloo", torch.device("cuda", 1)) == torch.device("cpu")
    assert communication_device("nccl", torch.device("cuda", 1)) == torch.device("cuda", 1)
    with pytest.raises(ValueError):
        communication_device("nccl", torch.device("cpu"))


def test_every_collective_sends_its_tensors_on_the_communication_device(monkeypatch):
    """An NCCL-only mistake (a CPU tensor handed to an NCCL collective) fails here, on the CPU: the collectives
    are replaced by recorders that demand what :func:`communication_device` gives for NCCL. The meta device
    stands in for the rank's GPU."""
    gpu = torch.device("meta")
    info = DistInfo(rank=0, local_rank=0, world_size=2, comm_device=communication_device("nccl", gpu))
    seen: list[tuple[str, torch.device]] = []

    def tensor_op(name):
        def op(tensor, *args, **kwargs):
            if name == "all_gather":  # (output list, input)
                seen.extend((name, t.device) for t in [*tensor, args[0]])
            else:
                seen.append((name, tensor.device))
            raise _Sent

        return op

    def object_op(name):
        def op(*args, device=None, **kwargs):
            seen.append((name, device))
            raise _Sent

        return op

    def barrier(device_ids=None, **kwargs):
        seen.append(("barrier", torch.device("meta") if device_ids is None else None))
        raise _Sent

    for name in ("all_reduce", "broadcast", "all_gather"):
        monkeypatch.setattr(dist, name, tensor_op(name))
    monkeypatch.setattr(dist, "broadcast_object_list", object_op("broadcast_object_list"))
    monkeypatch.setattr(dist, "gather_object", object_op("gather_object"))
    monkeypatch.setattr(dist, "barrier", barrier)
    calls = {
        "all_reduce_sum": lambda: D.all_reduce_sum(torch.zeros(2, 3, dtype=torch.float64), info),
        "broadcast_flag": lambda: D.broadcast_flag(True, info),
        "broadcast_object": lambda: D.broadcast_object("run-name", info),
        "weights_in_sync": lambda: D.weights_in_sync(torch.nn.Linear(3, 2), info),
        "barrier": lambda: D.barrier(info),
    }
    for name, call in calls.items():
        seen.clear()
        with pytest.raises(_Sent):
            call()
        assert seen, f"{name} reached no collective"
        for op, device in seen:
            if op == "barrier":  # a barrier carries no tensor; on the meta stand-in it names no CUDA device
                continue
            assert device == gpu, f"{name}: {op} got a tensor on {device}, NCCL needs {gpu}"
    # gather_object picks the device itself from torch.cuda's current device: checked on a GPU in tests/gpu


class _Sent(Exception):
    """Raised by the recorders once a collective has been called."""


def test_each_rank_draws_its_own_augmentation_reproducibly():
    from segvol.config import load_config
    from segvol.training.data import Augmented, augment_seed

    cfg = load_config("tiny")
    volume = _volume()
    ds = Augmented([volume], cfg, torch.device("cpu"))

    def patches(epoch, rank):
        ds.reseed(augment_seed(cfg.train.seed, epoch, rank))
        return torch.stack([p["image"] for p in ds[0]])

    rank0, rank1 = patches(3, 0), patches(3, 1)
    assert rank0.shape == (cfg.augment.num_samples, 1, *cfg.preprocess.roi_size)
    assert not torch.equal(rank0, rank1)  # same volume, same epoch: different draws per rank
    assert torch.equal(patches(3, 1), rank1)  # a function of (seed, epoch, rank): a resumed run redraws it
    assert len({augment_seed(0, e, r) for e in range(1, 200) for r in range(8)}) == 199 * 8


def _volume(meta: bool = False) -> dict:
    """A cached-volume item: image, a ball label, and its crop positions (as the training cache stores them)."""
    from monai.data import MetaTensor
    from monai.transforms import Compose

    from segvol.transforms import crop_indices

    rng = torch.Generator().manual_seed(0)
    grid = torch.stack(torch.meshgrid(*[torch.arange(48.0)] * 3, indexing="ij"))
    label = (((grid - torch.tensor([20.0, 26.0, 24.0]).view(3, 1, 1, 1)) ** 2).sum(0) < 81).float()[None]
    image = label * 2 + torch.randn(1, 48, 48, 48, generator=rng)
    affine = torch.diag(torch.tensor([1.0, 1.0, 1.0, 1.0]))
    item = {"image": MetaTensor(image, affine=affine), "label": MetaTensor(label, affine=affine)}
    item = Compose(crop_indices())(item)
    if not meta:
        item = {k: v.as_tensor() if isinstance(v, MetaTensor) else v for k, v in item.items()}
    return item


def test_device_side_augmentation_matches_the_metatensor_path():
    """``train.gpu_augment`` on the CPU: volumes cached as plain tensors on the device give the crops and
    augmentation that the MetaTensor volumes give, for the same random state."""
    from segvol.config import load_config
    from segvol.training.data import Augmented

    cfg = load_config("tiny", ["augment.rotate_prob=1.0", "augment.flip_prob=1.0", "augment.noise_prob=1.0"])
    on_device = Augmented([_volume()], cfg, torch.device("cpu"))
    meta = Augmented([_volume(meta=True)], cfg, None)
    for seed in (1, 2):
        on_device.reseed(seed)
        meta.reseed(seed)
        a, b = on_device[0], meta[0]
        assert len(a) == len(b) == cfg.augment.num_samples
        for pa, pb in zip(a, b):
            assert pa["image"].device == torch.device("cpu")
            assert torch.equal(torch.as_tensor(pa["label"]), torch.as_tensor(pb["label"]))  # same crops' labels
            assert torch.allclose(torch.as_tensor(pa["image"]), torch.as_tensor(pb["image"]), atol=1e-5)
        assert sum(float(p["label"].sum()) for p in a) > 0  # foreground-centred crops hold the ball
