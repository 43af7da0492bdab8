"""DICOM folders as hospitals export them: finding the series in a folder, choosing one, and checking it before
any work.

A study export puts several series in one folder (or one folder per series), with localisers, secondary captures,
dose reports and anonymised headers mixed in. :func:`find_series` groups a folder's files by SeriesInstanceUID and
says what each group is; :func:`select_series` picks one by SeriesInstanceUID, number or description, or the
largest axial volume of the model's modality (and says which); :func:`validate_series` refuses, in one line naming
the folder, what the chosen outputs cannot honour (uneven or missing slices, gantry tilt, mixed orientations, and
for outputs that reference the series the Study, Series and Frame of Reference UIDs), and :func:`source_datasets`
makes the one safe repair there is: SOP Class and Instance UIDs blanked in a dataset but kept in its file meta.

Two series are never stacked into one volume: a :class:`DicomSeries` names exactly the files it reads, and
:func:`staged_folder` shows MONAI's reader only those.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segvol.errors import SegvolError, first_line

__all__ = ["is_dicom_file", "check_files", "DicomSeries", "find_series", "select_series", "open_series",
           "validate_series", "source_datasets",
           "staged_folder", "series_table", "REFERENCE_UIDS"]

log = logging.getLogger(__name__)
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and its multi-frame variants (.1 to .4)
_NOT_IMAGES = {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "PR", "KO", "REG", "DOC"}
# what an output that references its source series (DICOM-SEG, RTSTRUCT) needs in every source dataset
REFERENCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
_TILT_DEGREES = 0.5  # slice stack direction vs the slice normal
_ORIENTATION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class DicomSeries:
    """One series of a DICOM folder, as an inference input.

    Attributes:
        folder: the folder the files lie in (outputs are named after it).
        files: the image files of this series (localiser images of the series left out), in file-name order.
        uid: SeriesInstanceUID ("" where the headers were blanked).
        number: SeriesNumber as written ("" when absent).
        description: SeriesDescription.
        modality: Modality (CT, MR, ...).
        kind: ``volume``, ``localiser``, ``secondary capture``, ``single image`` or ``not an image``.
        rows: Rows of the first image.
        columns: Columns of the first image.
        axial: whether the slices are axial (slice normal within 30 degrees of the patient's z axis).
        skipped: ``(file, reason)`` for files of this series left out (localiser images).
    """

    folder: Path
    files: tuple[Path, ...]
    uid: str = ""
    number: str = ""
    description: str = ""
    modality: str = ""
    kind: str = "volume"
    rows: int = 0
    columns: int = 0
    axial: bool = True
    skipped: tuple[tuple[Path, str], ...] = field(default=(), compare=False)

    def __str__(self) -> str:
        return str(self.folder)

    @property
    def voxels(self) -> int:
        return self.rows * self.columns * len(self.files)

    @property
    def whole_folder(self) -> bool:
        """Whether this series is every DICOM file of its folder (MONAI may then read the folder itself)."""
        return len(self.files) == sum(1 for p in self.folder.iterdir() if p.is_file() and is_dicom_file(p))

    def label(self) -> str:
        """``series 3 "CT 1mm" (1.2.3..., 40 slices of 64x64, CT)`` for log lines and errors."""
        name = f"series {self.number or '?'}" + (f' "{self.description}"' if self.description else "")
        return (f"{name} ({self.uid or 'no SeriesInstanceUID'}, {len(self.files)} "
                f"{'slice' if len(self.files) == 1 else 'slices'} of {self.rows}x{self.columns}, "
                f"{self.modality or '?'}{'' if self.kind == 'volume' else ', ' + self.kind})")


def is_dicom_file(path: str | Path) -> bool:
    """A DICOM Part 10 file: the ``DICM`` magic at byte 128."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def check_files(folder: str | Path, files: Sequence[Path]) -> list[Any]:
    """Read every file of a series with its whole pixel data, before any work: each must be a readable DICOM image
    with Rows, Columns, ImagePositionPatient and ImageOrientationPatient and complete uncompressed pixel data.
    Returns the headers (pixel data dropped); a problem is a one-line error naming the file."""
    import pydicom

    if len(files) < 2:
        raise SegvolError(f"{folder}: a DICOM series needs at least 2 slices, found {len(files)}")
    headers = []
    for path in files:
        try:
            ds = pydicom.dcmread(str(path))
            pixels = ds.PixelData
            rows, cols = int(ds.Rows), int(ds.Columns)
            [float(v) for v in ds.ImagePositionPatient]  # noqa: B018  (present and numeric)
            [float(v) for v in ds.ImageOrientationPatient]  # noqa: B018
            compressed = ds.file_meta.TransferSyntaxUID.is_compressed
            expected = rows * cols * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
        except Exception as exc:  # pydicom raises many types for broken files
            raise SegvolError(f"{path}: not a readable DICOM image ({type(exc).__name__}: {first_line(exc)})") from exc
        if not compressed and len(pixels) < expected:
            raise SegvolError(f"{path}: truncated pixel data ({len(pixels)} of {expected} bytes)")
        del ds.PixelData
        headers.append(ds)
    return headers


def _header(path: Path) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for broken files
        raise SegvolError(f"{path}: not a readable DICOM file ({type(exc).__name__}: "
                          f"{first_line(exc, empty='corrupt')})") from exc


def _text(ds: Any, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def _is_localiser(ds: Any) -> bool:
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    return "LOCALIZER" in image_type or "SCOUT" in image_type or "LOCALISER" in image_type


def _kind(headers: Sequence[Any], kept: int) -> str:
    first = headers[0]
    sop_class = _text(first, "SOPClassUID") or str(getattr(first.file_meta, "MediaStorageSOPClassUID", "") or "")
    if _text(first, "Modality").upper() in _NOT_IMAGES or "PixelData" not in first and "Rows" not in first:
        return "not an image"
    if sop_class.startswith(_SECONDARY_CAPTURE):
        return "secondary capture"
    if kept == 0:
        return "localiser"
    return "single image" if kept == 1 else "volume"


def _is_axial(ds: Any) -> bool:
    try:
        cosines = np.array([float(v) for v in ds.ImageOrientationPatient])
    except (AttributeError, TypeError, ValueError):
        return False
    normal = np.cross(cosines[:3], cosines[3:])
    return bool(abs(normal[2]) >= np.cos(np.radians(30)) * max(np.linalg.norm(normal), 1e-9))


def find_series(folder: str | Path) -> list[DicomSeries]:
    """The series in ``folder`` (its DICOM files only, not subfolders), grouped by SeriesInstanceUID, largest
    first; localiser images inside a series are left out of it (``skipped``)."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_dicom_file(p))
    if not files:
        raise SegvolError(f"{folder}: holds no DICOM files")
    groups: dict[str, list[tuple[Path, Any]]] = {}
    for path in files:
        ds = _header(path)
        groups.setdefault(_text(ds, "SeriesInstanceUID"), []).append((path, ds))
    found = []
    for uid, members in groups.items():
        kept = [(p, ds) for p, ds in members if not _is_localiser(ds)]
        skipped = tuple((p, "localiser image") for p, ds in members if _is_localiser(ds))
        first = (kept or members)[0][1]
        found.append(DicomSeries(
            folder=folder, files=tuple(p for p, _ in (kept or members)), uid=uid, number=_text(first, "SeriesNumber"),
            description=_text(first, "SeriesDescription"), modality=_text(first, "Modality").upper(),
            kind=_kind([ds for _, ds in members], len(kept)), rows=int(first.get("Rows", 0) or 0),
            columns=int(first.get("Columns", 0) or 0), axial=_is_axial(first), skipped=skipped))
    return sorted(found, key=lambda s: (-(s.kind == "volume"), -s.voxels, s.number, s.uid))


def series_table(series: Sequence[DicomSeries]) -> str:
    """One line per series: number, description, modality, slices, size, kind, SeriesInstanceUID."""
    head = ["number", "description", "modality", "slices", "size", "kind", "SeriesInstanceUID"]
    rows = [[s.number or "-", s.description or "-", s.modality or "-", str(len(s.files)), f"{s.rows}x{s.columns}",
             s.kind if s.axial or s.kind != "volume" else "volume (not axial)", s.uid or "-"] for s in series]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows])


def _matches(series: DicomSeries, choice: str) -> bool:
    choice = choice.strip()
    return choice in (series.uid, series.number) or (bool(series.description) and
                                                     series.description.lower() == choice.lower())


def select_series(series: Sequence[DicomSeries], choice: str | None = None, modality: str = "") -> DicomSeries:
    """The series to segment: the one ``choice`` names (SeriesInstanceUID, SeriesNumber or SeriesDescription),
    else the largest axial volume of ``modality`` (CT, MR; any modality when none matches), said in a log line.

    Localisers, secondary captures and single images are never chosen; a choice naming one is a one-line error.
    """
    folder = series[0].folder
    if choice:
        picked = [s for s in series if _matches(s, choice)]
        if not picked:
            raise SegvolError(f"{folder}: no series matches --series {choice!r}; it holds "
                              f"{'; '.join(s.label() for s in series)}")
        if len(picked) > 1:
            raise SegvolError(f"{folder}: {len(picked)} series match --series {choice!r}; name one by its "
                              f"SeriesInstanceUID ({', '.join(s.uid or '?' for s in picked)})")
        if picked[0].kind != "volume":
            raise SegvolError(f"{folder}: {picked[0].label()} is a {picked[0].kind}, not an image volume")
        return picked[0]
    volumes = [s for s in series if s.kind == "volume"]
    if not volumes:
        raise SegvolError(f"{folder}: holds no image volume, only {'; '.join(s.label() for s in series)}")
    if len(volumes) == 1:
        chosen, why = volumes[0], "the only image volume"
    else:
        same = [s for s in volumes if modality and s.modality == modality.upper()] or volumes
        axial = [s for s in same if s.axial] or same
        chosen = max(axial, key=lambda s: s.voxels)
        why = (f"the largest {'axial ' if chosen.axial else ''}{chosen.modality or ''} volume of "
               f"{len(volumes)}; choose another with --series (segvol infer {folder} --list-series)")
    left = [s for s in series if s is not chosen]
    if left or chosen.skipped:
        log.info("%s: using %s, %s%s", folder, chosen.label(), why,
                 f"; {len(chosen.skipped)} localiser image(s) left out" if chosen.skipped else "")
    return chosen


def open_series(folder: str | Path, choice: str | None = None, modality: str = "") -> DicomSeries:
    """:func:`select_series` over :func:`find_series` of ``folder``."""
    return select_series(find_series(folder), choice, modality)


def _geometry(series: DicomSeries, headers: Sequence[Any]) -> float:
    """One size, one orientation, evenly spaced slices stacked in InstanceNumber order (the reader's order); else a
    one-line error naming the folder. A gantry tilt (slices sheared along their normal) is said in a log line: the
    reader's affine carries the shear and the resampling to the model's grid undoes it. Returns the tilt in
    degrees."""
    folder = series.folder
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in headers}
    if len(sizes) > 1:
        raise SegvolError(f"{folder}: slices of different sizes {sorted(sizes)}")
    cosines = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in headers])
    if np.abs(cosines - cosines[0]).max() > _ORIENTATION_TOLERANCE:
        raise SegvolError(f"{folder}: {series.label()} mixes slice orientations (ImageOrientationPatient differs); "
                          f"one series must have one orientation")
    normal = np.cross(cosines[0][:3], cosines[0][3:])
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in headers])
    along = positions @ normal
    order = np.argsort(along)
    gaps = np.diff(along[order])
    if gaps.size and (gaps.min() <= 1e-3 or gaps.max() - gaps.min() > max(0.01, 0.05 * float(np.median(gaps)))):
        raise SegvolError(f"{folder}: slice positions are not evenly spaced (gaps {gaps.min():.3g} to "
                          f"{gaps.max():.3g} mm): a missing or duplicated slice?")
    numbers = [ds.get("InstanceNumber") for ds in headers]
    if any(n is None or str(n).strip() == "" for n in numbers) or len({int(n) for n in numbers}) < len(numbers):
        raise SegvolError(f"{folder}: InstanceNumber is absent or repeated; the DICOM reader stacks slices in "
                          f"InstanceNumber order, so this series cannot be read safely")
    by_number = along[np.argsort([int(n) for n in numbers])]
    if not (np.all(np.diff(by_number) > 0) or np.all(np.diff(by_number) < 0)):
        raise SegvolError(f"{folder}: InstanceNumber does not follow the slice positions; the DICOM reader stacks "
                          f"slices in InstanceNumber order, so this series cannot be read safely")
    stack = positions[order[-1]] - positions[order[0]]
    if np.linalg.norm(stack) == 0:
        return 0.0
    return float(np.degrees(np.arccos(min(1.0, abs(float(stack @ normal)) / float(np.linalg.norm(stack))))))


def _missing_uids(series: DicomSeries, headers: Sequence[Any]) -> list[str]:
    """What an output referencing the series lacks; SOP UIDs kept in the file meta count as present."""
    problems = []
    for keyword in REFERENCE_UIDS:
        values = {_text(ds, keyword) for ds in headers}
        if "" in values:
            problems.append(f"{keyword} is empty or absent")
        elif len(values) > 1:
            problems.append(f"{keyword} differs between slices ({len(values)} values)")
    for keyword, meta in (("SOPInstanceUID", "MediaStorageSOPInstanceUID"), ("SOPClassUID", "MediaStorageSOPClassUID")):
        if any(not (_text(ds, keyword) or str(getattr(ds.file_meta, meta, "") or "")) for ds in headers):
            problems.append(f"{keyword} is empty in the dataset and its file meta")
    uids = [_text(ds, "SOPInstanceUID") or str(getattr(ds.file_meta, "MediaStorageSOPInstanceUID", ""))
            for ds in headers]
    if len(set(uids)) < len(uids):
        problems.append("two slices share one SOPInstanceUID")
    return problems


_PASSED: dict[tuple[Any, ...], bool] = {}  # series files as last checked -> whether ``references`` was checked too


def _as_checked(series: DicomSeries) -> tuple[Any, ...]:
    """The series' files as they are now (path, size, modification time): a file changed since is checked again."""
    return tuple((str(p), st.st_size, st.st_mtime_ns) for p in series.files for st in [p.stat()])


def validate_series(series: DicomSeries, *, references: bool = False, outputs: str = "") -> None:
    """Check a series before any work: every file readable with its whole pixel data (the reader's own check),
    one size and orientation, evenly spaced slices in InstanceNumber order, and with ``references`` (a DICOM-SEG
    or RTSTRUCT is asked for: ``outputs`` names them) no gantry tilt and the UIDs such an object must copy.
    One-line errors naming the folder. A series that passed is not read again while its files are unchanged (batch
    inference checks every input up front, then reads each)."""
    try:
        seen = _as_checked(series)
    except OSError as exc:
        raise SegvolError(f"{series.folder}: a file of the series cannot be read ({first_line(exc)})") from exc
    if seen in _PASSED and (_PASSED[seen] or not references):
        return
    headers = check_files(series.folder, series.files)
    tilt = _geometry(series, headers)
    if tilt > _TILT_DEGREES and references:
        raise SegvolError(f"{series.folder}: gantry tilt of {tilt:.1f} degrees: {outputs or 'a DICOM output'} over "
                          f"sheared slices is not decoded by common readers (dcmqi); resample the series onto an "
                          f"untilted grid first, or write NIfTI outputs only")
    if tilt > _TILT_DEGREES:
        log.debug("%s: gantry tilt of %.1f degrees; the reader's affine carries the shear and the model's "
                  "resampling takes it into account (the mask lies on the sheared grid)", series.folder, tilt)
    if references:
        problems = _missing_uids(series, headers)
        if problems:
            raise SegvolError(f"{series.folder}: {outputs or 'a DICOM output'} must reference the source series, "
                              f"but its {problems[0]}{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}")
    if len(_PASSED) >= 256:
        _PASSED.clear()
    _PASSED[seen] = references or _PASSED.get(seen, False)


# Type 2 attributes of the Patient and General Study modules: present in a valid image, possibly empty; anonymised
# series often drop them, and the derived objects copy them from their source
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")


def source_datasets(series: DicomSeries) -> list[Any]:
    """The series' headers (no pixel data), in file order, repaired in memory (the files are not touched): SOP
    Class and Instance UIDs blanked in a dataset are taken from its file meta (said in a log line), and absent
    type 2 patient and study attributes are filled in empty."""
    sources = [_header(p) for p in series.files]
    repaired = 0
    for ds in sources:
        for keyword, meta in (("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
                              ("SOPClassUID", "MediaStorageSOPClassUID")):
            if not _text(ds, keyword) and str(ds.file_meta.get(meta, "") or ""):
                setattr(ds, keyword, ds.file_meta[meta].value)
                repaired += 1
        for keyword in _TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, "")
    if repaired:
        log.info("%s: %d empty SOP Class/Instance UID(s) taken from the files' meta headers "
                 "(MediaStorageSOPClassUID/MediaStorageSOPInstanceUID)", series.folder, repaired)
    return sources


@contextlib.contextmanager
def staged_folder(series: DicomSeries) -> Iterator[Path]:
    """A folder that holds exactly the series' files: the series' own folder when it is all of it, else a temporary
    folder of links to its files (removed afterwards), so that readers of whole folders see one series."""
    if series.whole_folder:
        yield series.folder
        return
    with tempfile.TemporaryDirectory(prefix="segvol-series-") as tmp:
        for path in series.files:
            target = Path(tmp) / path.name
            try:
                os.symlink(path.resolve(), target)
            except OSError:  # no symlinks here (some Windows setups): a copy
                import shutil

                shutil.copy2(path, target)
        yield Path(tmp)
