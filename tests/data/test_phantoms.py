from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from segvol.data.phantoms.imagecas import SIZES, PhantomGeometry, make_imagecas_phantom, sample_geometry


@pytest.fixture(scope="module")
def phantom():
    geom = PhantomGeometry(shape=(96, 96, 64), spacing=(0.8, 0.8, 1.0))
    return geom, *make_imagecas_phantom(geom, seed=5)


def test_deterministic_per_seed(phantom):
    geom, image, label, affine = phantom
    image2, label2, affine2 = make_imagecas_phantom(geom, seed=5)
    assert np.array_equal(image, image2) and np.array_equal(label, label2) and np.array_equal(affine, affine2)
    other, other_label, _ = make_imagecas_phantom(geom, seed=6)
    assert not np.array_equal(label, other_label)


def test_types_values_and_affine(phantom):
    geom, image, label, affine = phantom
    assert image.dtype == np.int16 and label.dtype == np.uint8 and image.shape == label.shape == geom.shape
    assert set(np.unique(label)) == {0, 1}
    assert image.min() >= -1024 and image.max() <= 3071
    assert nib.aff2axcodes(affine) == ("L", "P", "S")
    assert np.allclose(np.abs(np.diag(affine)[:3]), geom.spacing)


def test_anatomy_intensities(phantom):
    _, image, label, _ = phantom
    assert (image < -950).mean() > 0.05  # air outside the body
    assert ((image > -900) & (image < -700)).mean() > 0.05  # lungs about -800 HU
    vessels = image[label == 1]
    assert 250 < np.median(vessels) < 500  # contrast-filled arteries
    # the blood pool and aorta are as bright as the arteries and much larger, yet unlabelled
    bright_unlabelled = (image > 250) & (label == 0)
    assert bright_unlabelled.sum() > 5 * label.sum()


def test_two_thin_branching_trees(phantom):
    _, _, label, _ = phantom
    components, n = ndimage.label(label)
    sizes = np.bincount(components.ravel())[1:]
    assert (sizes > 50).sum() >= 2  # left and right coronary trees
    assert label.mean() < 0.02  # thin structures: a few percent of the volume at most
    dist = ndimage.distance_transform_edt(label, sampling=(0.8, 0.8, 1.0))
    assert dist.max() < 4.0  # no lumen thicker than ~2.5 mm radius (+ discretisation)


def test_geometry_ranges():
    rng = np.random.default_rng(0)
    for _ in range(20):
        g = sample_geometry("full", rng)
        spec = SIZES["full"]
        assert g.shape[0] == g.shape[1] == 512 and 206 <= g.shape[2] <= 275
        assert spec["inplane_mm"][0] <= g.spacing[0] <= spec["inplane_mm"][1]
        assert spec["slice_mm"][0] <= g.spacing[2] <= spec["slice_mm"][1]
