"""Surface meshes of segmentation masks in scanner coordinates: marching cubes, optional smoothing, STL and PLY.

``mask_to_mesh`` is the array core: marching cubes (scikit-image) at the 0.5 iso-level of a zero-padded mask (so
surfaces touching the border are closed), vertices mapped from voxel indices to scanner millimetres through the
NIfTI affine, and faces ordered so that normals point outwards (right-hand rule) even when the affine mirrors
space (negative determinant, e.g. LPS-stored or flipped scans). Optional Taubin smoothing (lambda/mu, no
shrinkage) works in millimetres.

``mesh_file`` is the file-level wrapper behind ``segvol mesh``: one mesh per label value (or per BraTS region
with ``labels="brats"``), written as binary STL or binary little-endian PLY by the output suffix, atomically; with
several meshes the class name is appended to the file name (``arteries_label2.stl``, ``tumour_wt.ply``).
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segvol.errors import SegvolError
from segvol.utils import atomic_path

__all__ = ["Mesh", "mask_to_mesh", "taubin_smooth", "write_stl", "write_ply", "write_mesh", "mesh_file",
           "write_label_meshes", "signed_volume"]

log = logging.getLogger(__name__)
FORMATS = (".stl", ".ply")


@dataclass
class Mesh:
    """Triangle mesh: vertices (N, 3) float64 in mm, faces (M, 3) int64 counter-clockwise seen from outside."""

    vertices: np.ndarray
    faces: np.ndarray

    def normals(self) -> np.ndarray:
        v = self.vertices[self.faces]
        n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
        length = np.linalg.norm(n, axis=1, keepdims=True)
        return n / np.where(length > 0, length, 1)


def signed_volume(mesh: Mesh) -> float:
    """Enclosed volume in mm³ by the divergence theorem; positive when the normals point outwards."""
    v = mesh.vertices[mesh.faces]
    return float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6.0)


def _edges(faces: np.ndarray, n: int):  # noqa: ANN202  (scipy sparse matrix)
    from scipy import sparse

    i = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    j = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    adj = sparse.coo_matrix((np.ones(i.size), (i, j)), shape=(n, n)).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.float64)
    degree = np.asarray(adj.sum(axis=1)).ravel()
    return sparse.diags(1.0 / np.maximum(degree, 1)) @ adj


def taubin_smooth(mesh: Mesh, iterations: int, lam: float = 0.5, mu: float = -0.53) -> Mesh:
    """Taubin smoothing: alternating Laplacian steps ``lam`` (shrink) and ``mu`` (inflate), ``iterations`` pairs."""
    if iterations <= 0 or len(mesh.vertices) == 0:
        return mesh
    avg = _edges(mesh.faces, len(mesh.vertices))
    v = mesh.vertices.copy()
    for _ in range(iterations):
        v = v + lam * (avg @ v - v)
        v = v + mu * (avg @ v - v)
    return Mesh(v, mesh.faces)


def mask_to_mesh(mask: np.ndarray, affine: np.ndarray, smooth: int = 0) -> Mesh:
    """Surface of a boolean 3D mask, vertices in scanner mm (``affine`` maps voxel indices to mm).

    Args:
        mask: (H, W, D) mask; anything non-zero is inside.
        affine: 4x4 voxel -> mm matrix (the NIfTI affine).
        smooth: Taubin smoothing iterations (0 = the raw marching-cubes surface).
    """
    from skimage.measure import marching_cubes

    mask = np.asarray(mask) != 0
    if mask.ndim != 3:
        raise ValueError(f"expected a 3D mask, got shape {mask.shape}")
    if not mask.any():
        return Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    padded = np.pad(mask, 1).astype(np.float32)
    verts, faces, _, _ = marching_cubes(padded, level=0.5)
    verts = verts.astype(np.float64) - 1.0  # undo the padding: back to voxel indices of ``mask``
    affine = np.asarray(affine, dtype=np.float64)
    mesh = Mesh(verts @ affine[:3, :3].T + affine[:3, 3], faces.astype(np.int64))
    if signed_volume(mesh) < 0:  # marching cubes' winding, or a mirroring affine: make normals point outwards
        mesh.faces = mesh.faces[:, [0, 2, 1]]
    return taubin_smooth(mesh, smooth)


def write_stl(mesh: Mesh, path: str | Path, name: str = "segvol") -> Path:
    """Binary STL (80-byte header, float32 normals and vertices in mm), written atomically."""
    record = np.dtype([("normal", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")])
    data = np.zeros(len(mesh.faces), dtype=record)
    data["normal"] = mesh.normals()
    data["v"] = mesh.vertices[mesh.faces]
    header = f"{name} (mm, scanner coordinates)".encode("ascii", "replace")[:80].ljust(80, b" ")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(header + struct.pack("<I", len(data)))
        fh.write(data.tobytes())
    return Path(path)


def write_ply(mesh: Mesh, path: str | Path) -> Path:
    """Binary little-endian PLY (float32 vertices in mm, int32 triangle indices), written atomically."""
    header = ("ply\nformat binary_little_endian 1.0\ncomment segvol mesh, mm, scanner coordinates\n"
              f"element vertex {len(mesh.vertices)}\nproperty float x\nproperty float y\nproperty float z\n"
              f"element face {len(mesh.faces)}\nproperty list uchar int vertex_indices\nend_header\n")
    faces = np.zeros(len(mesh.faces), dtype=np.dtype([("n", "u1"), ("i", "<i4", 3)]))
    faces["n"], faces["i"] = 3, mesh.faces
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(mesh.vertices.astype("<f4").tobytes())
        fh.write(faces.tobytes())
    return Path(path)


def write_mesh(mesh: Mesh, path: str | Path) -> Path:
    """STL or PLY by the suffix of ``path``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".stl":
        return write_stl(mesh, path)
    if suffix == ".ply":
        return write_ply(mesh, path)
    raise SegvolError(f"{path}: unknown mesh format; use a .stl or .ply file name")


