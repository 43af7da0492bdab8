from __future__ import annotations

import json

import pytest
import torch

from segvol.bench import format_table, run_bench
from segvol.config import load_config


def test_bench_runs_on_the_cpu_preset(tmp_path):
    cfg = load_config("tiny", ["train.max_val_cases=1"])
    out = tmp_path / "bench.json"
    results = run_bench(cfg=cfg, device=torch.device("cpu"), cases=2, steps=2, out_json=out)
    saved = json.loads(out.read_text())
    for key in ("model_patches_per_s", "train_patches_per_s_cold", "train_patches_per_s_cached",
                "preprocess_cold_s_per_volume", "preprocess_cached_s_per_volume", "sliding_window_s_pytorch",
                "sliding_window_s_onnxruntime", "infer_end_to_end_s", "pipeline_efficiency_cached",
                "infer_plain_monai_s", "infer_speedup_vs_plain_monai"):
        assert saved[key] > 0, key
    assert saved == {k: (list(v) if isinstance(v, tuple) else v) for k, v in results.items()}  # the JSON is the run
    # the figures are consistent with each other, not only positive
    assert results["infer_speedup_vs_plain_monai"] == pytest.approx(
        results["infer_plain_monai_s"] / results["infer_end_to_end_s"])
    assert results["pipeline_efficiency_cached"] == pytest.approx(
        results["train_patches_per_s_cached"] / results["model_patches_per_s"])
    stages = [k for k in ("load", "preprocess", "inference", "postprocess", "invert", "save")
              if f"infer_{k}_s" in results]
    assert len(stages) >= 5 and all(results[f"infer_{k}_s"] >= 0 for k in stages)
    assert sum(results[f"infer_{k}_s"] for k in stages) <= results["infer_end_to_end_s"]  # parts of the whole
    # reading a cached volume must be much cheaper than preprocessing it
    assert results["preprocess_cached_s_per_volume"] < results["preprocess_cold_s_per_volume"]
    assert "model_patches_per_s" in format_table(results)


def test_bench_inference_only_and_the_plain_monai_reference_writes_a_mask(tmp_path):
    import nibabel as nib

    from segvol import api
    from segvol.bench import plain_monai_infer
    from segvol.inference.backends import load_model

    cfg = load_config("tiny")
    results = run_bench(cfg=cfg, device=torch.device("cpu"), cases=2, only="inference")
    assert "infer_plain_monai_s" in results and "model_patches_per_s" not in results

    api.synth(dataset="imagecas", out=tmp_path / "d", cases=1, progress=False)
    from segvol.config import config_to_dict
    from segvol.networks import build_network, network_args
    from segvol.checkpoint import save_checkpoint

    args = network_args(cfg, 1, 2)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, {"config": config_to_dict(cfg), "network": args,
                           "state_dict": build_network(args).state_dict(),
                           "task": {"in_channels": 1, "out_channels": 2, "activation": "softmax",
                                    "class_names": ["artery"], "modalities": ["ct"]}})
    scan = tmp_path / "d" / "1.img.nii.gz"
    assert plain_monai_infer(load_model(ckpt, torch.device("cpu")), scan, tmp_path / "plain") > 0
    (written,) = list((tmp_path / "plain").glob("*.nii.gz"))  # the reference recipe really produced a mask
    assert nib.load(str(written)).shape[:3] == nib.load(str(scan)).shape


def test_bench_tree_stage_times_the_label_speckle_and_noise(imagecas_small):
    from segvol.bench import tree

    results = tree(imagecas_small / "1.label.nii.gz", noise_shape=(40, 40, 30))
    for name in ("phantom", "speckled", "noise"):
        assert results[f"tree_{name}_s"] > 0 and results[f"tree_{name}_segments"] > 0, name
    assert results["tree_speckled_pieces"] > results["tree_phantom_pieces"]  # the speckle is reported
    assert results["tree_centreline_metrics_speckled_s"] > 0


def test_cascade_windows_are_counted_as_inference_places_them():
    """The cost unit of ``--only cascade-windows``: full-size windows over a box, counted by hand."""
    from segvol.bench_cascade import _windows

    one_mm, fine = load_config("imagecas"), load_config("imagecas-fine")  # 96³ windows, at least 10 voxels overlap
    assert _windows([195.0, 195.0, 75.0], 1.0, one_mm) == 3 * 3 * 1  # 195 > 96 + 86; the short axis padded to 96
    assert _windows([99.0, 90.0, 70.0], 0.5, fine) == 3 * 2 * 2  # 198, 180 (= 96 + 84), 140 voxels
    assert _windows([99.0, 90.0, 70.0], 0.7, fine) == 2 * 2 * 2  # 141, 129, 100 voxels
    assert _windows([40.0, 40.0, 40.0], 0.5, fine) == 1  # a box smaller than one window
