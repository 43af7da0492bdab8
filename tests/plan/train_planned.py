"""Train a planned model for a few steps on the CPU, infer every training image, and report the peak RSS.

Run as ``python train_planned.py <plan.json> <models dir>`` in a fresh process, so that its peak resident memory
is the planned training's alone; prints one JSON line after ``@@JSON@@``.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path


def main() -> None:
    import nibabel as nib
    import numpy as np
    import torch

    from segvol.data.msd import MSD
    from segvol.inference.backends import load_model
    from segvol.inference.predictor import infer_file
    from segvol.plan import plan_from_json, plan_to_config
    from segvol.training.run import train_run

    torch.set_num_threads(1)
    # MSD.configure puts dataset.json's fixed scheme over the config; a planned config carries its own
    # (preprocess.intensity_norm: channels). Until the adapter leaves a planned config alone, it is bypassed here.
    MSD.configure = lambda self, cfg: cfg  # type: ignore[method-assign]
    plan = plan_from_json(sys.argv[1])
    cfg = plan_to_config(plan, ["train.epochs=1", "train.steps_per_epoch=3", "train.amp=false",
                                "train.max_val_cases=1", "data.val_fraction=0.25", "data.cache=ram"])
    result = train_run(cfg, models_dir=sys.argv[2], name="planned", device="cpu", progress=False)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1024 ** 3
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
