"""Bad input through every command: one line naming the file and the problem, exit status 2, nothing half-written.

The corpus comes from ``tests/data/test_check.py``; commands run in-process through ``segvol.cli.main``.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segvol import api, cli
from segvol.config import config_to_dict, load_config
from segvol.errors import SegvolError
from segvol.io import nifti
from segvol.networks import build_network, network_args
from segvol.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import REPO, write_nifti
from tests.data.test_check import CORRUPTIONS, ct_case, make_imagecas, write_big_endian

TASK = {"in_channels": 1, "out_channels": 2, "activation": "softmax", "class_names": ["artery"], "modalities": ["ct"]}


@pytest.fixture(scope="module")
def untrained_ckpt(tmp_path_factory):
    cfg = load_config("tiny")
    args = network_args(cfg, 1, 2)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, {"config": config_to_dict(cfg), "network": args,
                           "state_dict": build_network(args).state_dict(), "task": TASK})
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("segvol ")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if "partial" in p.name or "_seg" in p.name)


# check-data, train and infer on each broken case. None: the command does not see this problem (train reads
# headers only; infer reads the image only).
TRAIN_STOPS = {"truncated", "random bytes", "png renamed", "2D", "5D", "4D image", "4D label", "label shape",
               "label shifted"}
INFER_MESSAGES = {"truncated": "cannot read the image data", "random bytes": "not a readable NIfTI",
                  "png renamed": "not a readable NIfTI", "2D": "expected a 3D volume", "5D": "expected a 3D volume",
                  "4D image": "expected a 3D volume", "NaN": "NaN or Inf"}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corpus_through_check_data_train_and_infer(tmp_path, capsys, untrained_ckpt, name):
    corrupt, severity, code, text = CORRUPTIONS[name]
    folder = make_imagecas(tmp_path / "ds")
    corrupt(folder)
    status, out, _ = run(capsys, "check-data", "--dataset", "imagecas", "--data", str(folder), "--json",
                         str(tmp_path / "r.json"))
    assert status == (1 if severity == "error" else 0)
    assert text in out and f"{code}:" in out  # the problem line and its hint
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["trainable"] == (severity != "error")
    if name in TRAIN_STOPS:
        status, _, err = run(capsys, "train", "--config", str(REPO / "configs" / "tiny.yaml"), "--data", str(folder),
                             "--models", str(tmp_path / "models"), "--device", "cpu")
        line = one_line_error(err)
        assert status == 2 and ("1.img.nii.gz" in line or "1.label.nii.gz" in line), line
        assert "segvol check-data --dataset imagecas" in line
        assert not (tmp_path / "models").exists()  # stopped before a run folder was made
    if name in INFER_MESSAGES:
        status, _, err = run(capsys, "infer", str(folder / "1.img.nii.gz"), "--model", str(untrained_ckpt),
                             "--device", "cpu", "--out-dir", str(tmp_path / "out"))
        line = one_line_error(err)
        assert status == 2 and "1.img.nii.gz: " in line and INFER_MESSAGES[name] in line, line
        assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    assert not leftovers(folder)


def test_missing_and_empty_datasets(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for folder, text in ((tmp_path / "nowhere", "nowhere: no such folder"), (tmp_path / "empty", "empty: is empty")):
        for argv in (["check-data", "--dataset", "imagecas", "--data", str(folder)],
                     ["train", "--config", "tiny", "--data", str(folder), "--models", str(tmp_path / "m")]):
            status, _, err = run(capsys, *argv)
            assert status == 2 and text in one_line_error(err)
    status, _, err = run(capsys, "check-data", "--dataset", "nope", "--data", str(tmp_path))
    assert status == 2 and "unknown dataset 'nope'" in one_line_error(err)


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(SegvolError, match="no such folder"):
        cli.main(["--debug", "check-data", "--dataset", "imagecas", "--data", str(tmp_path / "nowhere")])


# ------------------------------------------------------------------------------------------ infer: the input grid
SIGNED_PERMUTATIONS = st.tuples(st.permutations([0, 1, 2]), st.tuples(*[st.sampled_from([1.0, -1.0])] * 3))
DTYPES = st.sampled_from(["int16", "uint8", "float32", ">i2", ">f4"])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.tuples(*[st.integers(3, 24)] * 3), dtype=DTYPES, axes=SIGNED_PERMUTATIONS,
       spacing=st.tuples(*[st.floats(0.4, 3.0)] * 3), offset=st.tuples(*[st.floats(-200, 200)] * 3))
def test_infer_output_lands_on_the_input_grid(tmp_path_factory, untrained_ckpt, shape, dtype, axes, spacing,
                                              offset):
    folder = tmp_path_factory.mktemp("grid")
    perm, signs = axes
    affine = np.eye(4)
    affine[:3, :3] = np.eye(3)[list(perm)] * np.asarray(signs) * np.asarray(spacing)
    affine[:3, 3] = offset
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 200, size=shape).astype(np.dtype(dtype))
    scan = folder / "scan.nii.gz"
    if np.dtype(dtype).byteorder == ">":
        write_big_endian(scan, image, affine)
    else:
        write_nifti(scan, image, affine)
    (pred,) = api.infer(inputs=[scan], model=untrained_ckpt, device="cpu")
    out, ref = nib.load(str(pred.output)), nib.load(str(scan))
    assert out.shape == ref.shape == shape
    assert np.allclose(out.affine, ref.affine, atol=1e-4)
    assert np.allclose(out.header.get_zooms(), ref.header.get_zooms(), atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(name=st.text(st.sampled_from("ab./\\_-.*"), min_size=1, max_size=12))
def test_outputs_stay_in_the_output_folder(tmp_path_factory, name):
    out_dir = tmp_path_factory.getbasetemp() / "outputs"
    target = api.default_output(f"inputs/{name}.nii.gz", out_dir)
    assert target.parent == out_dir and target.name.endswith("_seg.nii.gz") and ".." not in target.parts


def test_3d_scan_for_a_four_channel_model_and_4d_for_one(tmp_path, capsys, untrained_ckpt):
    model = _onnx_model(tmp_path / "four.onnx", graph_channels=4, meta_channels=4)
    scan = write_nifti(tmp_path / "ct.nii.gz", ct_case(0)[0], np.eye(4))
    status, _, err = run(capsys, "infer", str(scan), "--model", str(model), "--device", "cpu")
    assert status == 2 and "ct.nii.gz: expected a 4D volume with 4 channels, got shape (20, 18, 12)" in \
        one_line_error(err)
    stack = write_nifti(tmp_path / "stack.nii.gz", np.zeros((16, 16, 10, 4), np.float32), np.eye(4))
    status, _, err = run(capsys, "infer", str(stack), "--model", str(untrained_ckpt), "--device", "cpu")
    assert status == 2 and "stack.nii.gz: expected a 3D volume, got 4D" in one_line_error(err)
    assert not leftovers(tmp_path)


# ---------------------------------------------------------------------------------------------- models on disk
def _onnx_model(path, graph_channels: int, meta_channels: int):
    """A one-convolution ONNX model with segvol metadata (no export needed)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((2, graph_channels, 1, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["logits"])], "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", graph_channels, "x", "y", "z"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 2, "x", "y", "z"])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    meta = {"segvol_config": config_to_dict(load_config("tiny")), "segvol_network": {},
            "segvol_task": {**TASK, "in_channels": meta_channels}}
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(model, str(path))
    return path


