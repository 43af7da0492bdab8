"""``segvol bench``: where the time goes in training and inference, measured on phantoms.

Figures: model-only training rate on synthetic tensors; end-to-end training rate through the real data pipeline
(cold and cached) and its ratio to the model-only rate; preprocessing seconds per volume (cold and cached);
sliding-window inference seconds per volume with PyTorch and ONNX Runtime; one whole ``infer`` (load to save).
On the CPU use a small preset and read the ratios; absolute figures mean something on a GPU. ``--only tree``
(not part of the default run) times ``segvol tree`` and the centreline metrics on a phantom label, on the label
with speckle and on noise (:func:`tree`).
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch

from segvol.config import Config, config_to_dict
from segvol.errors import SegvolError
from segvol.utils import atomic_path

__all__ = ["run_bench", "format_table", "inference_table", "plain_monai_infer", "mask_dice"]

log = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeat


def model_only(cfg: Config, spec: Any, device: torch.device, steps: int) -> dict[str, float]:
    """Training steps/s on random tensors of the configured batch (num_samples patches of roi_size), through
    the trainer's own :meth:`~segvol.training.trainer.Trainer.train_step` (autocast, scaler and all)."""
    from segvol.training.trainer import Trainer

    trainer = Trainer(cfg, spec, device)
    shape = (cfg.augment.num_samples, spec.in_channels, *cfg.preprocess.roi_size)
    batch = {"image": torch.randn(shape, device=device),
             "label": (torch.rand((shape[0], 1 if spec.activation == "softmax" else spec.out_channels, *shape[2:]),
                                  device=device) > 0.9).float()}
    trainer.state.model.train()
    seconds = _timed(lambda: trainer.train_step(batch), device, steps)
    return {"model_steps_per_s": 1 / seconds, "model_patches_per_s": shape[0] / seconds}


def preprocessing(cfg: Config, spec: Any, records: list) -> dict[str, float]:
    """Seconds per volume for the deterministic prefix: cold, building the disk cache, and reading it back."""
    from segvol.training.data import cached_volumes

    out: dict[str, float] = {}
    for mode in ("none", "disk"):
        vols = cached_volumes(records, cfg.replace(data={"cache": mode}), spec)
        start = time.perf_counter()
        for i in range(len(vols)):
            vols[i]
        key = "preprocess_cold_s_per_volume" if mode == "none" else "preprocess_cache_build_s_per_volume"
        out[key] = (time.perf_counter() - start) / len(vols)
    start = time.perf_counter()
    for i in range(len(vols)):
        vols[i]
    out["preprocess_cached_s_per_volume"] = (time.perf_counter() - start) / len(vols)
    from segvol.transforms import INDEX_KEYS, random_part

    crop, item = random_part(cfg)[0], vols[0]  # RandCropByPosNegLabeld on one cached volume
    bare = {k: v for k, v in item.items() if k not in INDEX_KEYS}
    cpu = torch.device("cpu")
    out["crop_s_per_sample_stored_positions"] = _timed(lambda: crop(item), cpu, repeat=10, warmup=1)
    out["crop_s_per_sample_label_search"] = _timed(lambda: crop(bare), cpu, repeat=10, warmup=1)
    return out


def pipeline(cfg: Config, spec: Any, records: list, device: torch.device, steps: int) -> dict[str, float]:
    """End-to-end training patches/s through the trainer's data pipeline and steps: cold (prefix every step)
    and RAM-cached (on the training device with ``train.gpu_augment``)."""
    from segvol.training.trainer import Trainer

    out: dict[str, float] = {}
    for mode in ("none", "ram"):
        c = cfg.replace(data={"cache": mode})
        trainer = Trainer(c, spec, device)
        trainer.attach_data(records)
        trainer.train_epoch(0, steps=2)  # warm-up: cache filled, kernels chosen
        _sync(device)
        start = time.perf_counter()
        trainer.train_epoch(1, steps=steps)
        _sync(device)
        rate = steps * c.augment.num_samples / (time.perf_counter() - start)
        out["train_patches_per_s_" + ("cold" if mode == "none" else "cached")] = rate
    return out


def _untrained_models(cfg: Config, spec: Any, workdir: Path) -> tuple[Path, Path]:
    """An untrained checkpoint of the configured network and its ONNX export (speed does not depend on weights)."""
    from segvol import api
    from segvol.networks import build_network, network_args
    from segvol.checkpoint import save_checkpoint

    args = network_args(cfg, spec.in_channels, spec.out_channels)
    ckpt = workdir / "bench.pt"
    torch.manual_seed(0)
    save_checkpoint(ckpt, {"config": config_to_dict(cfg), "network": args, "task": spec.as_dict(),
                           "state_dict": build_network(args).state_dict()})
    return ckpt, api.export_onnx(checkpoint=ckpt, out=workdir / "bench.onnx").path


