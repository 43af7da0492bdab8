"""Meshes land in scanner millimetres: a sphere of known centre and radius through a rotated, anisotropic,
mirroring affine comes back at that centre and radius, with outward normals, in STL and PLY."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from segvol.cli import main
from segvol.mesh import mask_to_mesh, signed_volume, taubin_smooth
from tests.conftest import write_nifti

CENTRE = np.array([-20.0, 35.0, 12.0])
RADIUS = 10.0


SHAPE = (60, 60, 32)


def _affine(mirror: bool) -> np.ndarray:
    t = np.deg2rad(25)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    scale = np.diag([0.8, 1.0, 1.5] if not mirror else [-0.8, 1.0, 1.5])
    affine = np.eye(4)
    affine[:3, :3] = rot @ scale
    affine[:3, 3] = CENTRE + [1.3, -0.7, 0.4] - affine[:3, :3] @ ((np.array(SHAPE) - 1) / 2)  # off the grid's centre
    return affine


def _sphere(affine: np.ndarray, shape=SHAPE) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    mm = ijk @ affine[:3, :3].T + affine[:3, 3]
    return (np.linalg.norm(mm - CENTRE, axis=1) <= RADIUS).reshape(shape)


@pytest.mark.parametrize("mirror", [False, True])
def test_sphere_vertices_in_scanner_mm(mirror):
    affine = _affine(mirror)
    assert (np.linalg.det(affine[:3, :3]) < 0) == mirror
    mask = _sphere(affine)
    assert mask.sum() > 1000 and not mask[0].any() and not mask[-1].any()
    mesh = mask_to_mesh(mask, affine)
    dist = np.linalg.norm(mesh.vertices - CENTRE, axis=1)
    assert np.allclose(mesh.vertices.mean(axis=0), CENTRE, atol=0.3)
    assert abs(dist.mean() - RADIUS) < 0.4
    assert dist.min() > RADIUS - 1.2 and dist.max() < RADIUS + 1.2
    volume = signed_volume(mesh)  # positive: normals point outwards, also through the mirroring affine
    assert volume == pytest.approx(4 / 3 * np.pi * RADIUS**3, rel=0.08)
    outward = np.einsum("ij,ij->i", mesh.normals(), mesh.vertices[mesh.faces].mean(axis=1) - CENTRE)
    assert (outward > 0).mean() > 0.97


def test_taubin_smoothing_keeps_the_sphere():
    affine = _affine(False)
    mesh = mask_to_mesh(_sphere(affine), affine)
    smooth = taubin_smooth(mesh, 10)
    raw_dev = np.abs(np.linalg.norm(mesh.vertices - CENTRE, axis=1) - RADIUS).mean()
    new_dist = np.linalg.norm(smooth.vertices - CENTRE, axis=1)
    assert abs(new_dist.mean() - RADIUS) < 0.5  # no shrinkage
    assert np.abs(new_dist - RADIUS).mean() < raw_dev  # smoother


def _read_stl(path):
    data = path.read_bytes()
    (n,) = struct.unpack("<I", data[80:84])
    rec = np.frombuffer(data[84:], dtype=np.dtype([("normal", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")]))
    assert len(rec) == n
    return rec


def test_cli_writes_one_stl_per_label_and_a_ply(tmp_path):
    affine = _affine(True)
    labels = _sphere(affine).astype(np.uint8)
    labels[:, :, :4] = 2  # a second label: a slab at the bottom
    seg = write_nifti(tmp_path / "scan_seg.nii.gz", labels, affine)
    assert main(["mesh", str(seg), "-o", str(tmp_path / "out.stl"), "--smooth", "2"]) == 0
    one, two = tmp_path / "out_label1.stl", tmp_path / "out_label2.stl"
    rec = _read_stl(one)
    assert np.allclose(rec["v"].reshape(-1, 3).mean(axis=0), CENTRE, atol=0.5)
    assert len(_read_stl(two)) > 0
    assert main(["mesh", str(seg), "-o", str(tmp_path / "s.ply"), "--label", "1"]) == 0
    ply = (tmp_path / "s.ply").read_bytes()
    head, body = ply.split(b"end_header\n", 1)
    n_vert = int(head.split(b"element vertex ")[1].split(b"\n")[0])
    verts = np.frombuffer(body[: n_vert * 12], "<f4").reshape(-1, 3)
    assert np.allclose(verts.mean(axis=0), CENTRE, atol=0.3)


def test_cli_errors_are_one_line(tmp_path, capsys):
    seg = write_nifti(tmp_path / "empty.nii.gz", np.zeros((5, 5, 5), np.uint8), np.eye(4))
    assert main(["mesh", str(seg), "-o", str(tmp_path / "x.stl")]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["mesh", str(seg), "-o", str(tmp_path / "x.obj")]) == 2
    assert "x.obj: unknown mesh format" in capsys.readouterr().err
