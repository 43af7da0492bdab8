"""The GPU's inference code paths on the CPU: device-side transforms, restored torch flags, ONNX Runtime's
provider, and batch inference sharded over torchrun ranks."""

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
from segvol.errors import SegvolError
from segvol.networks import build_network, network_args
from segvol.checkpoint import save_checkpoint
from tests.conftest import REPO, write_nifti

TASK = {"in_channels": 1, "out_channels": 2, "activation": "softmax", "class_names": ["artery"], "modalities": ["ct"]}
AFFINE = np.array([[-0.8, 0, 0, 30.0], [0, 0.7, 0, -12.0], [0, 0, 1.6, 5.0], [0, 0, 0, 1]])


def _checkpoint(path, **infer):
    """A tiny untrained network's checkpoint, with ``infer`` settings in its config."""
    cfg = load_config("tiny").replace(infer=infer) if infer else load_config("tiny")
    args = network_args(cfg, 1, 2)
    save_checkpoint(path, {"config": config_to_dict(cfg), "network": args, "task": TASK,
                           "state_dict": build_network(args).state_dict()})
    return path


def _scans(folder, n):
    rng = np.random.default_rng(4)
    paths = []
    for i in range(n):
        grid = np.indices((30, 26, 14)).astype(np.float32)
        ball = ((grid[0] - 12 - i) ** 2 + (grid[1] - 13) ** 2 + 4 * (grid[2] - 7) ** 2) < 60
        image = (ball * 400 + rng.normal(0, 30, ball.shape)).astype(np.int16)
        paths.append(write_nifti(folder / f"scan{i}.nii.gz", image, AFFINE))
    return paths



def test_device_transforms_on_the_cpu_match_the_metatensor_path(tmp_path, bright_model):
    (scan,) = _scans(tmp_path, 1)
    masks = {}
    for on in (True, False):
        ckpt = _checkpoint(tmp_path / f"m{on}.pt", device_transforms=on)
        (pred,) = api.infer(inputs=[scan], model=ckpt, out=tmp_path / f"seg{on}.nii.gz", device="cpu")
        written = nib.load(str(pred.output))
        assert written.shape == (30, 26, 14) and np.allclose(written.affine, AFFINE)  # the input's grid
        masks[on] = np.asarray(written.dataobj)
    assert masks[True].sum() > 50
    np.testing.assert_array_equal(masks[True], masks[False])


def test_infer_restores_the_callers_cudnn_flags(tmp_path, monkeypatch):
    from segvol.inference import predictor

    (scan,) = _scans(tmp_path, 1)
    seen = []
    real = predictor.infer_file

    def spy(*args, **kwargs):
        seen.append(torch.backends.cudnn.benchmark)
        return real(*args, **kwargs)

    monkeypatch.setattr(predictor, "infer_file", spy)
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        api.infer(inputs=[scan], model=_checkpoint(tmp_path / "m.pt"), out=tmp_path / "s.nii.gz", device="cpu")
        assert seen == [True]  # fixed-size windows: benchmark on while inferring
        assert torch.backends.cudnn.benchmark is False  # and the caller's setting back afterwards
    finally:
        torch.backends.cudnn.benchmark = before


def _tiny_onnx(path):
    """A one-convolution ONNX model carrying segvol's metadata (quicker to make than an export)."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.array([-1.0, 1.0], np.float32).reshape(2, 1, 1, 1, 1), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["image", "w"], ["logits"])], "tiny",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["b", 1, "x", "y", "z"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 2, "x", "y", "z"])],
                              [weight])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    cfg = load_config("tiny")
    for key, value in {"segvol_config": config_to_dict(cfg), "segvol_network": network_args(cfg, 1, 2),
                       "segvol_task": TASK}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(proto, str(path))
    return path


def test_onnx_reports_its_provider_and_refuses_cuda_without_it(tmp_path):
    import onnxruntime as ort

    from segvol.inference.backends import load_model, require_device

    onnx_path = _tiny_onnx(tmp_path / "m.onnx")
    loaded = load_model(onnx_path, torch.device("cpu"))
    assert loaded.provider == "CPUExecutionProvider"
    require_device(loaded, torch.device("cpu"))  # what was asked for: no complaint
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has a CUDA provider; tests/gpu checks it runs there")
    on_cuda = load_model(onnx_path, torch.device("cuda"))  # no CUDA provider: the session runs on the CPU
    assert on_cuda.provider == "CPUExecutionProvider"
    with pytest.raises(SegvolError, match=r"m\.onnx: --device cuda: ONNX Runtime runs this model on "
                                          r"CPUExecutionProvider, not CUDA \(install segvol\[gpu\]") as err:
        require_device(on_cuda, torch.device("cuda"))
    assert "\n" not in str(err.value)


def test_torchrun_infer_shards_scans_and_matches_one_process(tmp_path):
    scans = _scans(tmp_path, 4)
    torch.manual_seed(1)
    cfg = load_config("tiny")
    args = network_args(cfg, 1, 2)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, {"config": config_to_dict(cfg), "network": args, "task": TASK,
                           "state_dict": build_network(args).state_dict()})  # random weights: mixed masks
    alone = api.infer(inputs=scans, model=ckpt, out_dir=tmp_path / "one", device="cpu")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           port, "-m", "segvol", "infer", *map(str, scans), "--model", str(ckpt), "--out-dir",
                           str(tmp_path / "two"), "--device", "cpu"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if "_seg.nii.gz" in line]
    assert len(rows) == 4 and "4 scans in" in proc.stdout  # one timing table, on rank 0, with every rank's rows
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.output.name for p in alone)
    for pred in alone:
        assert 0 < pred.labels.sum() < pred.labels.size  # neither empty nor everything
        other = nib.load(str(tmp_path / "two" / pred.output.name))
        np.testing.assert_array_equal(np.asarray(other.dataobj), pred.labels)
        assert np.allclose(other.affine, AFFINE)

