"""Run nnU-Net v2's own fingerprint extractor and experiment planner on raw datasets; print their plans as JSON.

Run as ``python nnunet_reference.py <raw> <preprocessed> <name>...`` in a fresh process: nnU-Net reads its
``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` environment variables when it is imported.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    raw, pre, *names = sys.argv[1:]
    os.environ.update(nnUNet_raw=raw, nnUNet_preprocessed=pre, nnUNet_results=os.path.join(pre, "results"))
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

    out = {}
    for name in names:
        extractor = DatasetFingerprintExtractor(name, num_processes=1)
        extractor.show_progress_bar = False
        # nnU-Net draws 1e8 foreground samples per channel in all; 1e6 gives the same percentiles to well under 1 %
        # of the range here, in a fraction of the memory. The rules themselves are untouched.
        extractor.num_foreground_voxels_for_intensitystats = 1e6
        fingerprint = extractor.run(overwrite_existing=True)
        plans = ExperimentPlanner(name).plan_experiment()
        out[name] = {"fingerprint": fingerprint, "plans": plans}
    sys.stdout.write("\n@@JSON@@" + json.dumps(out, default=float))


if __name__ == "__main__":
    main()