def test_broken_models_are_one_line_errors(tmp_path, capsys, untrained_ckpt):
    scan = write_nifti(tmp_path / "s.nii.gz", ct_case(0)[0], np.eye(4))
    (tmp_path / "random.pt").write_bytes(os.urandom(4000))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    torch.save({"format": "segvol-checkpoint", "obj": SegvolError("x")}, tmp_path / "pickled.pt")
    ckpt = load_checkpoint(untrained_ckpt)
    wider = network_args(load_config("tiny", ["model.features=[16,16,32,64,128,16]"]), 1, 2)
    save_checkpoint(tmp_path / "mismatch.pt", {**ckpt, "network": wider})
    data = untrained_ckpt.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    _onnx_model(tmp_path / "wrong.onnx", graph_channels=3, meta_channels=1)
    cases = {"random.pt": "not a PyTorch checkpoint", "cut.pt": "not a PyTorch checkpoint",
             "foreign.pt": "not a segvol checkpoint", "pickled.pt": "needs arbitrary unpickling",
             "mismatch.pt": "weights do not match the network", "wrong.onnx": "ONNX input has 3 channels",
             "missing.pt": "model file not found"}
    for name, text in cases.items():
        status, _, err = run(capsys, "infer", str(scan), "--model", str(tmp_path / name), "--device", "cpu")
        line = one_line_error(err)
        assert status == 2 and f"{name}: " in line and text in line, line
    assert not leftovers(tmp_path)


