"""BraTS adapter: one folder per case holding four MRI sequences and, for training cases, a ``seg`` label map.

Every public release layout is read by itself:

* 2018-2020: ``BraTS20_Training_001/BraTS20_Training_001_{flair,t1,t1ce,t2,seg}.nii.gz``
* 2021: ``BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2,seg}.nii.gz``
* 2023+: ``BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t2f,t1n,t1c,t2w,seg}.nii.gz`` (enhancing tumour is 3, not 4)
* validation releases: the same folders without ``seg`` (records get ``label=None``; training refuses them).

File names are matched on their last ``_``/``-``/``.``-separated token, case-insensitively, ``.nii`` or
``.nii.gz``; a lone unmatched NIfTI whose name contains ``seg`` is taken as the label map (one 2020 case ships
``W39_1998.09.19_Segm.nii``). Case folders may sit one or two levels below the root (the 2020 archive nests them in
``MICCAI_BraTS2020_TrainingData/``); folders starting with ``.`` (e.g. the disk cache) are skipped.

Channels are stacked in one fixed order, :data:`MODALITIES` = ``(flair, t1, t1ce, t2)`` (2023 names ``t2f, t1n,
t1c, t2w`` map onto them); ``data.modalities`` picks a subset, kept in that order.

Labels (``data.labels``): ``binary`` is the whole tumour (every non-zero label) with a softmax head; ``regions``
are TC, WT, ET as three sigmoid channels with the semantics of MONAI's
``ConvertToMultiChannelBasedOnBratsClassesd`` (label 3 is read as enhancing too, so 2023 data works unchanged).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from segvol.config import Config
from segvol.labels import RegionScheme, TaskSpec
from segvol.data.adapter import CheckRules, DatasetAdapter, EvalDefaults, as_list
from segvol.data.records import Record
from segvol.errors import SegvolError
from segvol.io.nifti import nifti_stem

__all__ = ["BraTS", "LGG", "MODALITIES", "REGIONS", "BratsCase", "scan_case", "resolve_modalities",
           "binary_label_transforms", "region_label_transforms", "region_paint", "case_images", "resolve_input"]

log = logging.getLogger(__name__)

MODALITIES = ("flair", "t1", "t1ce", "t2")  # the fixed channel order
REGIONS = ("tc", "wt", "et")  # output channels of the regions head, as MONAI's BraTS conversion orders them
BRATS_LABEL_NAMES = {1: "necrotic core", 2: "edema", 3: "enhancing tumour", 4: "enhancing tumour"}
# The three BraTS regions from label values, valid for every release: tumour core TC = {1, 3, 4}, whole tumour
# WT = {1, 2, 3, 4}, enhancing tumour ET = {3, 4} (enhancing is 4 up to 2021 and 3 from 2023; label 3 was
# "non-enhancing core" in 2017 and belongs to the core either way). ``auto`` reads {0, 1, 2, 4} maps holding 4 as
# BraTS; 2023 maps ({0, 1, 2, 3}) read as ``multi`` unless ``--labels brats`` is asked for.
BRATS_SCHEME = RegionScheme("brats", regions={"tc": (1, 3, 4), "wt": (1, 2, 3, 4), "et": (3, 4)},
                            readable={"tc": "tumour core", "wt": "whole tumour", "et": "enhancing tumour"},
                            label_names=BRATS_LABEL_NAMES, signature=frozenset({1, 2, 4}), marker=4)
ALIASES = {"flair": "flair", "t2f": "flair", "fla": "flair", "t1": "t1", "t1n": "t1", "t1ce": "t1ce",
           "t1c": "t1ce", "t1gd": "t1ce", "t2": "t2", "t2w": "t2", "seg": "seg"}
RELEASE_2023_TOKENS = {"t2f", "t1n", "t1c", "t2w"}
_SPLIT = re.compile(r"[_\-.]")

WHERE_FROM = (
    "BraTS is distributed by the challenge organisers (one folder per case: <case>_{flair,t1,t1ce,t2,seg}.nii.gz, "
    "or <case>-{t2f,t1n,t1c,t2w,seg}.nii.gz from 2023); to try segvol without it, make phantoms: "
    "segvol synth brats --out data/brats --cases 8"
)


@dataclass
class BratsCase:
    """The files of one case folder, keyed by canonical sequence name (and ``seg``)."""

    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    release: str = "2018-2021"  # or "2023" (enhancing tumour labelled 3)
    unmatched: list[Path] = field(default_factory=list)


def scan_case(folder: str | Path) -> BratsCase:
    """Match the NIfTI files of one case folder to sequences; duplicates are an error naming both files."""
    case = BratsCase(Path(folder))
    for path in sorted(case.folder.iterdir()):
        stem = nifti_stem(path.name)
        if stem is None or path.name.startswith(".") or not path.is_file():
            continue
        token = _SPLIT.split(stem)[-1].lower()
        key = ALIASES.get(token)
        if key is None:
            case.unmatched.append(path)
            continue
        if key in case.files:
            raise SegvolError(f"{path}: a second {key} file in {case.folder.name} (also {case.files[key].name})")
        case.files[key] = path
        if token in RELEASE_2023_TOKENS:
            case.release = "2023"
    lone_seg = [p for p in case.unmatched if "seg" in p.name.lower()]
    if "seg" not in case.files and len(lone_seg) == 1 and case.files:
        case.files["seg"] = lone_seg[0]
        case.unmatched.remove(lone_seg[0])
    return case


def _case_folders(root: Path) -> list[Path]:
    """Folders up to two levels below ``root`` that hold at least one BraTS-named NIfTI file."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < 2 else []
        if here == root:
            continue
        if any((s := nifti_stem(f)) is not None and _SPLIT.split(s)[-1].lower() in ALIASES for f in filenames):
            found.append(here)
    return sorted(found, key=lambda p: p.name)


