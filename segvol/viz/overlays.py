"""Overlays of reference and prediction on the scan: three orthogonal views and a GIF sweeping the slices.

Colours: scan in grey, reference only green, prediction only red, both (overlap) yellow, blended over the scan
with ``alpha``. Pictures zoom to the masks with some surroundings (:func:`focus_box`). Volumes are shown in the
closest canonical (RAS+) orientation with the origin at the lower left:
x (towards the patient's right) runs left to right on screen, anterior is up in axial views and superior is up in
coronal and sagittal views. Pixels keep the physical aspect ratio (voxel spacing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segvol.io.masks import spacing_of
from segvol.utils import atomic_path

__all__ = ["overlay_rgb", "to_display", "best_slices", "slice_of", "grey_window", "focus_box", "save_overlay",
           "save_gif", "frame_count", "COLOURS", "VIEWS"]

COLOURS = {"reference": (0.0, 1.0, 0.0), "prediction": (1.0, 0.0, 0.0), "overlap": (1.0, 1.0, 0.0)}
VIEWS = (("axial", 2), ("coronal", 1), ("sagittal", 0))


def overlay_rgb(image: np.ndarray, ref: np.ndarray, pred: np.ndarray, window: tuple[float, float] | None = None,
                alpha: float = 0.55) -> np.ndarray:
    """(H, W) uint8 RGB (H, W, 3): grey scan with green/red/yellow blended where the masks are."""
    lo, hi = window if window is not None else (float(np.min(image)), float(np.max(image)))
    grey = np.clip((np.asarray(image, np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    ref, pred = np.asarray(ref, bool), np.asarray(pred, bool)
    for mask, colour in ((ref & ~pred, COLOURS["reference"]), (pred & ~ref, COLOURS["prediction"]),
                         (ref & pred, COLOURS["overlap"])):
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(colour, np.float32)
    return (rgb * 255).round().astype(np.uint8)


def to_display(affine: np.ndarray, *arrays: np.ndarray) -> tuple[list[np.ndarray], tuple[float, float, float]]:
    """Reorient arrays to the closest canonical (RAS) axes; returns them and the spacing in that order."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    out = [nib.orientations.apply_orientation(a, ornt) for a in arrays]
    zooms = spacing_of(affine)
    spacing = tuple(zooms[int(i)] for i in np.argsort(ornt[:, 0]))
    return out, spacing  # type: ignore[return-value]


def best_slices(ref: np.ndarray, pred: np.ndarray) -> dict[int, int]:
    """Per axis, the slice with the most reference foreground (prediction if the reference is empty, else the
    middle)."""
    source = ref if ref.any() else pred
    out = {}
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        counts = source.sum(axis=others)
        out[axis] = int(np.argmax(counts)) if counts.any() else ref.shape[axis] // 2
    return out


