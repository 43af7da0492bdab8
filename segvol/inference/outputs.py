"""What ``segvol infer`` writes for each scan: output writers in a registry keyed by format name.

After MONAI's ``monai/data/image_writer.py`` (``SUPPORTED_WRITERS``, ``register_writer``, ``resolve_writer``): each
format is one :class:`Writer` in :data:`WRITERS`, chosen by name with ``--output seg,overlay,stl`` (API:
``outputs=("seg", "overlay", "stl")``). File names follow the scan's (``scan.nii.gz``, or a DICOM folder
``scan/``); with ``-o mask.nii.gz`` the other files take ``mask`` in place of ``scan_seg``:

=============  =============================  ==============================================================
name           file                           content
=============  =============================  ==============================================================
``seg``        ``scan_seg.nii.gz``            the uint8 label map on the input's grid (the default)
``prob``       ``scan_prob.nii.gz``           float32 foreground probability on the input's grid (one volume
                                              per class or region in the model's order, e.g. TC, WT, ET; 4D
                                              when several), before post-processing
``overlay``    ``scan_overlay.png``           axial, coronal and sagittal views through the mask's largest
                                              extent, scan in grey, mask in red
``gif``        ``scan_seg.gif``               a sweep through the axial slices that hold the mask
``stl``        ``scan_seg.stl``               surface per label value in scanner mm (``_label<v>`` appended
``ply``        ``scan_seg.ply``               when there are several)
``dicom-seg``  ``scan_seg.dcm``               DICOM Segmentation object referencing the source series (DICOM
                                              inputs only; :mod:`segvol.inference.dicom_seg`, needs highdicom)
``rtstruct``   ``scan_rtstruct.dcm``          RT Structure Set of the same segments (DICOM inputs only;
                                              :mod:`segvol.inference.rtstruct`, needs rt-utils)
``tree``       ``scan_seg_tree/``             artery tree of a vessel mask (``segvol tree``: tree.json,
                                              segments.csv, centrelines.vtk, pictures; :mod:`segvol.tree`)
=============  =============================  ==============================================================

Adding a format is one function and one :func:`register_writer` call::

    def write_json(target: Path, out: OutputContext) -> Path:
        ...  # out.labels (uint8 mask on the input grid), out.reference.affine, out.found, out.task
        return target

    register_writer(Writer("json", "{stem}.json", write_json, help="..."))

A writer whose output is a folder of files says ``folder=True`` (and writes it with :func:`segvol.utils.atomic_dir`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segvol.labels import TaskSpec
from segvol.errors import SegvolError

__all__ = ["Writer", "OutputContext", "OutputPlan", "WRITERS", "register_writer", "resolve_writers",
           "parse_outputs", "mask_path_for", "DEFAULT_OUTPUTS", "REFERENCING"]

log = logging.getLogger(__name__)
DEFAULT_OUTPUTS = ("seg",)
# outputs that reference their DICOM source series: its UIDs are checked before any work
REFERENCING = frozenset({"dicom-seg", "rtstruct"})


@dataclass
class OutputContext:
    """Everything a writer may use for one prediction.

    Attributes:
        labels: the (H, W, D) uint8 label map on the input's grid.
        reference: the input's grid: a nibabel image (its header is kept) or a DICOM series'
            :class:`~segvol.io.grid.Grid`.
        source: the input as given: a NIfTI path, a list of sequence paths, a DICOM series folder; None in memory.
        found: what :func:`segvol.inference.predictor.predict_volume` filled in for the writers' ``needs``:
            ``image`` (the scan's first channel on its grid), ``prob`` (C', H, W, D float32 probabilities).
        task: the model's task (``class_names``, ``activation``, ``paint``, ``modalities``).
        overwrite: whether existing files may be replaced.
    """

    labels: np.ndarray
    reference: Any
    source: Any = None
    found: dict[str, Any] = field(default_factory=dict)
    task: TaskSpec | None = None
    overwrite: bool = False

    @property
    def affine(self) -> np.ndarray:
        return np.asarray(self.reference.affine, dtype=np.float64)


@dataclass(frozen=True)
class Writer:
    """One output format.

    Attributes:
        name: what ``--output`` calls it.
        filename: the file's name, from ``{stem}`` (``scan_seg``, or the ``-o`` file's stem) and ``{base}``
            (``scan``); ignored for ``seg``, which writes the mask path itself.
        write: ``write(target, context)`` -> the path(s) written (None when there was nothing to write).
        needs: requests for the predictor (``"image"``, ``"prob"``).
        help: one line for ``segvol infer --help``.
        accepts: ``accepts(source)`` -> why this format cannot be made for that input, or None when it can.
        folder: the output is a folder of files (``filename`` names the folder; the writer replaces it whole).
    """

    name: str
    filename: str
    write: Callable[[Path, OutputContext], Any]
    needs: tuple[str, ...] = ()
    help: str = ""
    accepts: Callable[[Any], str | None] | None = None
    folder: bool = False


WRITERS: dict[str, Writer] = {}


def register_writer(writer: Writer, *, replace: bool = False) -> Writer:
    """Make ``writer`` available to ``--output`` under its name (a second writer of one name needs ``replace``)."""
    if writer.name in WRITERS and not replace:
        raise ValueError(f"an output writer named {writer.name!r} is registered already")
    if "," in writer.name or not writer.name:
        raise ValueError(f"output writer name {writer.name!r}: a non-empty name without commas")
    WRITERS[writer.name] = writer
    return writer


def parse_outputs(outputs: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"seg,overlay"`` or ``["seg", "overlay,stl"]`` -> ``("seg", "overlay", "stl")`` (order kept, no repeats)."""
    if outputs is None:
        return DEFAULT_OUTPUTS
    items = [outputs] if isinstance(outputs, str) else list(outputs)
    names = [n.strip().lower() for item in items for n in str(item).split(",") if n.strip()]
    return tuple(dict.fromkeys(names))