def resolve_modalities(requested: Sequence[str], default: Sequence[str] = MODALITIES) -> tuple[str, ...]:
    """Canonical names of ``requested`` (aliases accepted), in the fixed order; empty means ``default``."""
    chosen = []
    for name in requested or default:
        key = ALIASES.get(str(name).lower())
        if key is None or key == "seg":
            raise SegvolError(f"data.modalities: unknown sequence {name!r}; known: {', '.join(MODALITIES)} "
                              f"(2023 names t2f, t1n, t1c, t2w are accepted too)")
        chosen.append(key)
    return tuple(m for m in MODALITIES if m in chosen)


def binary_label_transforms() -> tuple[Any, ...]:
    """Whole tumour: every non-zero label (1, 2, 3 or 4, float files included) becomes 1."""
    from monai import transforms as mt

    return (mt.AsDiscreted(keys="label", threshold=0.5),)


def region_label_transforms() -> tuple[Any, ...]:
    """Label map -> (TC, WT, ET) channels; label 3 (2023 enhancing) is read as 4 first, float files rounded."""
    from monai import transforms as mt

    return (mt.AsDiscreted(keys="label", rounding="torchrounding"),
            mt.MapLabelValued(keys="label", orig_labels=[3], target_labels=[4]),
            mt.ConvertToMultiChannelBasedOnBratsClassesd(keys="label"),
            mt.EnsureTyped(keys="label", dtype="float32", track_meta=True))


def region_paint(et_label: int = 4) -> tuple[tuple[int, int], ...]:
    """``(channel, value)`` painting order that turns TC/WT/ET back into a label map: WT->2, TC->1, ET->4 (or 3)."""
    return ((REGIONS.index("wt"), 2), (REGIONS.index("tc"), 1), (REGIONS.index("et"), et_label))


def _release_of(root: str | Path) -> str:
    """The release layout of the first case folder under ``root`` ("2018-2021" when none is found)."""
    root = Path(root)
    if not root.is_dir():
        return "2018-2021"
    folders = _case_folders(root)
    return scan_case(folders[0]).release if folders else "2018-2021"


LABEL_VALUES = frozenset({0, 1, 2, 4})
LABEL_VALUES_2023 = frozenset({0, 1, 2, 3})  # 2023+ releases: enhancing tumour is 3


