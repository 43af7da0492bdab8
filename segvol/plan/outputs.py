"""A :class:`~segvol.plan.planner.Plan` as JSON (for tools), as a YAML config (to read, edit and train with), as
a printed table, and as a :class:`~segvol.config.Config`; and :func:`run_plan`, the one call behind ``segvol plan``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

from segvol.config import Config, config_from_dict, load_config, parse_override
from segvol.errors import SegvolError

from segvol.plan.planner import Plan

__all__ = ["run_plan", "plan_to_dict", "plan_from_json", "plan_overrides", "plan_to_config", "plan_table",
           "write_plan_json", "write_plan_yaml", "DEPARTURES"]

log = logging.getLogger(__name__)

# where segvol decides differently from nnU-Net on purpose (printed under the table, and in docs/plan.md)
DEPARTURES = (
    "patch and batch: segvol's own memory model (segvol.plan.memory, measured on MONAI's networks), not nnU-Net's "
    "reference feature-map count for its PlainConvUNet; the batch is patches of one volume (augment.num_samples)",
    "network: MONAI's DynUNet with nnU-Net's per-axis kernels and strides (one output head, no deep supervision), "
    "or segvol's BasicUNet when the topology is isotropic",
)


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The JSON form: ``spacing_mm``, ``patch_size``, ``batch_size``, ``channels``, ``network``, ``fingerprint``,
    and the rest of the plan."""
    return {"dataset": plan.dataset, "root": plan.root, "base": plan.base,
            "spacing_mm": list(plan.spacing), "patch_size": list(plan.patch), "batch_size": plan.batch,
            "crop_nonzero": plan.crop_nonzero, "channels": [dict(c) for c in plan.channels],
            "network": dict(plan.network), "loss": plan.loss, "memory": dict(plan.memory),
            "median_shape_resampled": list(plan.median_shape), "rules": dict(plan.rules),
            "departures_from_nnunet": list(DEPARTURES), "fingerprint": plan.fingerprint,
            "warnings": list(plan.warnings)}