def resolve_writers(names: Sequence[str]) -> tuple[Writer, ...]:
    """The writers for ``names``; an unknown name is a one-line error listing the known ones."""
    unknown = [n for n in names if n not in WRITERS]
    if unknown:
        raise SegvolError(f"--output {','.join(unknown)}: unknown output format(s); known: {', '.join(WRITERS)}")
    if not names:
        raise SegvolError("--output: name at least one output format (e.g. seg)")
    return tuple(WRITERS[n] for n in names)


def mask_path_for(image: str | Path, out_dir: str | Path | None = None) -> Path:
    """The mask file of a scan: ``scan.nii.gz`` -> ``scan_seg.nii.gz`` beside it (or in ``out_dir``); a folder
    (a case folder, a DICOM series) -> ``<folder>_seg.nii.gz`` beside it (inside, it would clash with its files)."""
    from segvol.io.nifti import strip_nifti_suffix

    image = Path(image)
    folder = Path(out_dir) if out_dir else image.parent
    if image.is_dir():
        return folder / f"{image.name}_seg.nii.gz"
    return folder / f"{strip_nifti_suffix(image.name)}_seg.nii.gz"


def _stem_base(mask_path: Path) -> tuple[str, str]:
    """(``scan_seg``, ``scan``) for ``scan_seg.nii.gz``; (``mask``, ``mask``) for ``mask.nii.gz``."""
    from segvol.io.nifti import strip_nifti_suffix

    stem = strip_nifti_suffix(mask_path.name)
    return stem, stem[: -len("_seg")] if stem.endswith("_seg") and len(stem) > 4 else stem


@dataclass(frozen=True)
class OutputPlan:
    """The writers chosen for a run, and the files they will write beside each mask path."""

    writers: tuple[Writer, ...] = ()

    @classmethod
    def of(cls, outputs: str | Iterable[str] | None) -> OutputPlan:
        return cls(resolve_writers(parse_outputs(outputs)))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(w.name for w in self.writers)

    @property
    def folders(self) -> frozenset[str]:
        """Names of the writers whose output is a folder."""
        return frozenset(w.name for w in self.writers if w.folder)

    def wanted(self) -> dict[str, None]:
        """The requests :func:`segvol.inference.predictor.predict_volume` fills (its ``extras``)."""
        return {need: None for w in self.writers for need in w.needs}

    def targets(self, mask_path: str | Path) -> dict[str, Path]:
        """Writer name -> the file it writes for the mask path ``mask_path``."""
        mask_path = Path(mask_path)
        stem, base = _stem_base(mask_path)
        return {w.name: mask_path if w.name == "seg" else mask_path.parent / w.filename.format(stem=stem, base=base)
                for w in self.writers}

    def refusal(self, source: Any) -> str | None:
        """Why one of the writers cannot serve the input ``source``, or None."""
        for w in self.writers:
            reason = w.accepts(source) if w.accepts else None
            if reason:
                return f"--output {w.name}: {reason}"
        return None

    def write(self, targets: dict[str, Path], out: OutputContext) -> dict[str, Path]:
        """Run every writer; returns writer name -> the (first) file it wrote."""
        written: dict[str, Path] = {}
        for w in self.writers:
            result = w.write(targets[w.name], out)
            first = result[0] if isinstance(result, (list, tuple)) and result else result
            if first:
                written[w.name] = Path(first)
        return written


