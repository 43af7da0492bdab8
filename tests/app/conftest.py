from __future__ import annotations

import pytest

from segvol import api
from tests.inference.test_infer_geometry import untrained_ckpt  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def onnx_model(untrained_ckpt, tmp_path_factory):  # noqa: F811
    return api.export_onnx(checkpoint=untrained_ckpt, out=tmp_path_factory.mktemp("onnx") / "model.onnx").path