def slice_of(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """One slice by basic indexing: a view, where ``np.take`` would copy the whole (possibly reoriented, negatively
    strided) volume for every slice."""
    return volume[(slice(None),) * axis + (index,)]


def _plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """One slice with rows = the later axis (shown with origin="lower")."""
    return slice_of(volume, axis, index).T


def grey_window(image: np.ndarray, percentiles: tuple[float, float] = (1, 99.5), sample: int = 2_000_000
                ) -> tuple[float, float]:
    """Grey-level window: two percentiles of the scan, from a regular subsample of at most ~``sample`` voxels
    (every voxel of smaller scans)."""
    if not image.size:
        return 0.0, 1.0
    step = max(1, int(np.ceil((image.size / sample) ** (1 / image.ndim))))
    lo, hi = np.percentile(image[(slice(None, None, step),) * image.ndim], list(percentiles))
    return float(lo), float(hi)


def focus_box(ref: np.ndarray, pred: np.ndarray, spacing: tuple[float, ...], context_mm: float = 25.0
              ) -> tuple[slice, ...]:
    """The region the pictures show: the box around both masks plus ``context_mm`` (and at least a quarter of the
    box) of surroundings on every side, so thin vessels in a whole CT are not a few pixels wide; the whole volume
    when both masks are empty."""
    from segvol.utils import union_box

    box = union_box(ref > 0, pred > 0, margin=0)
    if box is None:
        return tuple(slice(0, s) for s in ref.shape)
    out = []
    for s, size, step in zip(box, ref.shape, spacing):
        pad = max(int(np.ceil(context_mm / step)), (s.stop - s.start) // 4)
        out.append(slice(max(s.start - pad, 0), min(s.stop + pad, size)))
    return tuple(out)


def save_overlay(path: str | Path, image: np.ndarray | None, ref: np.ndarray | None, pred: np.ndarray,
                 affine: np.ndarray, title: str = "") -> Path:
    """Axial, coronal and sagittal overlays at the slices with most reference foreground, with a legend (PNG).

    Without a reference (``ref=None``, e.g. ``segvol infer --output overlay``) the prediction is drawn in red alone,
    at the slices with the most predicted foreground."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    legend = COLOURS if ref is not None else {"prediction": COLOURS["prediction"]}
    ref = np.zeros(pred.shape, bool) if ref is None else ref
    image = np.zeros(ref.shape, np.float32) if image is None else image
    (image, ref, pred), spacing = to_display(affine, image, ref.astype(np.uint8), pred.astype(np.uint8))
    window, box = grey_window(image), focus_box(ref, pred, spacing)
    image, ref, pred = image[box], ref[box], pred[box]
    slices = best_slices(ref > 0, pred > 0)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6))
    for ax, (name, axis) in zip(axes, VIEWS):
        idx = slices[axis]
        rgb = overlay_rgb(_plane(image, axis, idx), _plane(ref, axis, idx), _plane(pred, axis, idx), window)
        h_axis, v_axis = [a for a in range(3) if a != axis]
        ax.imshow(rgb, origin="lower", interpolation="nearest", aspect=spacing[v_axis] / spacing[h_axis])
        ax.set_title(f"{name} (slice {idx + box[axis].start})")
        ax.axis("off")
    handles = [Patch(color=c, label=k) for k, c in legend.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


def save_gif(path: str | Path, image: np.ndarray | None, ref: np.ndarray | None, pred: np.ndarray,
             affine: np.ndarray, max_frames: int = 48, min_size: int = 256, duration_ms: int = 120) -> Path:
    """A GIF sweeping the axial slices that hold reference or prediction (all slices when both are empty);
    ``ref=None`` draws the prediction alone."""
    from PIL import Image

    ref = np.zeros(pred.shape, bool) if ref is None else ref
    image = np.zeros(ref.shape, np.float32) if image is None else image
    (image, ref, pred), spacing = to_display(affine, image, ref.astype(np.uint8), pred.astype(np.uint8))
    window = grey_window(image)
    box = focus_box(ref, pred, spacing)[:2] + (slice(None),)  # in-plane zoom; every axial slice stays reachable
    image, ref, pred = image[box], ref[box], pred[box]
    hit = np.flatnonzero((ref > 0).any(axis=(0, 1)) | (pred > 0).any(axis=(0, 1)))
    lo, hi = (int(hit[0]), int(hit[-1])) if hit.size else (0, ref.shape[2] - 1)
    indices = np.unique(np.linspace(lo, hi, min(max_frames, hi - lo + 1)).round().astype(int))
    scale = max(1, int(np.ceil(min_size / min(ref.shape[:2]))))
    frames = []
    for k in indices:
        rgb = overlay_rgb(_plane(image, 2, k), _plane(ref, 2, k), _plane(pred, 2, k), window)[::-1]
        frames.append(Image.fromarray(np.kron(rgb, np.ones((scale, scale, 1), np.uint8))))
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return Path(path)


def frame_count(path: str | Path) -> int:
    """Number of frames of a GIF (for checks and the report)."""
    from PIL import Image

    with Image.open(path) as img:
        return int(getattr(img, "n_frames", 1))

