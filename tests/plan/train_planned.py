"""Train a planned model for a few steps on the CPU, infer every training image, and report the peak RSS.

Run as ``python train_planned.py <plan.json> <models dir>`` in a fresh process, so that its peak resident memory
is the planned training's alone; prints one JSON line after ``@@JSON@@``.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path


def _peak_rss_gb() -> float:
    """This process's own peak resident memory: VmHWM of its address space. ``ru_maxrss`` is not it on Linux: it
    keeps the high-water mark of the process this one was forked from (the test runner's, gigabytes late in a
    session), carried over ``exec``."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1024**3
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1024**3


def main() -> None:
    import nibabel as nib
    import numpy as np
    import torch

    from segvol.inference.backends import load_model
    from segvol.inference.predictor import infer_file
    from segvol.plan import plan_from_json, plan_to_config
    from segvol.training.run import train_run

    torch.set_num_threads(1)
    plan = plan_from_json(sys.argv[1])
    cfg = plan_to_config(plan, ["train.epochs=1", "train.steps_per_epoch=3", "train.amp=false",
                                "train.max_val_cases=1", "data.val_fraction=0.25", "data.cache=ram"])
    result = train_run(cfg, models_dir=sys.argv[2], name="planned", device="cpu", progress=False)
    peak_gb = _peak_rss_gb()
    model = load_model(Path(result.run_dir) / "best.pt", torch.device("cpu"))
    grids = []
    for path in sorted((Path(plan.root) / "imagesTr").glob("*_0000.nii.gz")):
        pred = infer_file(model, str(path), None)
        img = nib.load(str(path))
        grids.append({"case": path.name, "same_shape": list(pred.labels.shape) == list(img.shape[:3]),
                      "same_affine": bool(np.allclose(pred.affine, img.affine, atol=1e-4)),
                      "labels": sorted(int(v) for v in np.unique(pred.labels))})
    sys.stdout.write("\n@@JSON@@" + json.dumps({"peak_rss_gb": peak_gb, "grids": grids,
                                                "roi": list(model.cfg.preprocess.roi_size)}))


if __name__ == "__main__":
    main()
