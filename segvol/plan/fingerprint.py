"""A dataset's fingerprint: one pass over the cases, the statistics the plan rules read (docs/plan.md).

Per case: voxel spacing, shape, and shape after cropping to the box of the non-zero voxels (any channel); the voxel
count of each label value and the median radius of its structures (from a distance transform). Per channel:
percentiles (0.5, 50, 99.5), mean and std of foreground intensities, sampled the same number of times in every case
so that each case weighs the same (as nnU-Net's fingerprint does). Everything is in the axis order of the image
reoriented to RAS, the order segvol resamples and trains in.

:func:`analyze_arrays` is the array core (testable without disk); :func:`fingerprint_records` reads the files, with a
progress bar, and caches the result as JSON in ``<data root>/.cache/plan/`` beside the training cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segvol.errors import SegvolError
from segvol.io.grid import grid_mismatch

__all__ = ["CaseFingerprint", "ChannelStats", "Fingerprint", "analyze_arrays", "channel_stats",
           "fingerprint_records", "FINGERPRINT_VERSION", "SAMPLES_PER_CASE"]

log = logging.getLogger(__name__)

FINGERPRINT_VERSION = 1
SAMPLES_PER_CASE = 20_000  # foreground intensities drawn (with replacement) per case and channel
SEED = 1234


@dataclass(frozen=True)
class CaseFingerprint:
    """What one case contributes (axes in RAS order)."""

    id: str
    spacing: tuple[float, ...]
    shape: tuple[int, ...]
    shape_cropped: tuple[int, ...]
    channels: int
    class_voxels: dict[int, int] = field(default_factory=dict)  # label value -> voxels (value 0 excluded)
    class_radius_mm: dict[int, float] = field(default_factory=dict)  # label value -> median structure radius

    @property
    def relative_size_cropped(self) -> float:
        return float(np.prod(self.shape_cropped)) / max(float(np.prod(self.shape)), 1.0)


@dataclass(frozen=True)
class ChannelStats:
    """Foreground intensity statistics of one channel over the whole dataset."""

    name: str
    modality: str  # "CT" or the channel's name (MRI sequences, anything else)
    mean: float
    std: float
    median: float
    p00_5: float
    p99_5: float
    min: float
    max: float
    samples: int


@dataclass(frozen=True)
class Fingerprint:
    """The dataset's fingerprint: its cases, its channels and what was wrong with it."""

    dataset: str
    root: str
    label_names: tuple[str, ...]
    cases: tuple[CaseFingerprint, ...]
    channels: tuple[ChannelStats, ...]
    warnings: tuple[str, ...] = ()

    @property
    def spacings(self) -> np.ndarray:
        return np.array([c.spacing for c in self.cases], dtype=np.float64)

    @property
    def shapes_cropped(self) -> np.ndarray:
        return np.array([c.shape_cropped for c in self.cases], dtype=np.float64)

    @property
    def median_relative_size(self) -> float:
        return float(np.median([c.relative_size_cropped for c in self.cases]))

    def summary(self) -> dict[str, Any]:
        """The few numbers a reader wants (the JSON's ``fingerprint`` key)."""
        present = sorted({v for c in self.cases for v in c.class_voxels})
        classes = {}
        for value in present:
            vols = [c.class_voxels.get(value, 0) * float(np.prod(c.spacing)) for c in self.cases]
            radii = [c.class_radius_mm[value] for c in self.cases if value in c.class_radius_mm]
            name = self.label_names[value] if value < len(self.label_names) else str(value)
            classes[name] = {"value": value, "median_volume_mm3": round(float(np.median(vols)), 3),
                             "cases_with_it": sum(v > 0 for v in vols),
                             "median_radius_mm": round(float(np.median(radii)), 3) if radii else None}
        return {"cases": len(self.cases), "median_spacing_mm": _r(np.median(self.spacings, 0)),
                "min_spacing_mm": _r(self.spacings.min(0)), "max_spacing_mm": _r(self.spacings.max(0)),
                "median_shape": _r(np.median([c.shape for c in self.cases], 0), 1),
                "median_shape_cropped": _r(np.median(self.shapes_cropped, 0), 1),
                "median_relative_size_after_crop": round(self.median_relative_size, 4),
                "channels": [asdict(c) for c in self.channels], "classes": classes,
                "warnings": list(self.warnings)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fingerprint:
        cases = tuple(CaseFingerprint(id=c["id"], spacing=tuple(c["spacing"]), shape=tuple(c["shape"]),
                                      shape_cropped=tuple(c["shape_cropped"]), channels=c["channels"],
                                      class_voxels={int(k): int(v) for k, v in c["class_voxels"].items()},
                                      class_radius_mm={int(k): float(v) for k, v in c["class_radius_mm"].items()})
                      for c in d["cases"])
        return cls(dataset=d["dataset"], root=d["root"], label_names=tuple(d["label_names"]), cases=cases,
                   channels=tuple(ChannelStats(**c) for c in d["channels"]), warnings=tuple(d["warnings"]))


def _r(values: Any, digits: int = 4) -> list[float]:
    return [round(float(v), digits) for v in values]


def nonzero_box(image: np.ndarray) -> tuple[slice, ...]:
    """The box of the voxels that are non-zero in any channel of ``image`` (C, X, Y, Z); the whole image if none."""
    mask = np.any(image != 0, axis=0)
    if not mask.any():
        return tuple(slice(0, s) for s in mask.shape)
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def structure_radius(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """The median radius (mm) of the structures in ``mask``: 3 x the mean distance to the background, exact for a
    long tube (the mean distance over a disc of radius r is r/3), r x 3/4 for a ball."""
    from scipy.ndimage import distance_transform_edt

    padded = np.pad(mask, 1)
    dist = distance_transform_edt(padded, sampling=tuple(float(s) for s in spacing))
    return float(3.0 * dist[padded].mean())


def analyze_arrays(case_id: str, image: np.ndarray, label: np.ndarray, spacing: Sequence[float],
                   samples: int = SAMPLES_PER_CASE, seed: int = SEED) -> tuple[CaseFingerprint, list[np.ndarray]]:
    """One case's fingerprint and its sampled foreground intensities per channel.

    Args:
        case_id: the case's name.
        image: (C, X, Y, Z) intensities.
        label: (X, Y, Z) label map on the image's grid (values > 0 are foreground).
        spacing: voxel size per axis, mm.
        samples: foreground intensities drawn per channel, with replacement (every case weighs the same).
        seed: of the draw.
    """
    box = nonzero_box(image)
    cropped, lab = image[(slice(None),) + box], label[box]
    fg = lab > 0
    rng = np.random.default_rng(seed)
    if fg.any():
        picks = rng.integers(0, int(fg.sum()), samples)
        drawn = [np.asarray(cropped[c][fg], dtype=np.float64)[picks] for c in range(image.shape[0])]
    else:
        drawn = [np.empty(0) for _ in range(image.shape[0])]
    values, counts = np.unique(lab, return_counts=True)
    voxels = {int(v): int(n) for v, n in zip(values, counts) if v > 0}
    radius = {v: round(structure_radius(lab == v, spacing), 4) for v in voxels}
    case = CaseFingerprint(id=case_id, spacing=tuple(round(float(s), 6) for s in spacing),
                           shape=tuple(int(s) for s in label.shape),
                           shape_cropped=tuple(int(b.stop - b.start) for b in box), channels=int(image.shape[0]),
                           class_voxels=voxels, class_radius_mm=radius)
    return case, drawn


def channel_stats(name: str, modality: str, values: np.ndarray) -> ChannelStats:
    """Statistics of one channel's pooled foreground samples (NaN when no case had foreground)."""
    if values.size == 0:
        nan = float("nan")
        return ChannelStats(name, modality, nan, nan, nan, nan, nan, nan, nan, 0)
    lo, med, hi = np.percentile(values, (0.5, 50.0, 99.5))
    return ChannelStats(name=name, modality=modality, mean=float(values.mean()), std=float(values.std()),
                        median=float(med), p00_5=float(lo), p99_5=float(hi), min=float(values.min()),
                        max=float(values.max()), samples=int(values.size))


def _read_case(record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """(C, X, Y, Z) image, (X, Y, Z) label and spacing, reoriented to RAS; grid problems raise SegvolError."""
    import nibabel as nib

    paths = record["image"] if isinstance(record["image"], (list, tuple)) else [record["image"]]
    channels: list[np.ndarray] = []
    first: Any = None
    for path in paths:
        try:
            img = nib.as_closest_canonical(nib.load(str(path)))
            data = np.asarray(img.dataobj, dtype=np.float32)
        except Exception as exc:  # nibabel raises many kinds on a broken file
            raise SegvolError(f"{path}: cannot read it ({type(exc).__name__}: {exc})") from exc
        data = data[..., None] if data.ndim == 3 else data
        if data.ndim != 4:
            raise SegvolError(f"{path}: expected a 3D or 4D image, got shape {data.shape}")
        if first is not None and (why := grid_mismatch(first, img)):
            raise SegvolError(f"{path}: channel grid differs from {paths[0]} ({why})")
        first = first or img
        channels.extend(np.moveaxis(data, -1, 0))
    lab_img = nib.as_closest_canonical(nib.load(str(record["label"])))
    why = grid_mismatch(first, lab_img, atol=1e-2)
    if why:
        raise SegvolError(f"{record['label']}: label grid does not match its image ({why})")
    label = np.rint(np.asarray(lab_img.dataobj)).astype(np.int32)
    label = label[..., 0] if label.ndim == 4 else label
    spacing = tuple(float(z) for z in first.header.get_zooms()[:3])
    return np.stack(channels), label, spacing


def _cache_file(root: Path, records: Sequence[dict[str, Any]], samples: int) -> Path:
    """``<root>/.cache/plan/fingerprint-<hash>.json``: the hash covers every file's path, size and time."""
    parts: list[Any] = [FINGERPRINT_VERSION, samples]
    for rec in records:
        for path in [*(rec["image"] if isinstance(rec["image"], (list, tuple)) else [rec["image"]]), rec["label"]]:
            st = Path(path).stat()
            parts.append([str(path), st.st_size, st.st_mtime_ns])
    key = hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]
    return root / ".cache" / "plan" / f"fingerprint-{key}.json"


def _load_cached(path: Path) -> Fingerprint | None:
    try:
        return Fingerprint.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save_cached(path: Path, fp: Fingerprint) -> None:
    from segvol.utils import atomic_path

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(fp.to_dict()))
    except OSError as exc:
        log.warning("%s: cannot cache the fingerprint there (%s)", path.parent, exc)


def _scan(records: Sequence[dict[str, Any]], samples: int, progress: bool
          ) -> tuple[list[CaseFingerprint], list[list[np.ndarray]], list[str]]:
    """Every readable case, its foreground samples, and one warning line per case left out."""
    from tqdm import tqdm

    cases, drawn, warnings = [], [], []
    for i, rec in enumerate(tqdm(records, desc="fingerprint", unit="case", disable=not progress)):
        if not rec.get("label"):
            warnings.append(f"{rec['image']}: no label; left out of the fingerprint")
            continue
        try:
            image, label, spacing = _read_case(rec)
        except SegvolError as exc:
            warnings.append(f"{exc}; case {rec['id']} left out of the fingerprint")
            continue
        case, values = analyze_arrays(str(rec["id"]), image, label, spacing, samples, SEED + i)
        cases.append(case)
        drawn.append(values)
    return cases, drawn, warnings


def _dataset_warnings(cases: list[CaseFingerprint], label_names: Sequence[str], root: Path) -> list[str]:
    out = []
    if len(cases) == 1:
        out.append(f"{root}: a single usable case; the plan's statistics rest on it alone")
    seen = {v for c in cases for v in c.class_voxels}
    for value, name in enumerate(label_names):
        if value > 0 and value not in seen:
            out.append(f"{root}: class {value} ({name}) is absent from every case")
    return out


def fingerprint_records(dataset: str, root: str | Path, records: Sequence[dict[str, Any]],
                        channel_names: Sequence[str], modalities: Sequence[str], label_names: Sequence[str], *,
                        samples: int = SAMPLES_PER_CASE, progress: bool = False, cache: bool = True) -> Fingerprint:
    """The fingerprint of ``records`` (``{"id", "image", "label"}``), cached in ``<root>/.cache/plan/``.

    Cases that cannot be used (no label, a label on another grid, a channel count unlike the others) are left out
    with one warning line each; a class absent from every case and a single case are warned about. Raises
    :class:`SegvolError` when no case is usable.
    """
    root = Path(root)
    cache_path = _cache_file(root, records, samples) if cache else None
    if cache_path is not None and cache_path.is_file() and (fp := _load_cached(cache_path)) is not None:
        log.info("fingerprint read from %s", cache_path)
        for line in fp.warnings:
            log.warning("%s", line)
        return fp
    cases, drawn, warnings = _scan(records, samples, progress)
    want = len(channel_names)
    keep = [i for i, c in enumerate(cases) if c.channels == want]
    for c in cases:
        if c.channels != want:
            warnings.append(f"{root}: case {c.id} has {c.channels} channel(s), the dataset {want}; left out")
    cases, drawn = [cases[i] for i in keep], [drawn[i] for i in keep]
    if not cases:
        raise SegvolError(f"{root}: no usable case to plan from ({len(records)} record(s); "
                          f"{warnings[0] if warnings else 'none found'})")
    warnings += _dataset_warnings(cases, label_names, root)
    stats = tuple(channel_stats(name, mod, np.concatenate([d[c] for d in drawn]))
                  for c, (name, mod) in enumerate(zip(channel_names, modalities)))
    fp = Fingerprint(dataset=dataset, root=str(root), label_names=tuple(label_names), cases=tuple(cases),
                     channels=stats, warnings=tuple(warnings))
    for line in warnings:
        log.warning("%s", line)
    if cache_path is not None:
        _save_cached(cache_path, fp)
    return fp