def plan_from_json(path: str | Path) -> Plan:
    """Read a plan written by :func:`write_plan_json`."""
    try:
        d = json.loads(Path(path).read_text())
        return Plan(dataset=d["dataset"], root=d["root"], base=d["base"], spacing=tuple(d["spacing_mm"]),
                    patch=tuple(d["patch_size"]), batch=int(d["batch_size"]), crop_nonzero=bool(d["crop_nonzero"]),
                    channels=tuple(d["channels"]), network=d["network"], loss=d["loss"], memory=d["memory"],
                    median_shape=tuple(d["median_shape_resampled"]), rules=d["rules"], fingerprint=d["fingerprint"],
                    warnings=tuple(d["warnings"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SegvolError(f"{path}: not a segvol plan ({type(exc).__name__}: {exc})") from exc


def plan_overrides(plan: Plan) -> dict[str, Any]:
    """The config sections the plan sets, on top of its ``base`` preset."""
    model: dict[str, Any] = {"name": plan.network["name"], "dropout": 0.0, "kwargs": dict(plan.network["kwargs"])}
    if plan.network["name"] == "basic_unet":
        model["features"] = list(plan.network["features"])
    return {
        "data": {"dataset": plan.dataset, "root": plan.root},
        "preprocess": {"spacing": list(plan.spacing), "crop_nonzero": plan.crop_nonzero, "intensity_window": None,
                       "intensity_norm": "channels", "channels": [dict(c) for c in plan.channels],
                       "roi_size": list(plan.patch)},
        "augment": {"num_samples": plan.batch},
        "model": model,
        "train": {"loss": plan.loss},
    }


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def plan_to_config(plan: Plan, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The config to train with: the ``base`` preset, the plan on top, then ``--set`` overrides on top of that."""
    from segvol.config import config_to_dict

    values = _merge(config_to_dict(load_config(plan.base)), plan_overrides(plan))
    if plan.network["name"] != "basic_unet":
        values["model"]["kwargs"] = dict(plan.network["kwargs"])  # the preset's kwargs belong to its own network
    for text in overrides:
        values = _merge(values, parse_override(text))
    return config_from_dict(values)


class _NoAliases(yaml.SafeDumper):
    """Writes a repeated list again instead of as a YAML anchor (``&id001``) and alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_plan_yaml(plan: Plan, path: str | Path) -> Path:
    """``base: <preset>`` and the planned sections, with a header saying how to use it."""
    from segvol.utils import atomic_path

    head = (f"# segvol plan for {plan.dataset} at {plan.root} (docs/plan.md). Edit any value, then\n"
            f"#   segvol train --config {Path(path).name}   (add --set section.key=value to override one)\n")
    text = head + yaml.dump({"base": plan.base, **plan_overrides(plan)}, Dumper=_NoAliases, sort_keys=False,
                            default_flow_style=None, width=120)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_plan_json(plan: Plan, path: str | Path) -> Path:
    from segvol.utils import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(plan_to_dict(plan), indent=2) + "\n")
    return Path(path)


def _fmt(values: Any) -> str:
    if isinstance(values, (list, tuple)):
        return " x ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
    return str(values)


def _preset_rows(plan: Plan) -> dict[str, str]:
    try:
        pre = load_config(plan.base)
    except SegvolError:
        return {}
    norm = pre.preprocess.intensity_norm + (f" {list(pre.preprocess.intensity_window)}"
                                            if pre.preprocess.intensity_window else "")
    return {"spacing (mm)": _fmt(pre.preprocess.spacing), "crop": "non-zero" if pre.preprocess.crop_nonzero else "no",
            "patch": _fmt(pre.preprocess.roi_size), "batch": str(pre.augment.num_samples),
            "network": pre.model.name, "loss": pre.train.loss, "normalisation": norm}


def plan_table(plan: Plan) -> str:
    """The plan as a short table: what was chosen, from which statistic, and the preset's value where the plan
    departs from it (``*``); then the warnings and where segvol departs from nnU-Net."""
    preset = _preset_rows(plan)
    net = plan.network
    rows = [("spacing (mm)", _fmt(plan.spacing), plan.rules.get("spacing", "")),
            ("crop", "non-zero" if plan.crop_nonzero else "no", plan.rules.get("crop", "")),
            *[(f"channel {i} {c['name']}", f"{c['scheme']}" + (f" clip [{c['clip'][0]:g}, {c['clip'][1]:g}] "
                                                                 f"mean {c['mean']:g} std {c['std']:g}"
                                                                 if c["scheme"] == "ct" else ""),
               plan.rules.get("normalisation", "")) for i, c in enumerate(plan.channels)],
            ("patch", _fmt(plan.patch), plan.rules.get("patch", "")),
            ("batch", str(plan.batch), plan.rules.get("batch", "")),
            ("network", f"{net['name']} strides {net['strides'][1:]}", plan.rules.get("network", "")),
            ("loss", plan.loss, plan.rules.get("loss", "")),
            ("memory (GB)", f"{plan.memory['model_gb']:g} of {plan.memory['budget_gb']:g}", plan.memory["source"])]
    lines = [f"plan for {plan.dataset} at {plan.root} ({plan.fingerprint.get('cases', '?')} cases) on preset "
             f"{plan.base}", ""]
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    for i, (what, value, why) in enumerate(rows):
        key = "normalisation" if what.startswith("channel") else what
        if key == "normalisation" and rows[i - 1][0].startswith("channel"):
            why = "  (as above)"
        old = preset.get(key)
        mark = f"  * preset: {old}" if old is not None and old != value else ""
        lines.append(f"{what:<{width}}  {value:<{vwidth}}  {why}{mark}")
    lines += ["", "where segvol departs from nnU-Net on purpose:", *[f"  - {d}" for d in DEPARTURES]]
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


def _dataset_channels(adapter: Any, name: str, root: Path, cfg: Config) -> tuple[list[str], list[str], list[str]]:
    """Channel names, their modalities (``CT`` or the name) and the label names of the dataset in ``root``."""
    spec = adapter.task_spec(cfg)
    if name == "msd":
        from segvol.data.msd import read_meta

        meta = read_meta(root)
        names, labels = list(meta.channels), list(meta.labels)
    else:
        names, labels = list(spec.modalities), list(adapter.label_names)
    ct = adapter.modality_of(root).upper() == "CT"
    modalities = ["CT" if ct or n.casefold() == "ct" else n for n in names]
    return names, modalities, labels


def run_plan(dataset: str, data: str | Path, *, device: str = "auto", memory_gb: float | None = None,
             out_yaml: str | Path | None = None, out_json: str | Path | None = None, base: str | None = None,
             progress: bool = False, cache: bool = True) -> Plan:
    """Fingerprint the dataset in ``data``, plan it, and write the YAML and JSON when asked.

    Args:
        dataset: a registered dataset name (``msd``, ``nnunet``, ``imagecas``, ``brats``, ...).
        data: its raw folder.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``: whose memory is the budget.
        memory_gb: the budget in GB instead of the device's memory.
        out_yaml / out_json: where to write the plan as a config / as JSON.
        base: the preset the plan sits on (default: the dataset's own preset).
        progress: show a progress bar over the cases.
        cache: read and write the fingerprint cache in ``<data>/.cache/plan/``.
    """
    from segvol.data.registry import canonical_name, get_adapter
    from segvol.plan.fingerprint import fingerprint_records
    from segvol.plan.memory import memory_budget
    from segvol.plan.planner import make_plan

    name = canonical_name(dataset)
    adapter = get_adapter(name)
    base = base or adapter.preset or name
    root = Path(data)
    cfg = load_config(base).replace(data={"dataset": name, "root": str(root)})
    records = adapter.find_records(root, cfg.data.modalities)
    names, modalities, labels = _dataset_channels(adapter, name, root, cfg)
    budget, source, kind = memory_budget(device, memory_gb)
    fp = fingerprint_records(name, root, records, names, modalities, labels, progress=progress, cache=cache)
    spec = adapter.task_spec(cfg)
    plan = make_plan(fp, base=base, in_channels=spec.in_channels, out_channels=spec.out_channels,
                     budget_gb=budget, budget_source=source, device=kind)
    if out_yaml is not None:
        log.info("plan config written to %s", write_plan_yaml(plan, out_yaml))
    if out_json is not None:
        log.info("plan JSON written to %s", write_plan_json(plan, out_json))
    return plan