class BraTS(DatasetAdapter):
    """Brain tumour in four MRI sequences: whole tumour (binary) or TC/WT/ET regions."""

    name = "brats"
    modality = "MR"
    label_names = ("background", "necrotic core", "edema", "enhancing tumour")
    default_modalities: ClassVar[tuple[str, ...]] = MODALITIES
    label_modes: ClassVar[tuple[str, ...]] = ("binary", "regions")
    preset: ClassVar[str | None] = "brats"
    mask_markers: ClassVar[tuple[str, ...]] = ("_seg", "-seg")  # BraTS20_Training_001_seg, BraTS-GLI-...-seg
    region_scheme: ClassVar[RegionScheme | None] = BRATS_SCHEME

    def is_case_folder(self, folder: Path, modalities: Sequence[str]) -> bool:
        """A folder is one case when, for a model of several channels, any file names a sequence; for one
        channel, when a file names that sequence (a BraTS case read by a FLAIR-only model)."""
        try:
            found = set(scan_case(folder).files) - {"seg"}
        except SegvolError:  # two files of one sequence: one case for a multi-channel model (case_input says so)
            return len(modalities) > 1
        if len(modalities) > 1:
            return bool(found)
        wanted = {ALIASES.get(str(m).lower()) for m in modalities} - {None, "seg"}
        return bool(modalities) and len(wanted) == len(modalities) and wanted <= found

    def case_input(self, item: Any, modalities: Sequence[str]) -> Any:
        """A case folder -> its sequences in the model's order; named sequence files -> that order
        (:func:`resolve_input`)."""
        return resolve_input(item, modalities)

    def task_spec(self, cfg: Config) -> TaskSpec:
        """Head, class names, channels and label conversion for ``cfg.data.labels`` and ``cfg.data.modalities``."""
        mods = resolve_modalities(cfg.data.modalities, self.default_modalities)
        if cfg.data.labels not in self.label_modes:
            raise SegvolError(f"data.labels={cfg.data.labels!r}: {self.name} offers "
                              f"{' or '.join(self.label_modes)}")
        if cfg.data.labels == "binary":
            return TaskSpec(in_channels=len(mods), out_channels=2, activation="softmax", class_names=("wt",),
                            modalities=mods, label_transforms=binary_label_transforms())
        et_label = 3 if _release_of(cfg.data.root) == "2023" else 4
        return TaskSpec(in_channels=len(mods), out_channels=3, activation="sigmoid", class_names=REGIONS,
                        modalities=mods, label_transforms=region_label_transforms(), paint=region_paint(et_label))

    def find_records(self, root: str | Path, modalities: Sequence[str] = (), require_labels: bool = True
                     ) -> list[Record]:
        """Records ``{"id", "image": [paths in channel order], "label": path | None}``, one per case folder.

        Args:
            root: the dataset folder (case folders one or two levels below it).
            modalities: sequences to stack (default: the adapter's); a case lacking one is an error naming it.
            require_labels: a case without ``seg`` is an error (training); otherwise its label is None.
        """
        root = Path(root)
        if not root.is_dir():
            raise SegvolError(f"{root}: no such folder. {WHERE_FROM}")
        mods = resolve_modalities(modalities, self.default_modalities)
        folders = _case_folders(root)
        if not folders:
            raise SegvolError(f"{root}: holds no BraTS case folders (<case>/<case>_flair.nii.gz ...). {WHERE_FROM}")
        records, unmatched = [], []
        for folder in folders:
            case = scan_case(folder)
            records.append(self._record(case, mods, require_labels))
            unmatched += case.unmatched
        stray = [p for p in root.iterdir() if nifti_stem(p.name) is not None and p.is_file()]
        if unmatched:
            log.warning("%s: %d file(s) not matched to a sequence and ignored: %s", root, len(unmatched),
                        ", ".join(str(p.relative_to(root)) for p in unmatched[:5]))
        if stray:
            log.info("%s: %d NIfTI file(s) beside the case folders ignored (e.g. %s)", root, len(stray), stray[0].name)
        log.info("%s: %d case(s), sequences %s", root, len(records), ", ".join(mods))
        return records

    def _record(self, case: BratsCase, mods: tuple[str, ...], require_labels: bool) -> Record:
        missing = [m for m in mods if m not in case.files]
        if missing:
            have = ", ".join(sorted(case.files)) or "no matching files"
            raise SegvolError(f"{case.folder}: case {case.folder.name} has no {' or '.join(missing)} file "
                              f"(found: {have})")
        label = case.files.get("seg")
        if label is None and require_labels:
            raise SegvolError(f"{case.folder}: case {case.folder.name} has no seg file; training and evaluation need "
                              f"labels (validation releases ship none)")
        return {"id": case.folder.name, "image": [str(case.files[m]) for m in mods],
                "label": str(label) if label is not None else None}

    def check_rules(self, root: str | Path, modalities: Sequence[str] = ()) -> CheckRules:
        """MR; one file per sequence; labels {0, 1, 2, 4} (the 2023+ releases' file names switch to {0, 1, 2, 3})."""
        return CheckRules(modality="MR", channels=len(resolve_modalities(modalities, self.default_modalities)),
                          label_values=LABEL_VALUES)

    def allowed_labels(self, record: Record, rules: CheckRules) -> frozenset[int]:
        names = [(nifti_stem(Path(p).name) or "").lower() for p in as_list(record["image"])]
        if any(_SPLIT.split(n)[-1] in RELEASE_2023_TOKENS for n in names):
            return LABEL_VALUES_2023
        return rules.label_values

    def evaluation_defaults(self) -> EvalDefaults:
        """Label values named for the failure analysis (1 necrotic core, 2 edema, 3/4 enhancing tumour)."""
        return EvalDefaults(label_names=dict(BRATS_LABEL_NAMES))

    def write_phantom_case(self, out: Path, index: int, size: str, seed: int) -> list[Path]:
        """A case folder in the BraTS 2020 layout (:mod:`segvol.data.phantoms.brats`)."""
        from segvol.data.phantoms.brats import write_brats_case

        return write_brats_case(out, index, size, seed)