def mask_dice(a_path: Path, b_path: Path) -> float:
    """Dice of the foreground (any label) of two masks on one grid; NaN when both are empty."""
    import nibabel as nib
    import numpy as np
    from nibabel.spatialimages import SpatialImage

    a = np.asanyarray(cast(SpatialImage, nib.load(str(a_path))).dataobj) > 0
    b = np.asanyarray(cast(SpatialImage, nib.load(str(b_path))).dataobj) > 0
    total = int(a.sum()) + int(b.sum())
    return float("nan") if total == 0 else 2.0 * int((a & b).sum()) / total


def inference(cfg: Config, spec: Any, image_path: Path, device: torch.device, workdir: Path) -> dict[str, float]:
    """Sliding window per volume with PyTorch and ONNX Runtime; one whole ``segvol infer`` (the ONNX model on the
    CPU, the checkpoint on CUDA; default settings) stage by stage; the plain MONAI recipe on the same scan right
    after it, stage by stage; the speed-up and the Dice agreement of the two masks."""
    from segvol import api
    from segvol.inference.backends import load_model
    from segvol.inference.core import sliding_window
    from segvol.inference.predictor import _prefix

    ckpt, onnx_path = _untrained_models(cfg, spec, workdir)
    out: dict[str, float] = {}
    for name, path in (("pytorch", ckpt), ("onnxruntime", onnx_path)):
        model = load_model(path, device if name == "pytorch" else torch.device("cpu"))
        image = _prefix(model)({"image": str(image_path)})["image"].unsqueeze(0).to(model.device)
        with torch.inference_mode():
            out[f"sliding_window_s_{name}"] = _timed(functools.partial(sliding_window, model.predict, image, cfg),
                                                     model.device, repeat=1, warmup=1)
    fast_model = ckpt if device.type == "cuda" else onnx_path
    start = time.perf_counter()
    (pred,) = api.infer(inputs=[image_path], model=fast_model, out=workdir / "seg.nii.gz", device=str(device),
                        overwrite=True)
    out["infer_end_to_end_s"] = time.perf_counter() - start
    out.update({f"infer_{k}_s": v for k, v in pred.timings.items()})
    out["infer_around_network_s"] = sum(pred.timings.get(k, 0.0) for k in ("load", "preprocess", "invert", "save"))
    stages: dict[str, Any] = {}
    out["infer_plain_monai_s"] = plain_monai_infer(load_model(ckpt, device), image_path, workdir / "plain", stages)
    out.update({f"plain_{k}_s": v for k, v in stages.items() if k != "mask"})
    out["infer_speedup_vs_plain_monai"] = out["infer_plain_monai_s"] / out["infer_end_to_end_s"]
    out["infer_dice_vs_plain_monai"] = mask_dice(workdir / "seg.nii.gz", stages["mask"])
    return out


def _plain_prefix(model: Any) -> Any:
    """segvol's prefix as a plain MONAI user writes it: MONAI's own NIfTI reader, float64 resampling grid."""
    import monai.transforms as mt

    from segvol.transforms import deterministic_prefix

    steps = [mt.Spacingd(keys=t.keys, pixdim=model.cfg.preprocess.spacing, mode="bilinear")
             if isinstance(t, mt.Spacingd) else t for t in deterministic_prefix(model.cfg, keys=("image",))]
    return mt.Compose(steps)


