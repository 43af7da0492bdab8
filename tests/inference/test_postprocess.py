from __future__ import annotations

import torch

from segvol.config import InferConfig
from segvol.inference.postprocess import postprocess


def _blobs():
    labels = torch.zeros(1, 30, 30, 30, dtype=torch.uint8)
    labels[0, 2:12, 2:12, 2:12] = 1  # 1000 voxels
    labels[0, 15:23, 15:23, 15:23] = 1  # 512 voxels
    labels[0, 26:28, 26:28, 26:28] = 1  # 8 voxels
    labels[0, 5:7, 20:22, 20:22] = 1  # 8 voxels
    return labels


def test_off_by_default():
    labels = _blobs()
    assert torch.equal(postprocess(labels, InferConfig(), (1.0, 1.0, 1.0), 2), labels)


def test_min_component_in_mm3_uses_spacing():
    labels = _blobs()
    out = postprocess(labels, InferConfig(min_component_mm3=10.0), (1.0, 1.0, 1.0), 2)
    assert int(out.sum()) == 1000 + 512  # the two 8-voxel (8 mm³) specks go
    out = postprocess(labels, InferConfig(min_component_mm3=10.0), (2.0, 2.0, 2.0), 2)
    assert int(out.sum()) == 1000 + 512 + 16  # at 8 mm³ per voxel every speck is 64 mm³ and stays


def test_keep_two_largest_and_fill_holes():
    labels = _blobs()
    labels[0, 6, 6, 6] = 0  # a hole inside the big cube
    out = postprocess(labels, InferConfig(keep_largest=2, fill_holes=True), (1.0, 1.0, 1.0), 2)
    assert int(out.sum()) == 1000 + 512 and out[0, 6, 6, 6] == 1