class LGG(BraTS):
    """LGG FLAIR-abnormality masks (the kaggle_3m TIFF stacks after ``segvol import lgg-tiff``): binary only.

    The TIFFs hold three sequences (pre-contrast T1, FLAIR, post-contrast T1), imported as ``t1``, ``flair`` and
    ``t1ce``; the mask is one label.
    """

    name = "lgg"
    default_modalities = ("flair", "t1", "t1ce")
    label_modes = ("binary",)
    preset = None
    write_phantom_case = DatasetAdapter.write_phantom_case  # no LGG phantoms

    def check_rules(self, root: str | Path, modalities: Sequence[str] = ()) -> CheckRules:
        """MR; one file per sequence; one label."""
        return CheckRules(modality="MR", channels=len(resolve_modalities(modalities, self.default_modalities)),
                          label_values=frozenset({0, 1}))


def case_images(folder: str | Path, modalities: Sequence[str]) -> list[str]:
    """The image files of one case folder, in ``modalities`` order (for inference)."""
    folder = Path(folder)
    mods = tuple(modalities)
    unknown = [m for m in mods if m not in MODALITIES]
    if unknown:
        raise SegvolError(f"{folder}: a folder input is read as a BraTS case, but the model expects "
                          f"{', '.join(mods)} channel(s); give the scan file instead")
    case = scan_case(folder)
    missing = [m for m in mods if m not in case.files]
    if missing:
        raise SegvolError(f"{folder}: case {folder.name} has no {' or '.join(missing)} file (the model expects "
                          f"{', '.join(mods)})")
    return [str(case.files[m]) for m in mods]


def resolve_input(item: Any, modalities: Sequence[str]) -> Any:
    """An inference input as the predictor takes it: a case folder becomes its sequences in the model's order
    (a DICOM series folder stays one input); a list of files whose names all name a sequence is put in that order;
    anything else is returned as is."""
    from segvol.io.dicom import is_series_folder

    if isinstance(item, (str, os.PathLike)) and Path(item).is_dir():
        return item if is_series_folder(Path(item)) else case_images(Path(item), modalities)
    if isinstance(item, (list, tuple)) and len(item) > 1:
        named = {}
        for path in item:
            stem = nifti_stem(Path(path).name) or ""
            named[ALIASES.get(_SPLIT.split(stem)[-1].lower(), "?")] = path
        if len(named) == len(item) and set(named) == set(modalities):
            return [named[m] for m in modalities]
        return list(item)
    return item
