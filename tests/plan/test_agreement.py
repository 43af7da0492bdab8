"""segvol's plan against nnU-Net v2's own planner on four small nnU-Net-layout datasets (issue 19).

nnU-Net runs in a fresh process (it reads its folders from environment variables at import). Its spacings and
patches are in SimpleITK array order, transposed by ``transpose_forward``; they are mapped back here to the voxel
order, then reversed into RAS order, segvol's (the phantoms' affines are positive diagonals).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.plan.phantoms import DATASETS, write_dataset

pytest.importorskip("nnunetv2", reason="nnunetv2 is in the dev extra: pip install -e '.[dev]' (make setup)")

SCHEMES = {"CTNormalization": "ct", "ZScoreNormalization": "zscore", "NoNormalization": "none"}


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, object]]:
    from segvol.plan import run_plan

    raw = tmp_path_factory.mktemp("nnUNet_raw")
    pre = tmp_path_factory.mktemp("nnUNet_preprocessed")
    for name in DATASETS:
        write_dataset(raw, name)
    script = Path(__file__).with_name("nnunet_reference.py")
    done = subprocess.run([sys.executable, str(script), str(raw), str(pre), *DATASETS], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = json.loads(done.stdout.split("@@JSON@@")[1])
    return {name: (reference[name], run_plan("nnunet", raw / name, device="cpu", memory_gb=8.0, cache=False))
            for name in DATASETS}


def _ras(values: list, plans: dict) -> np.ndarray:
    """nnU-Net's transposed array-order values -> segvol's RAS order."""
    back = plans["transpose_backward"]
    return np.asarray(values, dtype=np.float64)[back][::-1]


@pytest.mark.parametrize("name", list(DATASETS))
def test_spacing_within_5_percent(both: dict, name: str) -> None:
    ref, plan = both[name]
    nn = _ras(ref["plans"]["configurations"]["3d_fullres"]["spacing"], ref["plans"])
    assert np.allclose(plan.spacing, nn, rtol=0.05), (plan.spacing, nn)


@pytest.mark.parametrize("name", list(DATASETS))
def test_same_scheme_per_channel(both: dict, name: str) -> None:
    ref, plan = both[name]
    cfg = ref["plans"]["configurations"]["3d_fullres"]
    nn = [SCHEMES[s] + ("_nonzero" if mask and s == "ZScoreNormalization" else "")
          for s, mask in zip(cfg["normalization_schemes"], cfg["use_mask_for_norm"])]
    assert [c["scheme"] for c in plan.channels] == nn


@pytest.mark.parametrize("name", [n for n, d in DATASETS.items() if d[1] == ("CT",)])
def test_ct_clip_within_2_percent_of_range(both: dict, name: str) -> None:
    ref, plan = both[name]
    props = ref["plans"]["foreground_intensity_properties_per_channel"]["0"]
    lo, hi = props["percentile_00_5"], props["percentile_99_5"]
    ours = plan.channels[0]
    assert abs(ours["clip"][0] - lo) <= 0.02 * (hi - lo) and abs(ours["clip"][1] - hi) <= 0.02 * (hi - lo)
    assert abs(ours["mean"] - props["mean"]) <= 0.02 * (hi - lo)
    assert abs(ours["std"] - props["std"]) <= 0.02 * (hi - lo)


def test_coarse_axis_gets_the_shortest_patch_side(both: dict) -> None:
    ref, plan = both["Dataset902_MRaniso"]
    coarse = int(np.argmax(plan.spacing))
    assert coarse == 2  # the phantoms' slice axis (0.7 x 0.7 x 4-6 mm)
    nn_patch = _ras(ref["plans"]["configurations"]["3d_fullres"]["patch_size"], ref["plans"])
    assert int(np.argmin(nn_patch)) == coarse
    assert int(np.argmin(plan.patch)) == coarse and plan.patch[coarse] < min(plan.patch[:2])
    # no pooling along the coarse axis while its spacing is more than 2x the others' (0.7 -> 1.4 -> 2.8 -> 5.6 mm)
    first = plan.network["strides"][1]
    assert first[coarse] == 1 and first[0] == first[1] == 2


@pytest.mark.parametrize("name", list(DATASETS))
def test_same_network_layout_where_the_patch_agrees(both: dict, name: str) -> None:
    """segvol sizes its patch with its own memory model; where it picks nnU-Net's patch, the layout must agree."""
    ref, plan = both[name]
    cfg = ref["plans"]["configurations"]["3d_fullres"]
    nn_patch = [int(v) for v in _ras(cfg["patch_size"], ref["plans"])]
    if list(plan.patch) != nn_patch:
        pytest.skip(f"patch differs on purpose: segvol {list(plan.patch)}, nnU-Net {nn_patch}")
    arch = cfg["architecture"]["arch_kwargs"]
    assert plan.network["strides"] == [[int(v) for v in _ras(s, ref["plans"])] for s in arch["strides"]]
    assert plan.network["kernels"] == [[int(v) for v in _ras(k, ref["plans"])] for k in arch["kernel_sizes"]]


CASES = [((0.7, 0.7, 5.0), (160, 160, 12.5)), ((1.0, 1.0, 1.0), (128, 128, 128)), ((0.8, 0.8, 2.5), (96, 96, 40)),
         ((3.0, 0.5, 0.5), (20, 192, 160)), ((1.5, 1.5, 1.0), (64, 64, 96)), ((0.7, 0.7, 4.0), (40, 40, 7.5))]


@pytest.mark.parametrize("spacing,patch", CASES)
def test_topology_rule_against_nnunet(spacing: tuple, patch: tuple) -> None:
    """The pooling/kernel rule against nnU-Net's own ``get_pool_and_conv_props`` (axis order is the same here)."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    from segvol.plan.rules import MIN_EDGE, topology

    _, strides, kernels, padded, divisor = get_pool_and_conv_props(list(spacing), list(patch), MIN_EDGE, 999999)
    ours = topology(spacing, patch)
    assert [list(s) for s in ours.strides] == [list(s) for s in strides]
    assert [list(k) for k in ours.kernels] == [list(k) for k in kernels]
    assert list(ours.divisor) == [int(d) for d in divisor]
    assert list(ours.patch) == [int(p) for p in padded]
