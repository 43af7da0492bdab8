"""The records of a tree analysis: settings, nodes, segments, lesions, trees, detached pieces (plain data).

Every length is in mm along the segment's polyline from its root-side node, every position in scanner mm (NIfTI
RAS+). Radii and diameters come from cross-sections perpendicular to the smoothed centreline
(:mod:`segvol.tree.sections`); stenosis grades from :mod:`segvol.tree.grading`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["TreeSettings", "Node", "Segment", "Lesion", "Span", "Tree", "Piece", "BANDS", "band_of"]

BANDS = ("0", "1-24", "25-49", "50-69", "70-99", "100")  # CAD-RADS diameter-stenosis bands, in %


def band_of(pct: float) -> str:
    """The CAD-RADS band (``BANDS``) of a diameter reduction in % (rounded to a whole per cent first)."""
    p = round(float(pct))
    if p <= 0:
        return BANDS[0]
    for band, top in zip(BANDS[1:5], (24, 49, 69, 99)):
        if p <= top:
            return band
    return BANDS[5]


@dataclass(frozen=True)
class TreeSettings:
    """Settings of the tree analysis (the defaults suit coronary CTA masks)."""

    spur_factor: float = 2.0  # a terminal branch shorter than this times the radius at its junction is a spur
    narrowing_fraction: float = 0.45  # flag a graded narrowing of at least this diameter reduction (a 50 % one
    # reads 48-53 % at 0.4 x 0.4 x 0.625 mm: the margin keeps it from being missed)
    max_trees: int | None = 2  # the largest components analysed as trees (None: all); the rest are pieces
    min_tree_mm3: float = 5.0  # smaller components are always reported as pieces
    reference_window_mm: float = 10.0  # healthy vessel looked at on each side of a point for its reference
    min_diameter_mm: float = 1.5  # narrower references are not assessable (nor those under 4 voxels across)
    ostium_mm: float = 3.0  # not graded within this distance of an ostium (the tree's root)
    tip_mm: float = 3.0  # ... nor of a free end (at least two diameters)
    min_path_mm: float = 5.0  # a vessel path shorter than this is too short to grade


@dataclass
class Node:
    id: int
    kind: str  # "root", "end", "branch" (three or more segments meet), "point" (a lone voxel) or "ring"
    degree: int
    point_mm: np.ndarray  # (3,)
    radius_mm: float


@dataclass
class Lesion:
    """A graded narrowing (a geometric cue, not a diagnosis)."""

    segment: int  # segment id where the narrowest point lies
    at_mm: float  # the narrowest point, along that segment
    point_mm: np.ndarray  # (3,) scanner mm
    pct: float  # diameter reduction against the reference, %
    band: str  # CAD-RADS band of ``pct``
    length_mm: float  # along the vessel where the reduction is at least 20 %
    reference_mm: float  # reference diameter at the narrowest point
    minimum_mm: float  # lumen diameter there (of the equivalent circle)
    path: int = 0  # the vessel path (root to tip through the widest children) it was graded along
    flagged: bool = False  # pct >= the settings' narrowing threshold


@dataclass
class Span:
    """A stretch of a segment that is not assessable, with the reason."""

    segment: int
    from_mm: float
    to_mm: float
    reason: str  # "ostium", "tip", "junction", "thin", "short", "no reference"


@dataclass
class Segment:
    id: int
    start: int  # node id, root side
    end: int  # node id
    parent: int | None  # segment id
    generation: int
    voxels: np.ndarray  # (n, 3) int voxel indices in the input grid, root side first
    points_mm: np.ndarray  # (n, 3) smoothed polyline, scanner mm
    radii_mm: np.ndarray  # (n,) equivalent radius sqrt(area / pi) of each cross-section
    arclength_mm: np.ndarray  # (n,) along the polyline from ``start``
    length_mm: float
    mean_radius_mm: float
    min_radius_mm: float
    tortuosity: float
    narrowing: bool = False  # a lesion at or above the narrowing threshold lies on this segment
    narrowing_pct: float = 0.0  # worst graded diameter reduction on the segment, % (0 when nothing graded)
    narrowing_mm: float | None = None  # where along the segment (arclength) the worst reduction is
    grade: str = "not assessable"  # CAD-RADS band of the worst graded reduction, or "not assessable"
    loop: bool = False  # closes a cycle (touching branches); not part of the tree's spanning structure
    valid: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # clear of junction zones and tips
    diameter_min_mm: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (n,) smallest width of the section
    diameter_max_mm: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (n,) largest width
    junction: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (n,) the plane meets a junction
    reference_mm: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (n,) reference diameter (NaN: none)


@dataclass
class Tree:
    name: str
    label: int  # connected-component number (largest first)
    voxels: int
    volume_mm3: float
    nodes: list[Node]
    segments: list[Segment]
    root: int | None
    centroid_mm: np.ndarray = field(default_factory=lambda: np.zeros(3))
    paths: list[list[int]] = field(default_factory=list)  # vessel paths (segment ids, root side first)
    lesions: list[Lesion] = field(default_factory=list)
    not_assessable: list[Span] = field(default_factory=list)

    @property
    def length_mm(self) -> float:
        return float(sum(s.length_mm for s in self.segments))

    @property
    def loops(self) -> int:
        return sum(s.loop for s in self.segments)


@dataclass
class Piece:
    """A small detached component: reported, not analysed."""

    voxels: int
    volume_mm3: float
    centroid_mm: np.ndarray
    extent_mm: np.ndarray
