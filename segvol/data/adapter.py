"""The dataset adapter interface: everything segvol knows about one dataset, in one class.

Every stage asks the adapter of ``cfg.data.dataset`` (:func:`segvol.data.registry.get_adapter`) and nothing else:
``train`` its records, split, task and preprocessing (:meth:`DatasetAdapter.find_records`,
:meth:`~DatasetAdapter.official_split`, :meth:`~DatasetAdapter.task_spec`, :meth:`~DatasetAdapter.configure`),
``check-data`` its rules (:meth:`~DatasetAdapter.check_rules`, :meth:`~DatasetAdapter.allowed_labels`),
``evaluate`` its defaults, case ids and label scheme (:meth:`~DatasetAdapter.evaluation_defaults`,
:meth:`~DatasetAdapter.case_id`, ``region_scheme``), ``infer`` how a case folder is read
(:meth:`~DatasetAdapter.is_case_folder`, :meth:`~DatasetAdapter.case_input`) and ``synth`` its phantoms
(:meth:`~DatasetAdapter.write_phantoms`). A new dataset is one subclass and one
:func:`segvol.data.registry.register_dataset` call; the abstract methods are what it must provide, the others have
defaults that fit a plain ``image`` + ``label`` NIfTI dataset.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from segvol.config import Config
from segvol.data.records import Record
from segvol.errors import SegvolError
from segvol.labels import RegionScheme, TaskSpec

__all__ = ["DatasetAdapter", "CheckRules", "EvalDefaults"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckRules:
    """What ``check-data`` holds a dataset's files to.

    Attributes:
        modality: ``"CT"`` (HU range and air checks) or ``"MR"`` (zero background, no negative values).
        channels: image channels every case must have (None = not checked).
        label_values: the label values allowed in a label map.
    """

    modality: str
    channels: int | None
    label_values: frozenset[int]


@dataclass(frozen=True)
class EvalDefaults:
    """How ``segvol evaluate`` scores a run of this dataset.

    Attributes:
        vessel: also report clDice and connected components (thin tubular structures).
        label_names: readable names of label values for the failure analysis (None = the class names).
    """

    vessel: bool = False
    label_names: dict[int, str] | None = None


class DatasetAdapter(ABC):
    """One dataset: its name, modality, channels, labels, task, records, split, check rules, evaluation defaults
    and phantoms.

    Class attributes:
        name: the registry name (``segvol train --dataset NAME``).
        modality: ``"CT"`` or ``"MR"`` (an adapter whose modality depends on the folder overrides
            :meth:`modality_of`).
        label_names: the names of the label values 0, 1, ... as stored in the label files.
        default_modalities: the image channels' names, in order.
        preset: the config preset ``segvol train --dataset NAME`` starts from.
        mask_markers: name endings of this dataset's label files before ``.nii(.gz)`` (``.label``), stripped with
            segvol's own ``_seg`` to make case ids and preferred in folders of masks.
        image_markers: name endings of its scans (``.img``), stripped to make case ids.
        region_scheme: the dataset's overlapping regions, when its labels score as regions (BraTS TC/WT/ET).
        plans_by_default: ``segvol train --dataset NAME`` plans the dataset (``segvol plan``) instead of using the
            preset, unless a config is given or ``--no-plan``.
    """

    name: ClassVar[str]
    modality: ClassVar[str] = "MR"
    label_names: ClassVar[tuple[str, ...]] = ("background", "foreground")
    default_modalities: ClassVar[tuple[str, ...]] = ("image",)
    preset: ClassVar[str | None] = None
    mask_markers: ClassVar[tuple[str, ...]] = ()
    image_markers: ClassVar[tuple[str, ...]] = ()
    region_scheme: ClassVar[RegionScheme | None] = None
    plans_by_default: ClassVar[bool] = False

    # ------------------------------------------------------------------------------------------------- records
    @abstractmethod
    def find_records(self, root: str | Path, modalities: Sequence[str] = (), require_labels: bool = True
                     ) -> list[Record]:
        """Records ``{"id", "image": path | [paths in channel order], "label": path | None}`` found in ``root``.

        Raises :class:`SegvolError` naming the folder (and where the dataset comes from) when ``root`` is not a
        folder of this dataset, and naming the file when a case is incomplete.
        """

    @abstractmethod
    def task_spec(self, cfg: Config) -> TaskSpec:
        """What the network and the metrics are asked to do for ``cfg.data`` (channels, head, class names)."""

    def official_split(self, root: str | Path) -> dict[str, list[str]] | None:
        """The dataset's own ``{"train", "val", "test"}`` case ids, or None to use the seeded split."""
        return None

    def configure(self, cfg: Config) -> Config:
        """``cfg`` adapted to the data in ``cfg.data.root`` before training (e.g. the intensity scheme of the
        modality ``dataset.json`` names); the result is what the run folder and checkpoints store."""
        return cfg

    # ---------------------------------------------------------------------------------------------- check-data
    def modality_of(self, root: str | Path) -> str:
        """``"CT"`` or ``"MR"`` for the data in ``root`` (the class's ``modality`` unless the folder says)."""
        return self.modality

    def check_rules(self, root: str | Path, modalities: Sequence[str] = ()) -> CheckRules:
        """The rules ``check-data`` applies to every case in ``root``."""
        modality = self.modality_of(root)
        channels = 1 if modality == "CT" and len(self.default_modalities) == 1 else None
        return CheckRules(modality=modality, channels=channels,
                          label_values=frozenset(range(len(self.label_names))))

    def allowed_labels(self, record: Record, rules: CheckRules) -> frozenset[int]:
        """The label values allowed in ``record``'s label file (an adapter may vary them by release)."""
        return rules.label_values

    # ------------------------------------------------------------------------------------------------ evaluate
    def evaluation_defaults(self) -> EvalDefaults:
        """How ``segvol evaluate`` scores a run of this dataset."""
        return EvalDefaults()

    def case_id(self, name: str) -> str:
        """The case id of a file name: without ``.nii(.gz)`` and, repeatedly, without any trailing
        :data:`~segvol.io.masks.SEGVOL_MARKERS` and this dataset's markers (``12.img_seg.nii.gz`` -> ``12``)."""
        from segvol.io.masks import SEGVOL_MARKERS, case_id

        return case_id(name, SEGVOL_MARKERS + self.mask_markers + self.image_markers)

    # --------------------------------------------------------------------------------------------------- infer
    def is_case_folder(self, folder: Path, modalities: Sequence[str]) -> bool:
        """Whether ``folder`` is one case of this dataset (the channel files of one scan) rather than a folder of
        scans, for a model of ``modalities``. Single-file datasets have no case folders."""
        return False

    def case_input(self, item: Any, modalities: Sequence[str]) -> Any:
        """An inference input as the predictor takes it: a case folder becomes its channel files in the model's
        order (``modalities``); anything else is returned as is."""
        return item

    # --------------------------------------------------------------------------------------------------- synth
    def write_phantom_case(self, out: Path, index: int, size: str, seed: int) -> list[Path]:
        """Write phantom case number ``index`` (1-based) into ``out`` in the dataset's layout; returns its files."""
        raise SegvolError(f"no phantoms for dataset {self.name!r}")

    def write_phantoms(self, out: Path, cases: int, size: str, seed: int, progress: bool = False) -> list[Path]:
        """Write ``cases`` phantom cases (and any dataset-level files) into the empty folder ``out``."""
        from tqdm.auto import tqdm

        written: list[Path] = []
        for index in tqdm(range(1, cases + 1), desc=f"synth {self.name}", unit="case", disable=not progress):
            written += self.write_phantom_case(out, index, size, seed)
        return written

    @property
    def has_phantoms(self) -> bool:
        """Whether ``segvol synth`` can write this dataset."""
        return type(self).write_phantom_case is not DatasetAdapter.write_phantom_case or \
            type(self).write_phantoms is not DatasetAdapter.write_phantoms

    def phantom_scans(self, out: Path) -> list[tuple[str, Path]]:
        """``(case id, scan file)`` of single-file CT phantoms in ``out`` (what ``synth --dicom`` converts)."""
        if self.modality_of(out) != "CT":
            raise SegvolError(f"--dicom: only CT phantoms are written as DICOM series, not {self.name}")
        records = self.find_records(out)
        if any(isinstance(r["image"], (list, tuple)) for r in records):
            raise SegvolError(f"--dicom: {self.name} phantoms have several channel files per case")
        return [(str(r["id"]), Path(r["image"])) for r in records]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def as_list(image: Any) -> list[str]:
    """A record's image as a list of paths (one per channel file)."""
    return [str(p) for p in image] if isinstance(image, (list, tuple)) else [str(image)]
