"""Phantoms in the Medical Segmentation Decathlon layout: 2-channel brain MRI with three labels.

Each case is the BraTS phantom (:func:`segvol.data.phantoms.brats.make_brats_phantom`: folded anatomy, a glioma
with a necrotic core, an enhancing rim and edema, per-sequence contrast, bias field and noise) reduced to what MSD's
Task01 ships in spirit: a 4D ``imagesTr/brain_NNN.nii.gz`` with the channels FLAIR and T1gd (channels last,
float32) and ``labelsTr/brain_NNN.nii.gz`` with 0 background, 1 edema and 2 tumour core (necrosis and enhancing
rim). Edema is bright on FLAIR only, the core's rim on T1gd only, so both channels are needed. ``dataset.json`` is
written in the MSD form (``"modality"``, ``"labels": {"0": "background", ...}``, ``"training"``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from segvol.utils import atomic_path

__all__ = ["SIZES", "CHANNELS", "LABELS", "write_msd_case", "write_dataset_json"]

SIZES = {"full": ((240, 240), (155, 155)), "small": ((60, 68), (44, 50))}  # in-plane and slice count ranges
CHANNELS = ("FLAIR", "T1gd")  # the BraTS phantom's flair and t1ce
LABELS = ("background", "edema", "tumour core")
_FROM_BRATS = np.array([0, 2, 1, 0, 2], np.uint8)  # BraTS 1 necrosis -> 2, 2 edema -> 1, 4 enhancing -> 2


def _case_name(index: int) -> str:
    return f"brain_{index:03d}"


def write_msd_case(out: Path, index: int, size: str, seed: int) -> list[Path]:
    """Write ``imagesTr/brain_<index>.nii.gz`` (4D) and ``labelsTr/brain_<index>.nii.gz`` into ``out``."""
    from segvol.io.nifti import save_nifti
    from segvol.data.phantoms.brats import make_brats_phantom

    case_seed = seed * 100_003 + index
    rng = np.random.default_rng(case_seed)
    inplane, slices = SIZES[size]
    n = int(rng.integers(inplane[0], inplane[1] + 1))
    shape = (n, n, int(rng.integers(slices[0], slices[1] + 1)))
    images, seg, affine = make_brats_phantom(shape, case_seed)
    image = np.stack([images["flair"], images["t1ce"]], axis=-1).astype(np.float32)
    label = _FROM_BRATS[seg]
    paths = [Path(out) / "imagesTr" / f"{_case_name(index)}.nii.gz", Path(out) / "labelsTr" /
             f"{_case_name(index)}.nii.gz"]
    save_nifti(image, affine, paths[0])
    save_nifti(label, affine, paths[1])
    return paths


def write_dataset_json(out: Path, cases: int) -> Path:
    """``dataset.json`` in the MSD form for ``cases`` phantom cases."""
    meta = {
        "name": "segvol MSD phantom", "description": "2-channel brain MRI phantoms (segvol synth msd)",
        "tensorImageSize": "4D", "modality": {str(i): c for i, c in enumerate(CHANNELS)},
        "labels": {str(i): n for i, n in enumerate(LABELS)}, "numTraining": cases, "numTest": 0,
        "training": [{"image": f"./imagesTr/{_case_name(i)}.nii.gz", "label": f"./labelsTr/{_case_name(i)}.nii.gz"}
                     for i in range(1, cases + 1)],
        "test": [],
    }
    path = Path(out) / "dataset.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
    return path