def plain_monai_infer(model: Any, image_path: Path, out_dir: Path, stages: dict[str, Any] | None = None) -> float:
    """Seconds for one scan through the usual MONAI tutorial recipe, as the reference for ``segvol infer``: the
    same preprocessing (MONAI defaults), sliding window at overlap 0.25, softmax, ``Invertd`` of the full
    probability map back to the input grid (bilinear), ``AsDiscreted(argmax)`` there, and ``SaveImaged``
    (float32). ``stages``, when given, receives seconds per stage and the written ``mask`` path."""
    import monai.transforms as mt
    from monai.data import MetaTensor

    from segvol.inference.core import sliding_window

    prefix = _plain_prefix(model)
    post = mt.Compose([
        mt.Activationsd(keys="pred", softmax=model.task.activation == "softmax",
                        sigmoid=model.task.activation == "sigmoid"),
        mt.Invertd(keys="pred", transform=prefix, orig_keys="image", nearest_interp=False, to_tensor=True),
        mt.AsDiscreted(keys="pred", argmax=model.task.activation == "softmax"),
        mt.SaveImaged(keys="pred", output_dir=str(out_dir), output_postfix="seg", separate_folder=False,
                      print_log=False),
    ])
    times: dict[str, Any] = {}
    _sync(model.device)
    start = clock = time.perf_counter()
    data = prefix({"image": str(image_path)})
    times["load_preprocess"] = time.perf_counter() - clock
    clock = time.perf_counter()
    with torch.inference_mode():
        logits = sliding_window(model.predict, data["image"].unsqueeze(0).to(model.device), model.cfg,
                                overlap=0.25)[0]
    _sync(model.device)
    times["inference"] = time.perf_counter() - clock
    clock = time.perf_counter()
    data["pred"] = MetaTensor(logits.cpu(), meta=dict(data["image"].meta))
    post(data)
    times["invert_argmax_save"] = time.perf_counter() - clock
    total = time.perf_counter() - start
    if stages is not None:
        stem = Path(str(image_path)).name.split(".nii")[0]
        stages.update(times, mask=next(Path(out_dir).glob(f"{stem}_seg.nii*")))
    return total


def _timed_once(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _kimimaro_seconds(mask: Any, spacing: Any) -> float | None:
    """Seconds of kimimaro's TEASAR skeleton of ``mask`` (one process), or None when kimimaro is not installed."""
    try:
        import kimimaro  # an independent skeletoniser, for comparison only (not a dependency of segvol)
    except ImportError:
        return None
    import numpy as np

    return _timed_once(lambda: kimimaro.skeletonize(
        np.asarray(mask, np.uint8), anisotropy=tuple(float(s) for s in spacing), dust_threshold=100,
        fix_branching=True, fix_borders=True, progress=False, parallel=1))[0]


def tree(label_path: Path, seed: int = 0, noise_shape: tuple[int, int, int] = (200, 200, 120)) -> dict[str, Any]:
    """``segvol tree``'s analysis (no files) of a phantom label; its whole output folder (files and pictures, the
    curved planar reformations included) and, when kimimaro is installed, kimimaro's TEASAR skeleton of the same
    label; the analysis of the label with speckle (a weakly trained model's prediction: blobs in about 2 % of the
    volume, some touching the arteries) and of smoothed noise filling 30 % of a ``noise_shape`` grid (an untrained
    model's: one network of thousands of junctions); and the centreline metrics of ``segvol evaluate`` for the
    speckled mask against the label."""
    import numpy as np

    from segvol.data.phantoms.noise import noise_mask, speckled
    from segvol.evaluation.centreline import centreline_metrics
    from segvol.io.masks import load_mask
    from segvol.tree import analyse_mask
    from segvol.tree.core import spacing_of_affine
    from segvol.tree.outputs import write_tree

    label, affine = load_mask(label_path)
    label = np.asarray(label) != 0
    noisy = speckled(label, fraction=0.02, seed=seed)
    noise = noise_mask(noise_shape, fraction=0.3, seed=seed)
    out: dict[str, Any] = {"tree_grid": list(label.shape)}
    for name, mask, aff in (("phantom", label, affine), ("speckled", noisy, affine),
                            ("noise", noise, np.diag([0.4, 0.4, 0.5, 1.0]))):
        seconds, result = _timed_once(functools.partial(analyse_mask, mask, aff))
        out[f"tree_{name}_s"] = seconds
        out[f"tree_{name}_segments"] = len(result.segments)
        out[f"tree_{name}_pieces"] = len(result.pieces)
    with tempfile.TemporaryDirectory(prefix="segvol-bench-tree-") as tmp:
        seconds, written = _timed_once(lambda: write_tree(label, affine, Path(tmp) / "tree"))
    out["tree_files_s"] = seconds  # analysis, files and pictures (curved planar reformations included)
    out["tree_cpr_pictures"] = sum(name.startswith("cpr_") for name in written.files)
    out["tree_kimimaro_s"] = _kimimaro_seconds(label, spacing_of_affine(affine))
    out["tree_noise_grid"] = list(noise_shape)
    out["tree_centreline_metrics_speckled_s"] = _timed_once(
        lambda: centreline_metrics(noisy, label, spacing_of_affine(affine).tolist()))[0]
    return out


def run_bench(*, cfg: Config, device: torch.device, cases: int = 4, size: str = "small", steps: int = 10,
              data: str | Path | None = None, out_json: str | Path | None = None, only: str | None = None,
              locator: str | Path | None = None) -> dict[str, Any]:
    """Run every measurement (``only``: just ``preprocess``, ``train`` (with preprocessing), ``inference``,
    ``tree``, ``cascade`` or ``cascade-windows``, which need a cascade checkpoint ``locator``, or
    ``cascade-quality``) on ``cases`` phantoms (or the ImageCAS
    folder ``data``) and return the figures."""
    from segvol import api

    with tempfile.TemporaryDirectory(prefix="segvol-bench-") as tmp:
        work = Path(tmp)
        root = Path(data) if data else work / "imagecas"
        if not data:
            api.synth(dataset=cfg.data.dataset, out=root, cases=cases, size=size, seed=0, progress=False)
        cfg = cfg.replace(data={"root": str(root)})
        _, spec, groups, _ = api.resolve_records(cfg)
        records = (groups["train"] + groups["val"])[:cases]
        results: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "cases": len(records),
                                   "size": size, "roi_size": list(cfg.preprocess.roi_size),
                                   "features": list(cfg.model.features), "patches_per_step": cfg.augment.num_samples}
        if only in (None, "train", "preprocess"):
            log.info("bench: preprocessing")
            results.update(preprocessing(cfg, spec, records))
        if only in (None, "train"):
            log.info("bench: model only")
            results.update(model_only(cfg, spec, device, steps))
            log.info("bench: data pipeline")
            results.update(pipeline(cfg, spec, records, device, steps))
            results["pipeline_efficiency_cached"] = (results["train_patches_per_s_cached"]
                                                     / results["model_patches_per_s"])
        if only in (None, "inference"):
            log.info("bench: inference")
            results.update(inference(cfg, spec, Path(records[0]["image"]), device, work))
        if only == "cascade":  # full-size networks on one scan: asked for by name only
            from segvol.bench_cascade import cascade

            if locator is None:
                raise SegvolError("--only cascade needs --locator <a cascade run's best.pt> (its coarse stage)")
            results.update(cascade(Path(records[0]["image"]), Path(locator), work, plain_monai_infer,
                                   fine=cfg if cfg.locate.enabled else None))
        if only == "cascade-quality":  # trains two models for minutes: asked for by name only
            from segvol.bench_cascade import quality

            results.update(quality(root, work, fine=cfg if cfg.locate.enabled else None))
        if only == "cascade-windows":  # the fine boxes against the whole scan, in windows: asked for by name only
            from segvol.bench_cascade import cascade_windows

            if locator is None:
                raise SegvolError("--only cascade-windows needs --locator <a cascade run's best.pt> (its coarse stage)")
            results.update(cascade_windows(records, Path(locator)))
        if only == "tree":  # measures no model: asked for by name only
            log.info("bench: artery tree")
            results.update(tree(Path(records[0]["label"])))
    if out_json:
        with atomic_path(out_json) as tmp_json:
            tmp_json.write_text(json.dumps(results, indent=1) + "\n")
    return results


