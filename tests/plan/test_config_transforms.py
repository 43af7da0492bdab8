"""Per-channel normalisation and non-zero cropping in the config and the transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segvol.config import Config
from segvol.errors import SegvolError
from segvol.transforms import ChannelNormalize, deterministic_prefix

CT = {"name": "CT", "scheme": "ct", "clip": [-100.0, 300.0], "mean": 100.0, "std": 50.0}
MR = {"name": "T2", "scheme": "zscore_nonzero", "clip": None, "mean": None, "std": None}


def test_channels_resolve_and_validate() -> None:
    cfg = Config().replace(preprocess={"channels": [CT, MR], "intensity_norm": "auto"})
    assert cfg.preprocess.intensity_norm == "channels" and cfg.preprocess.channels[0]["clip"] == [-100.0, 300.0]
    with pytest.raises(SegvolError, match="scheme 'ct' needs"):
        Config().replace(preprocess={"channels": [{**CT, "std": None}], "intensity_norm": "channels"})
    with pytest.raises(SegvolError, match="not one of"):
        Config().replace(preprocess={"channels": [{**MR, "scheme": "minmax"}], "intensity_norm": "channels"})
    with pytest.raises(SegvolError, match="intensity_norm is 'nonzero'"):
        Config().replace(preprocess={"channels": [MR], "intensity_norm": "nonzero"})


def test_ct_is_monotonic_and_zscore_nonzero_keeps_the_background() -> None:
    hu = torch.tensor([-1000.0, -100.0, 0.0, 40.0, 300.0, 1500.0]).reshape(1, 6, 1, 1)
    mr = torch.tensor([0.0, 0.0, 10.0, 20.0, 30.0, 0.0]).reshape(1, 6, 1, 1)
    out = ChannelNormalize([CT, MR])(torch.cat([hu, mr]))
    ct = out[0].flatten()
    assert torch.allclose(ct, (hu.clamp(-100, 300).flatten() - 100) / 50)
    assert torch.all(ct[1:] >= ct[:-1])
    z = out[1].flatten()
    assert z[0] == 0 and z[5] == 0 and torch.allclose(z[2:5], torch.tensor([-1.2247, 0.0, 1.2247]), atol=1e-4)


def test_prefix_crops_to_the_nonzero_box(tmp_path) -> None:
    import nibabel as nib
    from monai.transforms import Compose

    img = np.zeros((30, 30, 20), np.float32)
    img[5:25, 8:20, 3:15] = -50.0  # negative values count as non-zero (CT)
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(img, np.eye(4)), path)
    cfg = Config().replace(preprocess={"channels": [{**CT, "clip": [-60.0, 0.0]}], "crop_nonzero": True,
                                       "intensity_norm": "channels", "roi_size": [8, 8, 8]})
    out = Compose(deterministic_prefix(cfg, keys=("image",)))({"image": str(path)})["image"]
    assert tuple(out.shape[1:]) == (20, 12, 12)