def _targets(out: Path, names: list[str]) -> list[Path]:
    if len(names) == 1:
        return [out]
    suffix = out.suffix
    return [out.with_name(f"{out.name[: -len(suffix)]}_{name}{suffix}") for name in names]


def write_label_meshes(data: np.ndarray, affine: np.ndarray, out: str | Path, *, smooth: int = 0,
                       label: int | None = None, labels: str = "multi", overwrite: bool = False,
                       source: str = "mask") -> list[tuple[Path, Mesh]]:
    """One mesh per label value of the label map ``data`` (``label``: only that one; ``labels="brats"``: TC/WT/ET
    regions; ``"binary"``: everything non-zero as one surface), written next to ``out`` (see the module doc).

    Returns:
        ``(path, mesh)`` per written file. ``source`` names the mask in messages.
    """
    from segvol.data.registry import region_schemes
    from segvol.labels import ClassDef, class_defs, class_mask
    from segvol.utils import check_writable_target

    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise SegvolError(f"{out}: unknown mesh format; use a .stl or .ply file name")
    present = sorted({int(v) for v in np.unique(data)} - {0})
    if label is not None:
        if label not in present:
            raise SegvolError(f"{source}: holds no voxel labelled {label} (labels present: {present or 'none'})")
        classes = [ClassDef(f"label{label}", (label,))]
    else:
        classes = class_defs("multi" if labels == "auto" else labels, present, schemes=region_schemes())
        classes = [ClassDef(c.name.replace("label_", "label"), c.values) for c in classes]
    if not present or not classes:
        raise SegvolError(f"{source}: the mask is empty; there is no surface to mesh")
    targets = _targets(out, [c.name for c in classes])
    for target in targets:
        check_writable_target(target, overwrite)
    written = []
    for cls, target in zip(classes, targets):
        mesh = mask_to_mesh(class_mask(data, cls), affine, smooth=smooth)
        if len(mesh.faces) == 0:
            log.warning("%s: %s is empty; no mesh written", source, cls.name)
            continue
        write_mesh(mesh, target)
        log.info("%s: %s -> %s (%d vertices, %d faces, %.1f mL)", source, cls.name, target, len(mesh.vertices),
                 len(mesh.faces), signed_volume(mesh) / 1000)
        written.append((target, mesh))
    return written


def mesh_file(seg: str | Path, out: str | Path, *, smooth: int = 0, label: int | None = None,
              labels: str = "multi", overwrite: bool = False) -> list[tuple[Path, Mesh]]:
    """:func:`write_label_meshes` for the mask file ``seg`` (``segvol mesh``)."""
    from segvol.io.masks import load_mask

    if Path(out).suffix.lower() not in FORMATS:
        raise SegvolError(f"{out}: unknown mesh format; use a .stl or .ply file name")
    data, affine = load_mask(seg)
    return write_label_meshes(data, affine, out, smooth=smooth, label=label, labels=labels, overwrite=overwrite,
                              source=str(seg))
