"""Image and label stay aligned through the deterministic prefix and its inverse."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from segvol.config import load_config
from segvol.transforms import build_transforms, deterministic_prefix, inverse_transform
from tests.conftest import write_nifti


def _oblique_case(tmp_path):
    """A bright box (image) and its mask (label) on an anisotropic, LPI-oriented, offset grid."""
    shape = (40, 30, 12)
    image = np.full(shape, -500, np.int16)
    label = np.zeros(shape, np.uint8)
    image[10:25, 8:20, 3:9] = 400
    label[10:25, 8:20, 3:9] = 1
    affine = np.array([[-0.7, 0, 0, 35.0], [0, -0.9, 0, -12.0], [0, 0, -2.5, 80.0], [0, 0, 0, 1]])
    return (write_nifti(tmp_path / "img.nii.gz", image, affine), write_nifti(tmp_path / "lab.nii.gz", label, affine),
            label, affine)


def test_prefix_keeps_image_and_label_aligned(tmp_path):
    img_path, lab_path, _, _ = _oblique_case(tmp_path)
    cfg = load_config("tiny")
    out = Compose(deterministic_prefix(cfg))({"image": str(img_path), "label": str(lab_path)})
    image, label = out["image"], out["label"]
    assert image.shape == label.shape and image.shape[1:] >= (32, 32, 32)
    assert np.allclose(np.abs(np.diag(image.affine.numpy())[:3]), 1.0)  # 1 mm isotropic
    bright = image[0] > image[0].max() / 2  # the box is the brightest thing in the scan
    inside = label[0] > 0.5
    dice = 2 * (bright & inside).sum() / (bright.sum() + inside.sum())
    assert dice > 0.85, f"label and bright region disagree after the prefix (Dice {dice:.2f})"
    centre = lambda m: np.argwhere(m.numpy()).mean(0)  # noqa: E731
    assert np.abs(centre(bright) - centre(inside)).max() < 1.0  # within a voxel (1 mm)


def test_inverse_returns_to_the_input_grid(tmp_path):
    img_path, lab_path, label, affine = _oblique_case(tmp_path)
    cfg = load_config("tiny")
    prefix = Compose(deterministic_prefix(cfg))
    data = prefix({"image": str(img_path), "label": str(lab_path)})
    data["pred"] = MetaTensor(data["label"].clone(), meta=dict(data["image"].meta))
    back = inverse_transform(prefix)(data)["pred"]
    assert tuple(back.shape[1:]) == label.shape
    assert np.allclose(back.affine.numpy(), affine, atol=1e-4)
    dice = 2 * ((back[0].numpy() > 0.5) & (label > 0)).sum() / ((back[0].numpy() > 0.5).sum() + label.sum())
    assert dice > 0.9


def test_training_chain_yields_patches(imagecas_small):
    cfg = load_config("tiny", data={"root": str(imagecas_small)})
    tf = build_transforms(cfg, train=True)
    torch.manual_seed(0)
    tf.set_random_state(0)
    out = tf({"image": str(imagecas_small / "1.img.nii.gz"), "label": str(imagecas_small / "1.label.nii.gz")})
    assert isinstance(out, list) and len(out) == cfg.augment.num_samples
    for patch in out:
        assert tuple(patch["image"].shape) == (1, 32, 32, 32) == tuple(patch["label"].shape)
    assert sum(float(p["label"].sum()) > 0 for p in out) >= 1  # positive-centred crops hold artery


def test_elastic_deformation_is_off_by_default_and_keeps_labels_whole_when_on():
    import torch
    from monai.transforms import Compose, Rand3DElasticd

    from segvol.config import Config
    from segvol.transforms import random_part

    assert not any(isinstance(t, Rand3DElasticd) for t in random_part(Config()))
    cfg = Config().replace(augment={"elastic_prob": 1.0, "num_samples": 1, "rotate_prob": 0.0, "flip_prob": 0.0,
                                    "zoom_prob": 0.0, "affine_prob": 0.0, "gamma_prob": 0.0,
                                    "scale_intensity_prob": 0.0, "noise_prob": 0.0},
                           preprocess={"roi_size": [24, 24, 24]})
    steps = random_part(cfg)
    assert sum(isinstance(t, Rand3DElasticd) for t in steps) == 1
    grid = torch.stack(torch.meshgrid(*[torch.arange(24.0)] * 3, indexing="ij"))
    label = ((grid - 12).norm(dim=0) < 7).float()[None]
    chain = Compose(steps)
    chain.set_random_state(0)
    out = chain({"image": label * 100.0, "label": label})[0]
    assert out["label"].sum() > 0 and set(out["label"].unique().tolist()) <= {0.0, 1.0}  # nearest: no blending
    assert not torch.equal(out["label"], label)  # the ball was deformed
    assert set(out["image"].unique().tolist()) - {0.0, 100.0}  # bilinear: the image is interpolated


def test_multi_file_images_keep_their_channels_when_cached_by_threads(tmp_path):
    """CacheDataset fills the RAM cache from a thread pool sharing one LoadImaged; MONAI's NibabelReader kept the
    file names of a read on the reader, so a label read in another thread cut a 4-file image to 1 channel (about
    one volume in ten here, most runs of 16 volumes)."""
    from segvol.data.registry import get_adapter
    from segvol.training.data import cached_volumes

    rng = np.random.default_rng(0)
    records = []
    for case in range(16):
        seqs = [write_nifti(tmp_path / f"c{case}_{m}.nii.gz", rng.random((24, 24, 24), dtype=np.float32) + 0.1,
                            np.eye(4)) for m in ("flair", "t1", "t1ce", "t2")]
        seg = np.zeros((24, 24, 24), np.uint8)
        seg[8:16, 8:16, 8:16] = 2
        lab = write_nifti(tmp_path / f"c{case}_seg.nii.gz", seg, np.eye(4))
        records.append({"id": f"c{case}", "image": [str(p) for p in seqs], "label": str(lab)})
    cfg = load_config("tiny-brats", data={"cache": "ram"})
    spec = get_adapter("brats").task_spec(cfg)
    for _ in range(5):
        volumes = cached_volumes(records, cfg, spec)
        channels = [volumes[i]["image"].shape[0] for i in range(len(records))]
        assert channels == [4] * len(records)