# ------------------------------------------------------------------------------------- resources and interrupts
def test_gpu_out_of_memory_suggests_remedies(tmp_path, capsys, monkeypatch):
    def boom(**_):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(api, "infer", boom)
    status, _, err = run(capsys, "infer", str(tmp_path / "s.nii.gz"))
    line = one_line_error(err)
    assert status == 2 and "out of memory" in line and "--sw-batch-size" in line and "--device cpu" in line
    monkeypatch.setattr(api, "infer", lambda **_: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other runtime errors are not disguised
        cli.main(["infer", str(tmp_path / "s.nii.gz")])


def _fill_disk_after(nbytes: int):
    def write_then_fail(obj, path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"\0" * nbytes)
        raise OSError(errno.ENOSPC, "No space left on device")

    return write_then_fail


def test_disk_full_while_writing_a_mask(tmp_path, capsys, untrained_ckpt, monkeypatch):
    scan = write_nifti(tmp_path / "s.nii.gz", ct_case(0)[0], np.eye(4))
    monkeypatch.setattr(nib, "save", _fill_disk_after(100))
    monkeypatch.setattr(nifti, "write_nifti", _fill_disk_after(100))  # .nii.gz masks are compressed by segvol
    status, _, err = run(capsys, "infer", str(scan), "--model", str(untrained_ckpt), "--device", "cpu")
    assert status == 2 and "s_seg.nii.gz: disk full while writing" in one_line_error(err)
    assert not leftovers(tmp_path)


def test_disk_full_while_writing_a_checkpoint_keeps_the_old_one(tmp_path, untrained_ckpt, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {**load_checkpoint(untrained_ckpt), "epoch": 1})
    monkeypatch.setattr(torch, "save", _fill_disk_after(1000))
    with pytest.raises(SegvolError, match="last.pt: disk full while writing"):
        save_checkpoint(path, {**load_checkpoint(untrained_ckpt), "epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


SAVER = """
import sys, torch
from segvol.checkpoint import save_checkpoint
payload = {"config": {}, "network": {}, "task": {}, "state_dict": {"w": torch.randn(3_000_000)}}
for epoch in range(10**6):
    save_checkpoint(sys.argv[1], {**payload, "epoch": epoch})
    if epoch == 0:
        print("saved", flush=True)
"""


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.4])
def test_sigkill_during_checkpoint_writes_leaves_a_loadable_file(tmp_path, delay):
    path = tmp_path / "last.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "saved"
        time.sleep(delay)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    ckpt = load_checkpoint(path)
    assert ckpt["state_dict"]["w"].shape == (3_000_000,) and ckpt["epoch"] >= 0


def test_run_folders_are_never_reused(tmp_path):
    from segvol.training.run import new_run_dir

    first = new_run_dir(tmp_path, "run1", "imagecas")
    (first / "best.pt").write_bytes(b"keep")
    with pytest.raises(SegvolError, match="run1: run folder already exists"):
        new_run_dir(tmp_path, "run1", "imagecas")
    with pytest.raises(SegvolError, match="plain folder name"):
        new_run_dir(tmp_path, "../elsewhere", "imagecas")
    assert (first / "best.pt").read_bytes() == b"keep"


def test_export_onnx_never_replaces_an_existing_file(tmp_path, capsys, untrained_ckpt):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an earlier export")
    status, _, err = run(capsys, "export-onnx", "--checkpoint", str(untrained_ckpt), "--out", str(out))
    assert status == 2 and "model.onnx: already exists (use --overwrite" in one_line_error(err)
    assert out.read_bytes() == b"an earlier export"


@pytest.mark.parametrize("damage", ["truncated", "bad deflate block", "not gzip after the magic", "cut short"])
def test_corrupt_nifti_bytes_are_one_line_errors(damage):
    """An in-memory read (the cascade reads a scan once, for both stages) names the scan and the problem, whichever
    gzip decoder is installed (ISA-L's own error is not an OSError)."""
    img = nib.Nifti1Image(np.arange(4096, dtype=np.int16).reshape(16, 16, 16), np.eye(4))
    good = nifti.gzip_bytes(img.to_bytes())
    assert nifti.image_from_bytes(good, "scan.nii.gz").shape == (16, 16, 16)
    bad = {"truncated": good[: len(good) // 2], "bad deflate block": good[:10] + b"x" * 100 + good[110:],
           "not gzip after the magic": good[:2] + b"garbage",
           "cut short": img.to_bytes()[:-100]}[damage]  # an uncompressed .nii whose voxels end early
    with pytest.raises(SegvolError, match=r"^scan\.nii\.gz: not a readable NIfTI file \(") as err:
        nifti.image_from_bytes(bad, "scan.nii.gz")
    assert "\n" not in str(err.value)
