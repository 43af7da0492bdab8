"""Medical Segmentation Decathlon / nnU-Net raw datasets: ``imagesTr/``, ``labelsTr/`` and ``dataset.json``.

Both generations of the layout are read as they are distributed:

* MSD (and nnU-Net v1): ``imagesTr/X.nii.gz`` holds every channel (4D, channels last; 3D when there is one),
  ``dataset.json`` has ``"modality": {"0": "FLAIR", ...}`` and ``"labels": {"0": "background", "1": "edema", ...}``.
* nnU-Net v2: one file per channel, ``imagesTr/X_0000.nii.gz``, ``X_0001.nii.gz``, ...; ``dataset.json`` has
  ``"channel_names": {"0": "CT"}`` and ``"labels": {"background": 0, "liver": 1, ...}``.

Labels (``data.labels``): ``multi`` trains one softmax class per label of ``dataset.json`` (values must be
consecutive from 0, as both MSD and nnU-Net require); ``binary`` merges every non-zero label into one foreground.
nnU-Net v2 region labels (lists of values) are not supported. Intensities: when every channel is ``CT`` the CT
scheme of :data:`CT_PREPROCESS` is used, otherwise MRI's nonzero, channel-wise normalisation
(:meth:`MSD.configure`). ``imagesTs/`` is not read (it has no labels); hidden files (macOS ``._*``) are skipped.

``segvol import msd`` remains for MSD Task01_BrainTumour alone: it rewrites those cases in the BraTS layout, so that
the ``brats`` adapter's TC/WT/ET regions apply; this adapter trains the same folder as its three labels.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segvol.config import Config
from segvol.labels import TaskSpec
from segvol.data.adapter import CheckRules, DatasetAdapter, EvalDefaults
from segvol.data.records import Record
from segvol.errors import SegvolError
from segvol.io.nifti import nifti_stem

__all__ = ["MSD", "MsdMeta", "read_meta", "CT_PREPROCESS", "PHANTOM_CHANNELS", "PHANTOM_LABELS"]

log = logging.getLogger(__name__)

META = "dataset.json"
CT_PREPROCESS: dict[str, Any] = {"intensity_window": [-1000.0, 1000.0]}  # the CT intensity scheme for any CT task
MR_PREPROCESS: dict[str, Any] = {"intensity_window": None}  # nonzero, channel-wise z-score only
_NORM = {"CT": "window", "MR": "nonzero"}  # preprocess.intensity_norm of each scheme
PHANTOM_CHANNELS = ("T2", "T1c")
PHANTOM_LABELS = ("background", "lesion", "core")
_CHANNEL_FILE = re.compile(r"^(.+)_(\d{4})$")

WHERE_FROM = (
    "Medical Segmentation Decathlon tasks are distributed at http://medicaldecathlon.com (imagesTr/, labelsTr/, "
    "dataset.json); nnU-Net raw datasets use the same layout with _0000 channel files. To try segvol without one, "
    "make phantoms: segvol synth msd --out data/msd --cases 8"
)


@dataclass(frozen=True)
class MsdMeta:
    """What ``dataset.json`` says: channel names in order and label names for the values 0, 1, ..."""

    path: Path
    channels: tuple[str, ...]
    labels: tuple[str, ...]

    @property
    def modality(self) -> str:
        """``CT`` when every channel is CT, else ``MR`` (nonzero normalisation)."""
        return "CT" if all(c.upper() == "CT" for c in self.channels) else "MR"


def _channel_names(meta: dict[str, Any], path: Path) -> tuple[str, ...]:
    names = meta.get("channel_names") or meta.get("modality")
    if not isinstance(names, dict) or not names:
        raise SegvolError(f"{path}: no \"channel_names\" (nnU-Net v2) or \"modality\" (MSD) entry")
    try:
        order = sorted(names, key=int)
    except ValueError:
        raise SegvolError(f"{path}: channel keys {sorted(names)} are not channel numbers 0, 1, ...") from None
    if [int(k) for k in order] != list(range(len(order))):
        raise SegvolError(f"{path}: channels {order} are not numbered 0 to {len(order) - 1}")
    return tuple(str(names[k]) for k in order)


def _label_names(meta: dict[str, Any], path: Path) -> tuple[str, ...]:
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise SegvolError(f"{path}: no \"labels\" entry")
    by_value: dict[int, str] = {}
    for key, value in labels.items():
        if isinstance(value, list):
            raise SegvolError(f"{path}: label {key!r} is a region ({value}); region-based labels are not supported")
        try:  # MSD: {"1": "edema"}; nnU-Net v2: {"edema": 1}
            number, name = (int(key), str(value)) if str(key).lstrip("-").isdigit() else (int(value), str(key))
        except (TypeError, ValueError):
            raise SegvolError(f"{path}: label entry {key!r}: {value!r} names no label value") from None
        by_value[number] = name
    if sorted(by_value) != list(range(len(by_value))):
        raise SegvolError(f"{path}: label values {sorted(by_value)} are not consecutive from 0 (background)")
    if len(by_value) < 2:
        raise SegvolError(f"{path}: \"labels\" names no foreground label")
    return tuple(by_value[v] for v in range(len(by_value)))


def read_meta(root: str | Path) -> MsdMeta:
    """Parse ``root/dataset.json``; a missing file, bad JSON or an unusable entry is an error naming it."""
    root = Path(root)
    if not root.is_dir():
        raise SegvolError(f"{root}: no such folder. {WHERE_FROM}")
    path = root / META
    if not path.is_file():
        raise SegvolError(f"{root}: no {META}; not a Medical Segmentation Decathlon / nnU-Net folder. {WHERE_FROM}")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SegvolError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise SegvolError(f"{path}: expected a JSON object")
    ending = str(meta.get("file_ending", ".nii.gz"))
    if ending not in (".nii.gz", ".nii"):
        raise SegvolError(f"{path}: file_ending {ending!r}; only NIfTI (.nii.gz, .nii) datasets are read")
    return MsdMeta(path=path, channels=_channel_names(meta, path), labels=_label_names(meta, path))


def _scan_images(folder: Path, channels: int) -> dict[str, Any]:
    """``{case id: path | [channel paths]}``: one file per case (MSD), or ``X_0000``... files (nnU-Net v2)."""
    stems: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        stem = nifti_stem(p.name)
        if p.is_file() and not p.name.startswith(".") and stem is not None:
            stems[stem] = p
    if not any(s.endswith("_0000") for s in stems):
        return dict(stems)
    cases: dict[str, dict[int, Path]] = {}
    for stem, path in stems.items():
        m = _CHANNEL_FILE.match(stem)
        if m is None:
            raise SegvolError(f"{path}: not named <case>_<channel>.nii.gz like the other nnU-Net channel files")
        cases.setdefault(m.group(1), {})[int(m.group(2))] = path
    out: dict[str, Any] = {}
    for case, found in cases.items():
        missing = [f"{case}_{c:04d}" for c in range(channels) if c not in found]
        extra = [found[c].name for c in found if c >= channels]
        if missing or extra:
            what = f"no {', '.join(missing)} file" if missing else f"extra channel file {extra[0]}"
            raise SegvolError(f"{folder}: case {case} has {what} (dataset.json names {channels} channel(s))")
        out[case] = [str(found[c]) for c in range(channels)] if channels > 1 else str(found[0])
    return out


def _identifier(name: str) -> str:
    """A label name as a metric key: ``"tumour core"`` -> ``"tumour_core"``."""
    return re.sub(r"\W+", "_", name.strip()).strip("_").lower() or "label"


class MSD(DatasetAdapter):
    """Any Medical Segmentation Decathlon or nnU-Net raw dataset (``--dataset msd``, alias ``nnunet``)."""

    name = "msd"
    modality = "MR"  # until dataset.json says CT (modality_of)
    label_modes = ("multi", "binary")
    preset = "msd"
    plans_by_default = True  # a new dataset trains with its own plan (segvol plan), not one fixed recipe

    def find_records(self, root: str | Path, modalities: Sequence[str] = (), require_labels: bool = True
                     ) -> list[Record]:
        """Records of ``imagesTr/`` with their ``labelsTr/`` label maps (channel files in channel order)."""
        meta = read_meta(root)
        if modalities:
            raise SegvolError(f"data.modalities={list(modalities)}: an MSD/nnU-Net dataset is read with all its "
                              f"channels ({', '.join(meta.channels)})")
        images_dir = Path(root) / "imagesTr"
        if not images_dir.is_dir():
            raise SegvolError(f"{root}: no imagesTr/ folder. {WHERE_FROM}")
        images = _scan_images(images_dir, len(meta.channels))
        if not images:
            raise SegvolError(f"{images_dir}: holds no .nii.gz images. {WHERE_FROM}")
        records = []
        for case, image in images.items():
            label = next((p for p in (Path(root) / "labelsTr" / f"{case}{e}" for e in (".nii.gz", ".nii"))
                          if p.is_file()), None)
            if label is None and require_labels:
                raise SegvolError(f"{Path(root) / 'labelsTr'}: no label for case {case} "
                                  f"(expected labelsTr/{case}.nii.gz)")
            records.append({"id": case, "image": image, "label": str(label) if label else None})
        log.info("%s: %d case(s), channels %s, labels %s", root, len(records), ", ".join(meta.channels),
                 ", ".join(meta.labels))
        return records

    def task_spec(self, cfg: Config) -> TaskSpec:
        """``multi``: a softmax class per ``dataset.json`` label; ``binary``: every non-zero label is foreground."""
        meta = read_meta(cfg.data.root)
        mods = tuple(c.lower() for c in meta.channels)
        if cfg.data.labels == "multi":
            return TaskSpec(in_channels=len(mods), out_channels=len(meta.labels), activation="softmax",
                            class_names=tuple(_identifier(n) for n in meta.labels[1:]), modalities=mods)
        if cfg.data.labels == "binary":
            from monai import transforms as mt

            return TaskSpec(in_channels=len(mods), out_channels=2, activation="softmax", class_names=("foreground",),
                            modalities=mods, label_transforms=(mt.AsDiscreted(keys="label", threshold=0.5),))
        raise SegvolError(f"data.labels={cfg.data.labels!r}: {self.name} offers {' or '.join(self.label_modes)}")

    def configure(self, cfg: Config) -> Config:
        """The intensity scheme of the modality ``dataset.json`` names: CT's for CT, MRI's otherwise; a planned
        config (per-channel normalisation from ``segvol plan``) is kept as planned."""
        if cfg.preprocess.intensity_norm == "channels":
            return cfg
        meta = read_meta(cfg.data.root)
        scheme: dict[str, Any]
        if meta.modality == "CT" and cfg.preprocess.intensity_window is not None:
            scheme = {"intensity_window": list(cfg.preprocess.intensity_window)}  # the user's own CT window wins
        else:
            scheme = dict(CT_PREPROCESS if meta.modality == "CT" else MR_PREPROCESS)
        if meta.modality != "CT" and cfg.preprocess.intensity_window is not None:
            log.warning("%s: channels %s are not CT; preprocess.intensity_window is ignored", meta.path,
                        ", ".join(meta.channels))
        scheme["intensity_norm"] = _NORM[meta.modality]
        return cfg.replace(preprocess=scheme)

    def modality_of(self, root: str | Path) -> str:
        return read_meta(root).modality

    def check_rules(self, root: str | Path, modalities: Sequence[str] = ()) -> CheckRules:
        """The modality, channel count and label values ``dataset.json`` declares."""
        meta = read_meta(root)
        return CheckRules(modality=meta.modality, channels=len(meta.channels),
                          label_values=frozenset(range(len(meta.labels))))

    def evaluation_defaults(self) -> EvalDefaults:
        return EvalDefaults()

    def is_case_folder(self, folder: Path, modalities: Sequence[str]) -> bool:
        """For a model of several channels: a folder holding exactly one case's nnU-Net channel files
        (``X_0000.nii.gz``, ``X_0001.nii.gz``, ...)."""
        if len(modalities) < 2:
            return False
        try:
            found = _scan_images(folder, len(modalities))
        except (SegvolError, OSError):
            return False
        return len(found) == 1 and isinstance(next(iter(found.values())), list)

    def case_input(self, item: Any, modalities: Sequence[str]) -> Any:
        """A case folder -> its channel files in channel order (a missing or extra channel file is an error naming
        it); a list of ``X_000k`` files -> ordered by ``k``; anything else as is."""
        if isinstance(item, (str, os.PathLike)) and Path(item).is_dir() and len(modalities) > 1:
            found = _scan_images(Path(item), len(modalities))
            if len(found) != 1:
                raise SegvolError(f"{item}: holds {len(found)} cases; a case folder holds the channel files of one "
                                  f"case (X_0000.nii.gz ... X_{len(modalities) - 1:04d}.nii.gz)")
            return next(iter(found.values()))
        if isinstance(item, (list, tuple)) and len(item) > 1:
            index = {}
            for path in item:
                match = _CHANNEL_FILE.match(nifti_stem(Path(path).name) or "")
                if match is None:
                    return list(item)
                index[int(match.group(2))] = path
            return [index[k] for k in range(len(item))] if sorted(index) == list(range(len(item))) else list(item)
        return item

    def write_phantom_case(self, out: Path, index: int, size: str, seed: int) -> list[Path]:
        """A 2-channel MR-like case with a lesion and its core (:mod:`segvol.data.phantoms.msd`)."""
        from segvol.data.phantoms.msd import write_msd_case

        return write_msd_case(out, index, size, seed)

    def write_phantoms(self, out: Path, cases: int, size: str, seed: int, progress: bool = False) -> list[Path]:
        """The cases, then ``dataset.json`` in the MSD form (so a half-written folder has none)."""
        from segvol.data.phantoms.msd import write_dataset_json

        written = super().write_phantoms(out, cases, size, seed, progress)
        return written + [write_dataset_json(out, cases)]
