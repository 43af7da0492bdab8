"""ImageCAS adapter: a folder of ``N.img.nii.gz`` + ``N.label.nii.gz`` pairs (N = 1..1000).

The official split (``imageCAS_data_split.xlsx``, or a CSV export of it) is used when it lies in the folder: the
first column holding case numbers gives the ids, and the first column whose values read as train/val/test gives
the split (``--set data.split_seed`` etc. are then ignored).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from segvol.config import Config
from segvol.labels import TaskSpec
from segvol.data.adapter import DatasetAdapter, EvalDefaults
from segvol.data.records import Record
from segvol.errors import SegvolError

__all__ = ["ImageCAS"]

log = logging.getLogger(__name__)

_IMAGE = re.compile(r"^(\d+)\.img\.nii(\.gz)?$")
_LABEL = re.compile(r"^(\d+)\.label\.nii(\.gz)?$")
_SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                "test": "test", "testing": "test"}
SPLIT_FILES = ("imageCAS_data_split.xlsx", "imageCAS_data_split.csv")

WHERE_FROM = (
    "ImageCAS is distributed at https://github.com/XiaoweiXu/ImageCAS-A-Large-Scale-Dataset-and-Benchmark-for-"
    "Coronary-Artery-Segmentation-based-on-CT (N.img.nii.gz + N.label.nii.gz in one folder); to try segvol "
    "without it, make phantoms: segvol synth imagecas --out data/imagecas --cases 8"
)


class ImageCAS(DatasetAdapter):
    """Coronary arteries in cardiac CT angiography (binary)."""

    name = "imagecas"
    modality = "CT"
    label_names = ("background", "artery")
    default_modalities = ("ct",)
    preset = "imagecas"
    mask_markers = (".label",)  # N.label.nii.gz
    image_markers = (".img",)  # N.img.nii.gz

    def task_spec(self, cfg: Config) -> TaskSpec:
        """Binary arteries: one CT channel in, background/artery softmax out."""
        if cfg.data.labels != "binary":
            raise SegvolError(f"data.labels={cfg.data.labels!r}: ImageCAS has one label (binary) only")
        return TaskSpec(in_channels=1, out_channels=2, activation="softmax", class_names=("artery",),
                        modalities=("ct",))

    def find_records(self, root: str | Path, modalities: Sequence[str] = (), require_labels: bool = True
                     ) -> list[Record]:
        """``{"id": "N", "image": N.img.nii.gz, "label": N.label.nii.gz}`` in case-number order; an unpaired file
        is an error naming it."""
        root = Path(root)
        if not root.is_dir():
            raise SegvolError(f"{root}: no such folder. {WHERE_FROM}")
        images, labels = {}, {}
        for path in sorted(root.iterdir()):
            if m := _IMAGE.match(path.name):
                images[str(int(m.group(1)))] = path
            elif m := _LABEL.match(path.name):
                labels[str(int(m.group(1)))] = path
        if not images and not labels:
            entries = sum(1 for _ in root.iterdir())
            what = "is empty" if entries == 0 else f"holds no N.img.nii.gz / N.label.nii.gz files ({entries} entries)"
            raise SegvolError(f"{root}: {what}; not an ImageCAS folder. {WHERE_FROM}")
        orphans = sorted(set(images) ^ set(labels), key=int)
        if orphans:
            first = orphans[0]
            have = images.get(first) or labels.get(first)
            lacks = "label" if first in images else "image"
            raise SegvolError(f"{have}: no matching {lacks} file ({len(orphans)} unpaired case(s): "
                              f"{', '.join(orphans[:5])})")
        return [{"id": i, "image": str(images[i]), "label": str(labels[i])} for i in sorted(images, key=int)]

    def official_split(self, root: str | Path) -> dict[str, list[str]] | None:
        """The split from ``imageCAS_data_split.xlsx`` / ``.csv`` in ``root``, or None when absent."""
        for name in SPLIT_FILES:
            path = Path(root) / name
            if path.is_file():
                rows = _read_table(path)
                split = _split_from_rows(rows, path)
                log.info("split: official %s (%s)", name, ", ".join(f"{k} {len(v)}" for k, v in split.items()))
                return split
        return None

    def evaluation_defaults(self) -> EvalDefaults:
        """Arteries are thin tubes: clDice and connected components are reported too."""
        return EvalDefaults(vessel=True)

    def write_phantom_case(self, out: Path, index: int, size: str, seed: int) -> list[Path]:
        """An int16 HU CT on an ImageCAS grid with two labelled coronary trees (:mod:`segvol.data.phantoms`)."""
        import numpy as np

        from segvol.io.nifti import save_nifti
        from segvol.data.phantoms.imagecas import make_imagecas_phantom, sample_geometry

        case_seed = seed * 100_003 + index
        geom = sample_geometry(size, np.random.default_rng(case_seed))
        image, label, affine = make_imagecas_phantom(geom, case_seed)
        paths = [out / f"{index}.img.nii.gz", out / f"{index}.label.nii.gz"]
        save_nifti(image, affine, paths[0])
        save_nifti(label, affine, paths[1])
        return paths


def _read_table(path: Path) -> list[list[str]]:
    try:
        if path.suffix == ".csv":
            with open(path, newline="") as fh:
                return [row for row in csv.reader(fh)]
        import openpyxl

        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        sheet = book.worksheets[0]
        return [["" if v is None else str(v) for v in row] for row in sheet.iter_rows(values_only=True)]
    except Exception as exc:  # openpyxl raises many types for broken files
        raise SegvolError(f"{path}: cannot read split table ({type(exc).__name__}: {exc})") from exc


def _split_from_rows(rows: list[list[str]], path: Path) -> dict[str, list[str]]:
    body = [r for r in rows[1:] if any(c.strip() for c in r)]
    if not body:
        raise SegvolError(f"{path}: split table has no rows")
    width = max(len(r) for r in body)
    cols = [[(r[c] if c < len(r) else "").strip() for r in body] for c in range(width)]

    def as_id(v: str) -> str | None:
        m = re.fullmatch(r"(\d+)(\.0)?(\.img\.nii\.gz)?", v)
        return str(int(m.group(1))) if m else None

    id_col = next((c for c in cols if all(as_id(v) for v in c)), None)
    split_col = next((c for c in cols if all(v.lower() in _SPLIT_WORDS for v in c)), None)
    if id_col is None or split_col is None:
        raise SegvolError(f"{path}: expected a column of case numbers and a column of train/val/test values")
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for case, part in zip(id_col, split_col):
        case_id = as_id(case)
        if case_id is not None:  # always: every cell of id_col is a case number
            split[_SPLIT_WORDS[part.lower()]].append(case_id)
    return split

