from __future__ import annotations

import onnx
import pytest

from segvol import api
from segvol.errors import SegvolError
from segvol.inference.backends import load_model
from segvol.inference.export import TOLERANCE, ExportResult
from tests.inference.test_infer_geometry import untrained_ckpt  # noqa: F401  (fixture)


def test_export_parity_and_metadata(tmp_path, untrained_ckpt):  # noqa: F811
    res = api.export_onnx(checkpoint=untrained_ckpt, out=tmp_path / "m.onnx")
    assert isinstance(res, ExportResult) and res.path.is_file() and res.dynamic
    assert res.max_abs_diff < res.tolerance == TOLERANCE and len(res.checked_shapes) == 2
    proto = onnx.load(str(res.path))
    keys = {p.key for p in proto.metadata_props}
    assert {"segvol_config", "segvol_network", "segvol_task"} <= keys
    model = load_model(res.path, device=__import__("torch").device("cpu"))
    assert model.backend == "onnxruntime" and model.task.in_channels == 1


def test_onnx_and_torch_give_the_same_mask(tmp_path, untrained_ckpt, imagecas_small):  # noqa: F811
    onnx_path = api.export_onnx(checkpoint=untrained_ckpt, out=tmp_path / "m.onnx").path
    scan = imagecas_small / "2.img.nii.gz"
    (a,) = api.infer(inputs=[scan], model=onnx_path, out=tmp_path / "a.nii.gz", device="cpu")
    (b,) = api.infer(inputs=[scan], model=untrained_ckpt, out=tmp_path / "b.nii.gz", device="cpu")
    assert a.labels.any() and b.labels.any(), "the untrained model must paint something for this to compare"
    assert not a.labels.all() and not b.labels.all()
    agree = (a.labels == b.labels).mean()
    assert agree > 0.999
    fa, fb = a.labels > 0, b.labels > 0
    assert 2 * (fa & fb).sum() / (fa.sum() + fb.sum()) > 0.99  # the same foreground, not only the same background


def test_broken_onnx_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(SegvolError, match="bad.onnx: not a loadable ONNX model"):
        load_model(bad, device=__import__("torch").device("cpu"))


def test_not_a_checkpoint(tmp_path):
    import torch

    path = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(SegvolError, match="not a segvol checkpoint"):
        load_model(path, device=torch.device("cpu"))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "segvol-checkpoint", "obj": Evil()}, evil)
    with pytest.raises(SegvolError, match="refused"):
        load_model(evil, device=torch.device("cpu"))