def inference_table(results: dict[str, Any]) -> str:
    """segvol's ``infer`` and the plain MONAI recipe side by side, stage by stage (seconds)."""
    def cell(*keys: str) -> str:
        values = [results[k] for k in keys if k in results]
        return f"{sum(values):.2f}" if values else "-"

    rows = [("load + preprocess", cell("infer_load_s", "infer_preprocess_s"), cell("plain_load_preprocess_s")),
            ("sliding window", cell("infer_inference_s"), cell("plain_inference_s")),
            ("post-process", cell("infer_postprocess_s"), "-"),
            ("invert + argmax + save", cell("infer_invert_s", "infer_save_s"), cell("plain_invert_argmax_save_s")),
            ("end to end (incl. model load)", cell("infer_end_to_end_s"), cell("infer_plain_monai_s"))]
    lines = [f"{'stage':<30}{'segvol':>10}{'plain MONAI':>14}"]
    lines += [f"{name:<30}{a:>10}{b:>14}" for name, a, b in rows]
    lines.append(f"speed-up {results['infer_speedup_vs_plain_monai']:.2f}x; mask Dice segvol vs plain "
                 f"{results.get('infer_dice_vs_plain_monai', float('nan')):.4f}")
    return "\n".join(lines)


def format_table(results: dict[str, Any]) -> str:
    width = max(len(k) for k in results)
    lines = []
    for key, value in results.items():
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"{key:<{width}}  {text}")
    if "infer_plain_monai_s" in results:
        lines += ["", inference_table(results)]
    if "cascade_fine_s" in results:
        from segvol.bench_cascade import cascade_table

        lines += ["", cascade_table(results)]
    if "cascade_windows" in results:
        from segvol.bench_cascade import windows_table

        lines = [line for line in lines if not line.startswith("cascade_windows")] + ["", windows_table(results)]
    return "\n".join(lines)