# ------------------------------------------------------------------------------------------------ the writers
def _write_seg(target: Path, out: OutputContext) -> Path:
    from segvol.io.nifti import save_like

    save_like(out.labels, out.reference, target)
    return target


def _write_prob(target: Path, out: OutputContext) -> Path:
    from segvol.io.nifti import save_like

    prob = out.found["prob"]
    prob = prob[0] if prob.shape[0] == 1 else np.moveaxis(prob, 0, -1)  # NIfTI: channels last
    save_like(prob, out.reference, target, dtype=np.float32)
    return target


def _write_overlay(target: Path, out: OutputContext) -> Path:
    from segvol.viz.overlays import save_overlay

    mask = out.labels != 0
    title = f"{target.name}: {int(mask.sum())} voxels segmented" if mask.any() else f"{target.name}: nothing segmented"
    return save_overlay(target, out.found.get("image"), None, mask, out.affine, title=title)


def _write_gif(target: Path, out: OutputContext) -> Path:
    from segvol.viz.overlays import save_gif

    return save_gif(target, out.found.get("image"), None, out.labels != 0, out.affine)


def _write_mesh(target: Path, out: OutputContext) -> list[Path]:
    from segvol.mesh import write_label_meshes

    if not out.labels.any():
        log.warning("%s: the mask is empty; no surface written", target)
        return []
    meshes = write_label_meshes(out.labels, out.affine, target, overwrite=out.overwrite, source=str(target))
    return [path for path, _ in meshes]


def _write_dicom_seg(target: Path, out: OutputContext) -> Path:
    from segvol.inference.dicom_seg import write_dicom_seg

    return write_dicom_seg(target, out)


def _write_rtstruct(target: Path, out: OutputContext) -> Path | None:
    from segvol.inference.rtstruct import write_rtstruct

    return write_rtstruct(target, out)


def _dicom_only(source: Any) -> str | None:
    from segvol.io.dicom import is_series_folder
    from segvol.io.dicom_series import DicomSeries

    if isinstance(source, DicomSeries) or isinstance(source, (str, Path)) and is_series_folder(source):
        return None
    return f"{source}: a DICOM output references a DICOM series; this input is not one"


for _writer in (
    Writer("seg", "{stem}.nii.gz", _write_seg, help="the label map, <scan>_seg.nii.gz (uint8, the input's grid)"),
    Writer("prob", "{base}_prob.nii.gz", _write_prob, ("prob",), "probability map <scan>_prob.nii.gz (float32)"),
    Writer("overlay", "{base}_overlay.png", _write_overlay, ("image",), "three-view overlay <scan>_overlay.png"),
    Writer("gif", "{stem}.gif", _write_gif, ("image",), "axial slice sweep <scan>_seg.gif"),
    Writer("stl", "{stem}.stl", _write_mesh, help="surface mesh in scanner mm, <scan>_seg.stl"),
    Writer("ply", "{stem}.ply", _write_mesh, help="surface mesh in scanner mm, <scan>_seg.ply"),
    Writer("dicom-seg", "{stem}.dcm", _write_dicom_seg, help="DICOM Segmentation <scan>_seg.dcm for a DICOM series "
           "input (opens in OHIF and 3D Slicer; needs the 'dicom' extra)", accepts=_dicom_only),
    Writer("rtstruct", "{base}_rtstruct.dcm", _write_rtstruct, help="RT Structure Set <scan>_rtstruct.dcm for a "
           "DICOM series input (radiotherapy planning; needs the 'rtstruct' extra)", accepts=_dicom_only),
):
    register_writer(_writer)


# ------------------------------------------------------------------------- the artery tree (segvol tree), a folder
def _write_tree(target: Path, out: OutputContext) -> Path | None:
    from segvol.tree.infer_output import tree_writer_output

    return tree_writer_output(target, out)


register_writer(Writer("tree", "{stem}_tree", _write_tree, help="artery tree of a vessel mask, folder "
                       "<scan>_seg_tree/ (tree.json, segments.csv, centrelines.vtk, pictures; see segvol tree)",
                       folder=True))
