"""The in-memory entry point: one scan in, its mask out in the same kind (array, nibabel image or file).

``predict_array`` is to :func:`segvol.inference.predictor.infer_file` what TotalSegmentator's Python API is to its
CLI: the same preprocessing, sliding window and inverse (:func:`~segvol.inference.predictor.predict_scan`, the
in-memory core both stand on), with no file needed on either side. An array with its affine goes through the
reader as the same data in a NIfTI file would, so the three kinds give one mask; only a path is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segvol.errors import SegvolError
from segvol.inference.backends import LoadedModel

__all__ = ["predict_array"]


def predict_array(model: LoadedModel, image: Any, affine: np.ndarray | None = None, *,
                  out: str | Path | None = None, sw_batch_size: int | None = None,
                  overlap: float | str | None = None,
                  tta: bool = False, amp: bool = False, overwrite: bool = False) -> Any:
    """Segment one scan; the mask comes back as the kind of ``image``.

    Args:
        model: from :func:`segvol.inference.backends.load_model`.
        image: an array (3D, or 4D with channels last) with its ``affine`` (voxel -> RAS mm) -> a uint8 array on
            the same grid; a nibabel image (or a list of them: the sequences of one scan) -> a ``Nifti1Image`` on
            its grid (header kept); a NIfTI path or DICOM series folder -> the path of the mask written (``out``,
            default ``<scan>_seg.nii.gz`` beside it).
        affine: required with an array, refused otherwise.
    """
    from segvol.io.nifti import as_image, is_in_memory
    from segvol.inference.outputs import mask_path_for
    from segvol.inference.predictor import infer_file, predict_scan

    options: dict[str, Any] = dict(sw_batch_size=sw_batch_size, overlap=overlap, tta=tta, amp=amp)
    if isinstance(image, np.ndarray):
        if affine is None:
            raise SegvolError("predict_array: an array needs its affine (voxel -> scanner mm, 4x4)")
        return predict_scan(model, as_image(image, affine), **options)[0].labels
    if affine is not None:
        raise SegvolError("predict_array: affine= goes with an array; images and files carry their own")
    if is_in_memory(image):
        return predict_scan(model, image, **options)[0].mask
    if not isinstance(image, (str, Path)):
        raise SegvolError(f"predict_array: expected an array, a nibabel image or a path, got {type(image).__name__}")
    target = Path(out) if out is not None else mask_path_for(image)
    from segvol.utils import check_writable_target

    check_writable_target(target, overwrite)
    return infer_file(model, image, target, overwrite=overwrite, **options).output
