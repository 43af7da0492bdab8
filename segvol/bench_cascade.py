"""``segvol bench --only cascade``: what locating costs and saves, on one full-size scan, in one run.

Full-size networks (speed does not depend on their weights: they are untrained) run under ONNX Runtime on the CPU,
as ``segvol infer`` runs them there: the 1 mm recipe (``imagecas``) over the whole scan and with locating, the fine
cascade (``imagecas-fine``, 0.5 mm) and the same fine stage over the whole scan (``--no-locate``); the plain MONAI
recipe (the 1 mm network, MONAI's reader, ``Invertd``) on the same scan for reference. The coarse stage is a trained
one (the ``locator`` of a cascade checkpoint, ``--locator``): where it looks decides how much the fine stage does.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from segvol.config import Config, config_to_dict, load_config

__all__ = ["cascade", "cascade_table"]

log = logging.getLogger(__name__)


def _model(cfg: Config, spec: Any, workdir: Path, name: str, locator: dict[str, Any] | None) -> tuple[Path, Path]:
    """An untrained checkpoint of ``cfg``'s network (with ``locator`` inside for a cascade) and its ONNX export."""
    from segvol import api
    from segvol.checkpoint import save_checkpoint
    from segvol.networks import build_network, network_args

    args = network_args(cfg, spec.in_channels, spec.out_channels)
    torch.manual_seed(0)
    payload: dict[str, Any] = {"config": config_to_dict(cfg), "network": args, "task": spec.as_dict(),
                               "state_dict": build_network(args).state_dict()}
    if locator is not None:
        payload["locator"] = locator
    ckpt = workdir / f"{name}.pt"
    save_checkpoint(ckpt, payload)
    return ckpt, api.export_onnx(checkpoint=ckpt, out=workdir / f"{name}.onnx").path


def _infer(model: Path, image: Path, out: Path, locate: bool = True) -> tuple[float, Any]:
    from segvol import api

    start = time.perf_counter()
    (pred,) = api.infer(inputs=[image], model=model, out=out, device="cpu", overwrite=True, locate=locate)
    return time.perf_counter() - start, pred


def cascade(image_path: Path, locator_ckpt: Path, workdir: Path, plain_monai_infer: Any) -> dict[str, Any]:
    """The timings and ratios of the module doc, for the scan ``image_path`` (``plain_monai_infer``: the plain
    recipe of :mod:`segvol.bench`)."""
    from segvol.checkpoint import load_checkpoint
    from segvol.data.registry import get_adapter
    from segvol.errors import SegvolError
    from segvol.inference.backends import load_model

    ckpt = load_checkpoint(locator_ckpt)
    if "locator" not in ckpt:
        raise SegvolError(f"{locator_ckpt}: not a cascade checkpoint (no coarse stage inside); train one with "
                          f"'segvol train --config tiny-fine'")
    locator = dict(ckpt["locator"])
    one_mm, fine = load_config("imagecas"), load_config("imagecas-fine")
    located_1mm = one_mm.replace(locate={**config_to_dict(fine)["locate"], "enabled": True})
    spec = get_adapter("imagecas").task_spec(one_mm)
    _, onnx_1mm = _model(one_mm, spec, workdir, "recipe-1mm", None)
    _, onnx_1mm_located = _model(located_1mm, spec, workdir, "recipe-1mm-located", locator)
    _, onnx_fine = _model(fine, spec, workdir, "cascade-fine", locator)
    out: dict[str, Any] = {"locator": str(locator_ckpt), "locator_features": locator["network"].get("features")}
    runs = {"recipe_1mm": (onnx_1mm, True), "recipe_1mm_located": (onnx_1mm_located, True),
            "cascade_fine": (onnx_fine, True), "cascade_fine_no_locate": (onnx_fine, False)}
    for name, (model, locate) in runs.items():
        log.info("bench cascade: %s", name)
        seconds, pred = _infer(model, image_path, workdir / f"{name}_seg.nii.gz", locate)
        out[f"{name}_s"] = seconds
        out[f"{name}_stages"] = {k: round(v, 2) for k, v in pred.timings.items()}
        if pred.located is not None:
            out[f"{name}_box"] = [[b.start, b.stop] for b in pred.located]
    log.info("bench cascade: plain MONAI recipe")
    ckpt_1mm = workdir / "recipe-1mm.pt"
    out["plain_monai_s"] = plain_monai_infer(load_model(ckpt_1mm, torch.device("cpu")), image_path, workdir / "plain")
    out["fine_cascade_vs_recipe_1mm"] = out["recipe_1mm_s"] / out["cascade_fine_s"]
    out["no_locate_vs_fine_cascade"] = out["cascade_fine_no_locate_s"] / out["cascade_fine_s"]
    out["recipe_1mm_located_vs_plain_monai"] = out["plain_monai_s"] / out["recipe_1mm_located_s"]
    return out


def cascade_table(results: dict[str, Any]) -> str:
    """Seconds per run and the three ratios the cascade is held to."""
    rows = [("plain MONAI recipe (1 mm)", "plain_monai_s"), ("segvol 1 mm, whole scan", "recipe_1mm_s"),
            ("segvol 1 mm, located", "recipe_1mm_located_s"), ("fine cascade (0.5 mm)", "cascade_fine_s"),
            ("fine stage, whole scan (--no-locate)", "cascade_fine_no_locate_s")]
    lines = [f"{'run (ONNX Runtime, CPU)':<40}{'seconds':>10}"]
    lines += [f"{name:<40}{results[key]:>10.1f}" for name, key in rows if key in results]
    lines.append(f"1 mm recipe / fine cascade {results['fine_cascade_vs_recipe_1mm']:.2f}x (>= 1); --no-locate / "
                 f"fine cascade {results['no_locate_vs_fine_cascade']:.2f}x (>= 2); plain MONAI / 1 mm located "
                 f"{results['recipe_1mm_located_vs_plain_monai']:.2f}x (>= 5)")
    return "\n".join(lines)
