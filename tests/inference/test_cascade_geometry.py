"""The cascade's box, crop and paste (segvol/inference/cascade.py) against hand-made masks."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch

from segvol.config import InferConfig
from segvol.inference.cascade import crop_scan, located_box, paste
from segvol.inference.postprocess import postprocess

AFFINE = np.array([[-0.5, 0, 0, 10.0], [0, 0.5, 0, -4.0], [0, 0, 2.0, 7.0], [0, 0, 0, 1]])


def test_box_grows_by_the_margin_in_mm_per_axis_and_stops_at_the_edges():
    found = np.zeros((40, 40, 10), np.uint8)
    found[10:20, 30:38, 4:6] = 1
    box = located_box(found, AFFINE, margin_mm=2.0)  # 4 voxels of 0.5 mm, 1 voxel of 2 mm
    assert box == (slice(6, 24), slice(26, 40), slice(3, 7))
    assert located_box(np.zeros_like(found), AFFINE, 2.0) is None


def test_keep_largest_drops_a_stray_find_far_from_the_target():
    found = np.zeros((40, 40, 10), np.uint8)
    found[10:20, 10:20, 2:8] = 1  # the target
    found[36:38, 36:38, 0:1] = 1  # a stray voxel pair, far away
    assert located_box(found, AFFINE, 0.0) == (slice(10, 38), slice(10, 38), slice(0, 8))
    keep = InferConfig(min_component_mm3=0.0, keep_largest=1)  # the coarse stage's post-processing, locate.keep_largest
    kept = postprocess(torch.as_tensor(found[None]), keep, (0.5, 0.5, 2.0), 2)
    assert located_box(np.asarray(kept[0]), AFFINE, 0.0) == (slice(10, 20), slice(10, 20), slice(2, 8))


def test_crop_keeps_its_place_and_paste_puts_it_back():
    data = np.arange(40 * 30 * 10, dtype=np.float32).reshape(40, 30, 10)
    img = nib.Nifti1Image(data, AFFINE)
    box = (slice(5, 25), slice(3, 13), slice(2, 9))
    crop = crop_scan(img, box)
    corner = AFFINE @ np.array([5, 3, 2, 1.0])
    assert np.allclose(crop.affine[:, 3], corner) and np.allclose(crop.affine[:3, :3], AFFINE[:3, :3])
    back = paste(np.asarray(crop.dataobj), box, data.shape)
    assert np.array_equal(back[box], data[box]) and not back[:5].any() and not back[25:].any()
    prob = paste(np.ones((2, 20, 10, 7), np.float32), box, data.shape, channels_first=True)
    assert prob.shape == (2, *data.shape) and prob[(slice(None), *box)].all() and prob.sum() == 2 * 20 * 10 * 7
