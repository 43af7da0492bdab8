"""What only a GPU can confirm (``make gpu-check``): CUDA training steps with AMP and GPU-side augmentation,
DDP over NCCL, inference with device-side transforms, ONNX Runtime's CUDA provider, and stitching on the CPU when
GPU memory is short. Every test skips, saying why, where PyTorch sees no CUDA device."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from segvol import api
from segvol.config import config_to_dict, load_config
from segvol.networks import build_network, network_args
from segvol.checkpoint import save_checkpoint
from tests.conftest import REPO

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="no CUDA device here: the gpu suite runs on a GPU machine (make gpu-check)")]
CUDA = torch.device("cuda")
TASK = {"in_channels": 1, "out_channels": 2, "activation": "softmax", "class_names": ["artery"], "modalities": ["ct"]}


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _records(root):
    cfg = load_config("tiny", data={"root": str(root)})
    _, spec, groups, _ = api.resolve_records(cfg)
    return spec, groups


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_training_steps_with_amp_and_gpu_augmentation(imagecas_small, dtype):
    from segvol.training.trainer import Trainer
    from segvol.utils import seed_everything

    cfg = load_config("tiny", [f"train.amp_dtype={dtype}", "train.amp=true", "train.gpu_augment=true"],
                      data={"root": str(imagecas_small)})
    spec, groups = _records(imagecas_small)
    seed_everything(0, deterministic=False)
    trainer = Trainer(cfg, spec, CUDA)
    trainer.attach_data(groups["train"][:2], groups["val"][:1])
    assert trainer.train_ds.volumes[0]["image"].device.type == "cuda"  # cached on the GPU
    batch = next(iter(trainer.loader(1)))
    assert batch["image"].device.type == "cuda"  # cropped and augmented there
    losses = [float(trainer.train_step(batch)) for _ in range(3)]
    assert all(np.isfinite(losses))
    assert (trainer.state.scaler is not None) == (dtype == "fp16")
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    scores = trainer.validate()
    assert 0 <= scores["val_dice"] <= 1


def _tiny_ckpt(path):
    cfg = load_config("tiny")
    args = network_args(cfg, 1, 2)
    torch.manual_seed(1)
    save_checkpoint(path, {"config": config_to_dict(cfg), "network": args, "task": TASK,
                           "state_dict": build_network(args).state_dict()})
    return path


def test_inference_with_device_transforms_matches_the_cpu(tmp_path, imagecas_small):
    scan = imagecas_small / "1.img.nii.gz"
    ckpt = _tiny_ckpt(tmp_path / "m.pt")
    (gpu,) = api.infer(inputs=[scan], model=ckpt, out=tmp_path / "gpu.nii.gz", device="cuda")
    (cpu,) = api.infer(inputs=[scan], model=ckpt, out=tmp_path / "cpu.nii.gz", device="cpu")
    ref = nib.load(str(scan))
    assert gpu.labels.shape == ref.shape and np.allclose(gpu.affine, ref.affine, atol=1e-3)
    assert cpu.labels.sum() > 0
    agree = float((gpu.labels == cpu.labels).mean())
    assert agree > 0.999, f"GPU and CPU masks agree on only {agree:.4%} of voxels"


def test_onnx_runtime_runs_on_the_cuda_provider(tmp_path):
    import onnxruntime as ort

    from segvol.inference.backends import load_model, require_device

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("ONNX Runtime has no CUDA provider: install segvol[gpu] (onnxruntime-gpu)")
    onnx_path = api.export_onnx(checkpoint=_tiny_ckpt(tmp_path / "m.pt"), out=tmp_path / "m.onnx").path
    loaded = load_model(onnx_path, CUDA)
    require_device(loaded, CUDA)
    assert loaded.provider == "CUDAExecutionProvider"


def test_stitching_falls_back_to_the_cpu_when_gpu_memory_is_short(tmp_path):
    """No mocks: GPU memory is really taken until the stitched output of a full-size CT (float32 per class plus
    MONAI's count map) needs more than half of what is left, so it is accumulated on the CPU while the windows
    still run on the GPU; the mask equals the one made with room to spare."""
    from monai.transforms import Compose

    from segvol.inference.backends import load_model
    from segvol.inference.core import stitch_device
    from segvol.inference.predictor import predict_volume
    from segvol.transforms import deterministic_prefix

    (scan,) = [p for p in api.synth(dataset="imagecas", out=tmp_path / "full", cases=1, size="full", progress=False)
               if p.name.endswith(".img.nii.gz")]
    model = load_model(_tiny_ckpt(tmp_path / "m.pt"), CUDA)
    shape = (1, *Compose(deterministic_prefix(model.cfg, keys=("image",)))({"image": str(scan)})["image"].shape)
    need = int(np.prod(shape[2:])) * 3 * 4  # 2 classes + count map, float32
    roomy, _ = predict_volume(model, str(scan), sw_batch_size=1)
    torch.cuda.empty_cache()
    free = torch.cuda.mem_get_info(CUDA)[0]
    hog = torch.empty(max(free - int(1.9 * need), 0), dtype=torch.uint8, device=CUDA)
    try:
        assert stitch_device(shape, 2, CUDA) == torch.device("cpu")  # from the real free memory
        tight, _ = predict_volume(model, str(scan), sw_batch_size=1)
    finally:
        del hog
        torch.cuda.empty_cache()
    assert torch.as_tensor(roomy).sum() > 0
    assert torch.equal(torch.as_tensor(tight).cpu(), torch.as_tensor(roomy).cpu())


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP over NCCL needs 2 GPUs; this machine has fewer")
def test_ddp_two_gpus_nccl_train_and_infer(tmp_path, imagecas_small):
    models = tmp_path / "models"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", _port(),
           "-m", "segvol", "train", "--dataset", "imagecas", "--config", "tiny", "--data", str(imagecas_small),
           "--models", str(models), "--device", "cuda", "--set", "train.epochs=2", "train.steps_per_epoch=3",
           "train.max_val_cases=1", "train.amp=true"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "weights identical across 2 ranks" in proc.stderr
    (run,) = list(models.iterdir())
    scans = sorted(imagecas_small.glob("*.img.nii.gz"))[:4]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           _port(), "-m", "segvol", "infer", *map(str, scans), "--model", str(run / "best.pt"),
                           "--out-dir", str(tmp_path / "masks"), "--device", "cuda"], env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "masks").glob("*_seg.nii.gz"))) == 4
