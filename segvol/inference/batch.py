"""Batch inference: which scans a command line names, where their outputs go, and the loop over them.

:func:`expand_inputs` turns globs and folders into scans (a DICOM series or a case folder of the model's dataset is
one scan), :func:`output_paths` and :func:`check_targets` name and vet every output before any work, and
:func:`infer_batch` runs :func:`segvol.inference.predictor.infer_file` over them, shared out across ranks under
``torchrun``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segvol.errors import SegvolError

if TYPE_CHECKING:
    from segvol.data.adapter import DatasetAdapter
    from segvol.inference.predictor import Prediction

__all__ = ["expand_inputs", "check_targets", "output_paths", "default_output", "as_array_input", "infer_batch"]

log = logging.getLogger(__name__)


def default_output(image: Any, out_dir: str | Path | None = None) -> Path | None:
    """``scan.nii.gz`` -> ``scan_seg.nii.gz`` beside the input (or in ``out_dir``); a folder (case folder, DICOM
    series) -> ``<folder>_seg.nii.gz`` beside it; the sequences of one scan are named after the first; an in-memory
    scan -> None (nothing is written)."""
    from segvol.io.nifti import is_in_memory
    from segvol.inference.outputs import mask_path_for

    from segvol.io.dicom_series import DicomSeries

    if as_array_input(image) is not None or is_in_memory(image):
        return None
    if isinstance(image, DicomSeries):
        return mask_path_for(image.folder, out_dir)
    return mask_path_for(image[0] if isinstance(image, (list, tuple)) else image, out_dir)


def as_array_input(item: Any) -> tuple[Any, Any] | None:
    """``(array, affine)`` when ``item`` is an in-memory scan given as a numpy array and its 4x4 affine."""
    if isinstance(item, tuple) and len(item) == 2 and type(item[0]).__module__ == "numpy" \
            and hasattr(item[0], "ndim"):
        return item
    return None


def _expand_folder(folder: Path, adapter: DatasetAdapter, modalities: Sequence[str], is_scan: Any,
                   series: str | None = None) -> list[Any]:
    from segvol.io.dicom import is_series_folder
    from segvol.io.dicom_series import open_series

    if is_series_folder(folder):  # one DICOM series: the one named by ``series``, else the model's kind of volume
        return [open_series(folder, series, adapter.modality)]
    if adapter.is_case_folder(folder, modalities):
        return [folder]  # one case: read in the model's channels by adapter.case_input
    scans = sorted(p for p in folder.iterdir() if (p.is_file() and is_scan(p)) or (  # scans, series, cases
        p.is_dir() and not p.name.startswith(".") and (is_series_folder(p) or adapter.is_case_folder(p, modalities))))
    if not scans and len(modalities) > 1:
        return [folder]  # a case folder lacking sequences: adapter.case_input names what is missing
    if not scans:
        raise SegvolError(f"{folder}: folder holds no .nii/.nii.gz scans and no DICOM series")
    return [open_series(p, series, adapter.modality) if p.is_dir() and is_series_folder(p) else p for p in scans]


def expand_inputs(inputs: list[Any], modalities: Sequence[str] = (), adapter: DatasetAdapter | None = None,
                  series: str | None = None) -> list[Any]:
    """Globs -> matching files; a folder -> its scans, unless it is one scan itself: a DICOM series, or a case of
    the model's dataset (``adapter``, default the config's default dataset; ``modalities``: the model's channels,
    e.g. ``("flair",)``; see :meth:`~segvol.data.adapter.DatasetAdapter.is_case_folder`).

    A folder is a DICOM series when it holds DICOM files; otherwise each of its scans and each of its series (or
    case) subfolders is one input; a DICOM folder becomes one :class:`~segvol.io.dicom_series.DicomSeries`: the
    series ``series`` names (SeriesInstanceUID, number or description), else the largest axial volume of the
    model's modality (localisers and secondary captures are never inputs, two series never stacked). Masks
    segvol wrote earlier (``*_seg.nii.gz``) and ImageCAS labels (``*.label.nii.gz``) are not inputs. In-memory
    scans (nibabel images, ``(array, affine)``) pass through.
    """
    import glob

    from segvol.data.registry import DEFAULT_DATASET, get_adapter
    from segvol.io.dicom import is_series_folder
    from segvol.io.dicom_series import open_series
    from segvol.io.nifti import NIFTI_SUFFIXES, is_in_memory

    adapter = adapter or get_adapter(DEFAULT_DATASET)

    def is_scan(p: Path) -> bool:
        name = p.name.lower()
        return name.endswith(NIFTI_SUFFIXES) and "_seg." not in name and ".label." not in name

    expanded: list[Any] = []
    for item in inputs:
        if isinstance(item, (list, tuple)) or is_in_memory(item):
            expanded.append(item)
            continue
        text = str(item)
        if any(c in text for c in "*?[") and not Path(text).exists():
            matches = sorted(Path(m) for m in glob.glob(text))
            if not matches:
                raise SegvolError(f"{text}: no files match this pattern")
            expanded += [open_series(m, series, adapter.modality) if m.is_dir() and is_series_folder(m) else m
                         for m in matches if m.is_dir() or is_scan(m)]
        elif Path(text).is_dir():
            expanded += _expand_folder(Path(text), adapter, modalities, is_scan, series)
        else:
            expanded.append(Path(text))
    return expanded


def _input_files(item: Any) -> list[Path]:
    """The files and folders an input reads (for the never-replace-an-input check)."""
    from segvol.io.dicom_series import DicomSeries
    from segvol.io.nifti import is_in_memory

    if as_array_input(item) is not None or is_in_memory(item):
        return []
    if isinstance(item, DicomSeries):
        return [item.folder.resolve()]
    items = list(item) if isinstance(item, (list, tuple)) else [item]
    return [Path(p).resolve() for p in items]


def check_targets(inputs: list[Any], targets: list[dict[str, Path]], overwrite: bool,
                  folders: frozenset[str] = frozenset()) -> None:
    """Refuse, before any work, a batch whose outputs would collide or replace what must stay.

    Two inputs naming one output (``a/scan.nii.gz`` and ``b/scan.nii.gz`` with one ``--out-dir``; ``scan.nii``
    beside ``scan.nii.gz``; a DICOM folder ``case7/`` beside ``case7.nii.gz``), an output that is an input or lies
    inside an input folder (``--overwrite`` or not), an output that is a folder, and an existing output without
    ``overwrite`` are one-line errors naming the files. ``targets`` maps output names to paths per input;
    the outputs named in ``folders`` are folders by design.
    """
    from segvol.utils import check_writable_target

    owner: dict[Path, Any] = {}
    protected = {p: item for item in inputs for p in _input_files(item)}
    for item, files in zip(inputs, targets):
        for name, target in files.items():
            key = target.resolve()
            if key in owner:
                raise SegvolError(f"{_input_name(item)} and {_input_name(owner[key])} would both write {target}; "
                                  f"give them different --out-dir folders or names")
            owner[key] = item
            if key in protected:
                raise SegvolError(f"{target}: is an input ({_input_name(protected[key])}); an output never "
                                  f"replaces an input")
            inside = next((p for p in protected if p.is_dir() and p in key.parents), None)
            if inside is not None:
                raise SegvolError(f"{target}: would be written inside the input folder {inside}; write it elsewhere")
            if target.is_dir() and name not in folders:
                raise SegvolError(f"{target}: is a folder; the output must be a file name")
            check_writable_target(target, overwrite)


def validate_dicom_inputs(inputs: list[Any], names: Sequence[str]) -> None:
    """Check every DICOM series input before any work for what the outputs ``names`` need: the geometry always
    (readable slices, evenly spaced, one orientation, no gantry tilt), and for outputs that reference the series
    (DICOM-SEG, RTSTRUCT) its Study, Series and Frame of Reference UIDs; a one-line error naming the folder."""
    from segvol.inference.outputs import REFERENCING
    from segvol.io.dicom_series import DicomSeries, validate_series

    referencing = [n for n in names if n in REFERENCING]
    for item in inputs:
        if isinstance(item, DicomSeries):
            validate_series(item, references=bool(referencing), outputs=f"--output {','.join(referencing)}")


def _input_name(item: Any) -> str:
    if isinstance(item, (list, tuple)) and as_array_input(item) is None:
        return str(item[0]) if item else "?"
    return str(item) if as_array_input(item) is None else "<in-memory array>"


def output_paths(inputs: list[Any], out: str | Path | None, out_dir: str | Path | None) -> list[Path | None]:
    if out is not None:
        if len(inputs) > 1:
            raise SegvolError("-o/--out names one file; use --out-dir for several inputs")
        if Path(out).is_dir():
            raise SegvolError(f"-o {out}: is a folder; -o names the mask file (use --out-dir for a folder)")
        return [Path(out)]
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise SegvolError(f"--out-dir {out_dir}: is a file, not a folder")
    if out_dir is not None and any(default_output(p) is None for p in inputs):
        raise SegvolError("--out-dir: in-memory scans have no file name to write under; give out= for one scan")
    return [default_output(p, out_dir) for p in inputs]


def infer_batch(inputs: list[Any], model: str | Path, *, out: str | Path | None = None,
                out_dir: str | Path | None = None, device: str = "auto", sw_batch_size: int | None = None,
                overlap: float | str | None = None, overwrite: bool = False, progress: bool = False,
                tta: bool = False, amp: bool = False, outputs: str | Sequence[str] | None = None,
                series: str | None = None, store: bool = False, locate: bool = True) -> list[Prediction]:
    """Segment each input scan and write its outputs on the scan's own grid. Returns one Prediction per input.

    An input is a scan file, a glob, a folder of scans, a DICOM series folder (or a folder of them), a list of files
    (the sequences of one multi-channel scan), a case folder of the model's dataset (read in the model's sequences,
    however many), or a scan in memory: a ``nibabel.Nifti1Image`` (or a list of them), or ``(array, affine)``.
    ``Prediction.mask`` is the mask in the input's kind: the written path, a ``Nifti1Image``, or a uint8 array; in
    memory nothing is written unless ``out`` is given. Masks of folders go beside them as ``<folder>_seg.nii.gz``.

    ``outputs`` names the output formats (``"seg,overlay,stl"``; see :mod:`segvol.inference.outputs`; default
    ``seg``). Outputs that would collide, replace an input or (without ``overwrite``) an existing file are refused
    before any work. ``tta`` averages the predictions over three axis flips; ``amp`` runs PyTorch models in bf16 on
    CUDA. ``locate=False`` runs a cascade model's fine stage over the whole scan (docs/cascade.md), for checking.

    DICOM: ``series`` picks the series of a DICOM folder (SeriesInstanceUID, number or description; default the
    largest axial volume of the model's modality); every series is checked for what the outputs need before any
    work. An input may be a DICOMweb URL naming a study and series (``http://host/dicom-web/studies/<uid>/series/
    <uid>``): the series is retrieved into a temporary folder, the outputs go to ``out_dir`` (default the current
    folder) under the series UID, and with ``store`` the DICOM outputs are stored back to that server.
    """
    from segvol.data.registry import get_adapter
    from segvol.distributed import gather_shards, init_distributed, shutdown
    from segvol.inference.backends import load_model, require_device
    from segvol.inference.outputs import OutputPlan
    from segvol.utils import pick_device

    if not inputs:
        raise SegvolError("no input scans given")
    plan = OutputPlan.of(outputs)
    info, torch_device = init_distributed(pick_device(device))  # under torchrun: each rank takes a share
    loaded = load_model(model, torch_device)
    if device != "auto":
        require_device(loaded, torch_device)
    log.info("model: %s (%s on %s)", loaded.path, loaded.backend, loaded.provider or loaded.device)
    if loaded.locator is not None and not locate:
        log.info("--no-locate: the fine stage segments every scan whole")
        loaded.locator = None
    if amp and not (loaded.backend == "pytorch" and loaded.device.type == "cuda"):
        log.warning("--amp applies to PyTorch models on CUDA; running in float32")
    modalities, adapter = loaded.task.modalities, get_adapter(loaded.dataset)
    with contextlib.ExitStack() as stack:
        inputs, remote, out_dir = _fetch_remote(list(inputs), stack, out_dir, store, plan.names)
        inputs = expand_inputs(inputs, modalities, adapter, series)
        masks = output_paths(inputs, out, out_dir)
        for item, mask in zip(inputs, masks):
            reason = plan.refusal(item) if mask is not None else None
            if reason:
                raise SegvolError(reason)
        validate_dicom_inputs(inputs, plan.names)
        check_targets(inputs, [plan.targets(m) if m is not None else {} for m in masks], overwrite, plan.folders)
        done = _run(loaded, inputs, masks, plan, adapter, info, sw_batch_size=sw_batch_size, overlap=overlap,
                       progress=progress, tta=tta, amp=amp, overwrite=overwrite)
        _store_remote(remote, done)
    results = gather_shards([pred for _, pred in done], info)  # rank 0: every rank's, in input order; other ranks: none
    shutdown(info)
    return results


def _run(loaded: Any, inputs: list[Any], masks: list[Path | None], plan: Any, adapter: DatasetAdapter, info: Any,
         *, sw_batch_size: int | None, overlap: float | str | None, progress: bool, tta: bool, amp: bool,
         overwrite: bool) -> list[tuple[Any, Prediction]]:
    """The loop over this rank's share of the inputs (every output written once, by the rank that computes it):
    ``(input, Prediction)`` pairs."""
    from tqdm.auto import tqdm

    from segvol.distributed import barrier, shard
    from segvol.inference.predictor import infer_file
    from segvol.io.dicom_series import DicomSeries
    from segvol.io.nifti import as_image
    from segvol.utils import torch_flags

    modalities = loaded.task.modalities
    barrier(info)  # every rank has checked every target before any rank writes one
    results: list[tuple[Any, Prediction]] = []
    mine = shard(list(zip(inputs, masks)), info)  # every output written once, by the rank that computes it
    bar = tqdm(mine, desc="infer", unit="scan", disable=not progress or len(inputs) < 2 or not info.is_main)
    with torch_flags(benchmark=True):  # every window has the ROI's shape; the caller's flags come back after
        for item, mask in bar:
            array_input = as_array_input(item)
            image = as_image(*array_input) if array_input is not None else \
                item if isinstance(item, DicomSeries) else adapter.case_input(item, modalities)
            pred = infer_file(loaded, image, mask, sw_batch_size=sw_batch_size, overlap=overlap,
                              progress=progress and len(inputs) == 1, tta=tta, amp=amp, outputs=plan,
                              overwrite=overwrite)
            if array_input is not None:
                pred.mask = pred.labels
            results.append((item, pred))
    return results


def _fetch_remote(inputs: list[Any], stack: contextlib.ExitStack, out_dir: str | Path | None, store: bool,
                  names: Sequence[str]) -> tuple[list[Any], dict[Path, Any], str | Path | None]:
    """DICOMweb URLs among ``inputs`` -> series folders retrieved into a temporary folder (removed when ``stack``
    closes); returns the inputs, ``{folder: its DicomwebSeries}`` and the output folder (the current folder when a
    URL is given and ``out_dir`` is not). ``store`` without a URL input, or without a DICOM output, is an error."""
    import tempfile

    from segvol.inference.outputs import REFERENCING
    from segvol.io.dicomweb import is_dicomweb_url, parse_series_url, retrieve_series

    urls = [i for i in inputs if isinstance(i, str) and is_dicomweb_url(i)]
    if store and not urls:
        raise SegvolError("--store: stores outputs back to a DICOMweb server; give the input as a DICOMweb URL")
    if store and not any(n in REFERENCING for n in names):
        raise SegvolError(f"--store: stores DICOM outputs ({', '.join(sorted(REFERENCING))}); add one to --output")
    if not urls:
        return inputs, {}, out_dir
    remotes = [parse_series_url(u, store=store) for u in urls]  # every URL checked before any download
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="segvol-dicomweb-")))
    fetched: dict[Path, Any] = {}
    out: list[Any] = []
    for item in inputs:
        if isinstance(item, str) and is_dicomweb_url(item):
            remote = remotes[urls.index(item)]
            folder = retrieve_series(remote, tmp / remote.series_uid)
            fetched[folder] = remote
            out.append(folder)
        else:
            out.append(item)
    return out, fetched, out_dir if out_dir is not None else Path.cwd()


def _store_remote(remote: dict[Path, Any], done: list[tuple[Any, Prediction]]) -> None:
    """Store the DICOM outputs (DICOM-SEG, RTSTRUCT) of series retrieved over DICOMweb back to their server."""
    from segvol.inference.outputs import REFERENCING
    from segvol.io.dicom_series import DicomSeries
    from segvol.io.dicomweb import store_instances

    for item, pred in done:
        folder = item.folder if isinstance(item, DicomSeries) else None
        if folder in remote and remote[folder].store:
            files = [path for name, path in pred.files.items() if name in REFERENCING]
            store_instances(remote[folder], files)
