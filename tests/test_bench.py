from __future__ import annotations

import json

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
                "sliding_window_s_onnxruntime", "infer_end_to_end_s", "pipeline_efficiency_cached"):
        assert saved[key] > 0, key
    # reading a cached volume must be much cheaper than preprocessing it
    assert results["preprocess_cached_s_per_volume"] < results["preprocess_cold_s_per_volume"]
    assert "model_patches_per_s" in format_table(results)
