"""Typed configuration: YAML files under ``configs/`` parsed into frozen dataclasses.

Every number of the pipeline lives here (defaults) or in a YAML preset (overrides). Unknown keys are errors,
``--set section.key=value`` overrides are parsed as YAML scalars, and the resolved configuration is stored in every
run folder and checkpoint so that inference and resume rebuild exactly what was trained.

This is the only module that reads environment variables.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from segvol.errors import SegvolError, first_line

log = logging.getLogger(__name__)

__all__ = [
    "AugmentConfig",
    "Config",
    "DataConfig",
    "CHANNEL_SCHEMES",
    "INTENSITY_NORMS",
    "InferConfig",
    "LocateConfig",
    "ModelConfig",
    "PreprocessConfig",
    "TrainConfig",
    "config_dirs",
    "config_from_dict",
    "config_to_dict",
    "distributed_env",
    "env_path",
    "find_config",
    "load_config",
]


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "imagecas"  # key of segvol.data.registry.DATASETS
    root: str = "data/imagecas"  # raw dataset folder
    val_fraction: float = 0.2  # seeded split when no official split file is present
    test_fraction: float = 0.0  # e.g. 0.15 for a 70/15/15 split
    split_seed: int = 0
    labels: str = "binary"  # "binary" (softmax head) or, for BraTS, "regions" (TC/WT/ET, sigmoid head)
    modalities: tuple[str, ...] = ()  # BraTS sequences to stack as channels; empty = the dataset's default
    cache: str = "ram"  # deterministic prefix cached: "ram", "disk" (<root>/.cache/<config hash>/) or "none"
    cache_rate: float = 1.0  # fraction of volumes kept in RAM when cache="ram"
    num_workers: int = 0  # DataLoader workers (0 = in the main process)


INTENSITY_NORMS = ("nonzero", "window", "window_nonzero", "channels")
CHANNEL_SCHEMES = ("ct", "zscore", "zscore_nonzero", "none")  # preprocess.channels[i].scheme (docs/plan.md)
LEGACY_INTENSITY_NORM = "window_nonzero"  # what a saved config without preprocess.intensity_norm was trained with


@dataclass(frozen=True)
class PreprocessConfig:
    orientation: str = "RAS"
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # mm, resampled bilinear (image) / nearest (label)
    intensity_window: tuple[float, float] | None = None  # CT only: clip HU to [lo, hi] before normalising
    # "nonzero": z-score over each channel's non-zero voxels (MRI, background 0); "window": clip to
    # intensity_window, then z-score over all voxels (CT, monotonic in HU); "auto": "window" when a window is set,
    # else "nonzero". "window_nonzero" is the earlier CT mapping (window to [0, 1], then a non-zero z-score, which
    # puts air on the value of average tissue): saved configs without this key resolve to it, so older checkpoints
    # still infer as trained. See docs/normalisation.md.
    # "channels": each channel by its own entry of ``channels`` (what ``segvol plan`` writes; "auto" resolves to it
    # when ``channels`` is given).
    intensity_norm: str = "auto"
    roi_size: tuple[int, int, int] = (96, 96, 96)  # patch size for training and sliding-window inference
    crop_nonzero: bool = False  # crop to the box of the non-zero voxels (any channel) before resampling; inverted
    # One entry per image channel, in order: {name, scheme: ct|zscore|zscore_nonzero|none, clip: [lo, hi] | null,
    # mean, std}. "ct": clip, then (x - mean) / std with the dataset's constants; "zscore": each image's own mean and
    # std; "zscore_nonzero": the same inside the channel's non-zero voxels (the background stays 0). Empty = use
    # intensity_norm. See docs/plan.md.
    channels: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        norm = self.intensity_norm
        if norm == "auto":
            norm = "channels" if self.channels else "window" if self.intensity_window is not None else "nonzero"
            object.__setattr__(self, "intensity_norm", norm)
        if norm == "channels" or self.channels:
            object.__setattr__(self, "channels", _check_channels(self.channels, norm, self.intensity_window))
            return
        if norm not in INTENSITY_NORMS:
            raise SegvolError(f"config preprocess.intensity_norm: {norm!r} is not one of auto, "
                              f"{', '.join(INTENSITY_NORMS)}")
        if norm == "nonzero" and self.intensity_window is not None:
            raise SegvolError("config preprocess.intensity_norm: 'nonzero' takes no intensity_window (set it to null, "
                              "or use 'window' for CT)")
        if norm != "nonzero" and self.intensity_window is None:
            raise SegvolError(f"config preprocess.intensity_norm: {norm!r} needs preprocess.intensity_window [lo, hi]")
        if self.intensity_window is not None and not self.intensity_window[0] < self.intensity_window[1]:
            raise SegvolError(f"config preprocess.intensity_window: expected [lo, hi] with lo < hi, got "
                              f"{list(self.intensity_window)}")


def _check_channels(channels: Any, norm: str, window: Any) -> tuple[dict[str, Any], ...]:
    """Validate ``preprocess.channels`` (used when ``intensity_norm`` is ``channels``); returns plain entries."""
    where = "config preprocess.channels"
    if norm != "channels":
        raise SegvolError(f"{where}: given, but preprocess.intensity_norm is {norm!r} (use 'channels' or 'auto')")
    if not channels:
        raise SegvolError(f"{where}: intensity_norm 'channels' needs one entry per image channel")
    if window is not None:
        raise SegvolError(f"{where}: per-channel normalisation takes no preprocess.intensity_window (set it to null)")
    out = []
    for i, entry in enumerate(channels):
        if not isinstance(entry, dict):
            raise SegvolError(f"{where}[{i}]: expected a mapping with name, scheme, clip, mean, std; got {entry!r}")
        unknown = sorted(set(entry) - {"name", "scheme", "clip", "mean", "std"})
        if unknown:
            raise SegvolError(f"{where}[{i}]: unknown key(s) {', '.join(unknown)}; known: clip, mean, name, scheme, "
                              f"std")
        scheme = entry.get("scheme")
        if scheme not in CHANNEL_SCHEMES:
            raise SegvolError(f"{where}[{i}].scheme: {scheme!r} is not one of {', '.join(CHANNEL_SCHEMES)}")
        clip, mean, std = entry.get("clip"), entry.get("mean"), entry.get("std")
        if clip is not None:
            if (not isinstance(clip, (list, tuple)) or len(clip) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in clip)
                    or not clip[0] < clip[1]):
                raise SegvolError(f"{where}[{i}].clip: expected [lo, hi] with lo < hi, or null; got {clip!r}")
            clip = [float(clip[0]), float(clip[1])]
        for key, value in (("mean", mean), ("std", std)):
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
                raise SegvolError(f"{where}[{i}].{key}: expected a number or null, got {value!r}")
        if scheme == "ct" and (clip is None or mean is None or std is None or not float(std) > 0):
            raise SegvolError(f"{where}[{i}]: scheme 'ct' needs clip [lo, hi], mean and a std > 0")
        out.append({"name": str(entry.get("name", f"channel{i}")), "scheme": scheme, "clip": clip,
                    "mean": None if mean is None else float(mean), "std": None if std is None else float(std)})
    return tuple(out)


@dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = True
    pos: float = 1.0  # RandCropByPosNegLabeld ratio of foreground- to background-centred patches
    neg: float = 1.0
    num_samples: int = 4  # patches per volume and step
    rotate_range_deg: float = 30.0
    rotate_prob: float = 0.3
    flip_prob: float = 0.3  # per axis
    zoom_range: tuple[float, float] = (0.9, 1.1)
    zoom_prob: float = 0.3
    affine_prob: float = 0.3
    affine_translate: float = 5.0  # voxels
    affine_scale: float = 0.05
    gamma_range: tuple[float, float] = (0.7, 1.5)
    gamma_prob: float = 0.3
    scale_intensity: float = 0.1
    scale_intensity_prob: float = 0.3
    noise_std: float = 0.05
    noise_prob: float = 0.3
    elastic_prob: float = 0.0  # Rand3DElasticd (image bilinear, label nearest); 0 = off
    elastic_sigma: tuple[float, float] = (5.0, 8.0)  # smoothing of the displacement field, voxels
    elastic_magnitude: tuple[float, float] = (50.0, 150.0)  # displacement magnitude before smoothing


@dataclass(frozen=True)
class ModelConfig:
    name: str = "basic_unet"  # key of segvol.networks.NETWORKS: basic_unet, unet, segresnet, dynunet, swinunetr
    features: tuple[int, ...] = (32, 64, 128, 256, 512, 32)  # basic_unet's six feature sizes (other nets: kwargs)
    dropout: float = 0.1  # passed to the network's own dropout argument
    kwargs: dict[str, Any] = field(default_factory=dict)  # further keywords of the MONAI class, e.g. {feature_size: 12}


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    lr: float = 1e-4
    optimizer: str = "adam"  # "adam" or "adamw"
    weight_decay: float = 0.0
    loss: str = "dice"  # "dice" or "dicece"
    val_every: int = 1  # epochs between validation passes
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:N"
    amp: bool = True  # mixed precision (autocast) on any device: bf16 runs on GPUs and CPUs alike
    amp_dtype: str = "bf16"  # "bf16" or "fp16" (fp16 uses a gradient scaler)
    # cached volumes live on the training device (the GPU on CUDA); crops and augmentation run there
    gpu_augment: bool = True
    compile: bool = False  # torch.compile the network
    cudnn_benchmark: bool = True  # on CUDA: let cuDNN pick the fastest kernels for the fixed patch size
    deterministic: bool = False  # deterministic cuDNN kernels and torch.use_deterministic_algorithms (slower)
    steps_per_epoch: int = 0  # 0 = one step per training volume
    max_val_cases: int = 0  # 0 = every validation case
    lr_schedule: str = "none"  # "none", "cosine" (to 0 over the epochs) or "plateau" (ReduceLROnPlateau on val Dice)
    patience: int = 0  # early stopping: validations without improvement before stopping (0 = off)
    max_minutes: float = 0.0  # a time budget: after the epoch that passes it, validate and stop (0 = off)


@dataclass(frozen=True)
class InferConfig:
    overlap: float | str = "auto"  # "auto": fewest windows per axis, spread evenly; or a fraction in [0, 1)
    min_overlap: float = 0.1  # "auto": least overlap between neighbouring windows, as a fraction of the window
    sw_batch_size: int = 4
    blend: str = "gaussian"  # "gaussian" or "constant"
    min_component_mm3: float = 0.0  # post-processing: drop components smaller than this (0 = off)
    keep_largest: int = 0  # keep only the K largest components per class (0 = all; ImageCAS: 2 trees)
    fill_holes: bool = False  # fill enclosed holes in each class
    device_transforms: bool = True  # resample, normalise and invert on the model's device (the GPU on CUDA)

    def __post_init__(self) -> None:
        ok = self.overlap == "auto" or (isinstance(self.overlap, (int, float)) and not isinstance(self.overlap, bool)
                                        and 0 <= self.overlap < 1)
        if not ok:
            raise SegvolError(f"config infer.overlap: expected 'auto' or a number in [0, 1), got {self.overlap!r}")
        if not 0 <= self.min_overlap < 1:
            raise SegvolError(f"config infer.min_overlap: expected a number in [0, 1), got {self.min_overlap!r}")


@dataclass(frozen=True)
class LocateConfig:
    """The coarse stage of a cascade (docs/cascade.md): a small network at low resolution finds the target, the
    model of the other sections segments only that box (with ``margin_mm``) at ``preprocess.spacing``."""

    enabled: bool = False  # train and infer as a cascade (locate, then segment the crop)
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0)  # mm: the coarse stage's grid
    roi_size: tuple[int, int, int] = (64, 64, 64)  # its patch (whole volumes at this spacing, mostly)
    features: tuple[int, ...] = (8, 16, 32, 64, 128, 8)  # its BasicUNet
    target_dilate_mm: float = 4.0  # it learns the label grown by this much, so thin vessels survive the coarse grid
    margin_mm: float = 6.0  # the box around what it finds (inference) or around the label (fine-stage training)
    keep_largest: int = 0  # the box holds the K largest components it finds (0: all; ImageCAS: 2, the two trees)
    epochs: int = 0  # its training epochs (0 = train.epochs)
    steps_per_epoch: int = 0  # 0 = train.steps_per_epoch

    def __post_init__(self) -> None:
        if self.margin_mm < 0 or self.target_dilate_mm < 0 or self.keep_largest < 0:
            raise SegvolError("config locate.margin_mm, target_dilate_mm and keep_largest: must not be negative")
        if any(float(s) <= 0 for s in self.spacing):
            raise SegvolError(f"config locate.spacing: expected three positive numbers, got {list(self.spacing)}")


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    locate: LocateConfig = field(default_factory=LocateConfig)

    def replace(self, **sections: Any) -> Config:
        """Return a copy with ``section={key: value}`` overrides applied (same validation as YAML)."""
        merged = config_to_dict(self)
        for name, values in sections.items():
            merged.setdefault(name, {}).update(values)
        return config_from_dict(merged)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against the type hint ``hint`` and convert lists to tuples."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is tuple or hint is tuple:
        if not isinstance(value, (list, tuple)):
            raise SegvolError(f"config {where}: expected a list, got {value!r}")
        if args and args[-1] is not Ellipsis and len(args) != len(value):
            raise SegvolError(f"config {where}: expected {len(args)} values, got {len(value)}")
        inner = args[0] if args and args[-1] is Ellipsis else None
        return tuple(_coerce(v, inner or args[i], f"{where}[{i}]") for i, v in enumerate(value))
    if args and type(None) in args:  # Optional[...]
        if value is None:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), where)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise SegvolError(f"config {where}: expected {hint.__name__}, got {value!r}")
    if hint is float:
        raise SegvolError(f"config {where}: expected a number, got {value!r}")
    return value


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise SegvolError(f"config {where}: expected a mapping, got {values!r}")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SegvolError(f"config {where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        path = f"{where}.{name}" if where else name
        nested = isinstance(hint, type) and is_dataclass(hint)
        kwargs[name] = _build(hint, value, path) if nested else _coerce(value, hint, path)
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any], *, saved: bool = False) -> Config:
    """Build a validated :class:`Config` from nested plain values (unknown keys raise :class:`SegvolError`).

    ``saved``: the values are a configuration stored by an earlier run (a checkpoint, an ONNX file's metadata, a
    run folder's ``config.yaml``); keys added since then resolve to the behaviour that run was trained with.
    """
    return _build(Config, _upgrade_saved(values) if saved else values, "")


def _upgrade_saved(values: dict[str, Any]) -> dict[str, Any]:
    """A saved config from before ``preprocess.intensity_norm`` existed normalised a CT window the old way."""
    pre = values.get("preprocess")
    if not isinstance(pre, dict) or "intensity_norm" in pre or pre.get("intensity_window") is None:
        return values
    log.warning("saved config without preprocess.intensity_norm: using the old CT normalisation it was trained "
                "with (%s, not monotonic in HU); retrain to use the monotonic 'window' mapping", LEGACY_INTENSITY_NORM)
    return {**values, "preprocess": {**pre, "intensity_norm": LEGACY_INTENSITY_NORM}}


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (lists instead of tuples) suitable for YAML and ``torch.save(weights_only)``."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_dirs() -> list[Path]:
    """Folders searched for named presets: ``./configs`` then the ``configs/`` shipped beside the package."""
    here = Path(__file__).resolve().parent
    return [Path.cwd() / "configs", here.parent / "configs", here / "configs"]


def find_config(name: str) -> Path:
    """Resolve a preset name (``imagecas``) or a path (``configs/tiny.yaml``) to an existing YAML file."""
    direct = Path(name)
    if direct.suffix in (".yaml", ".yml"):
        if direct.is_file():
            return direct
        raise SegvolError(f"{name}: config file not found")
    for folder in config_dirs():
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    raise SegvolError(f"no config preset named {name!r} (looked in {', '.join(str(d) for d in config_dirs())})")


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SegvolError(f"{path}: not valid YAML ({first_line(exc)})") from exc
    if not isinstance(values, dict):
        raise SegvolError(f"{path}: expected a mapping of sections at the top level")
    base = values.pop("base", None)
    if base is None:
        return values
    base_path = _find_base(path, base)
    if base_path.resolve() in seen:
        raise SegvolError(f"{path}: 'base' chain loops back to {base_path}")
    return _merge(_read_yaml(base_path, seen + (path.resolve(),)), values)


def _find_base(path: Path, base: Any) -> Path:
    """``base:`` of the YAML file ``path``: a file path (``../common.yaml``, relative to ``path``'s folder) or a
    preset name (``brats``), looked up beside ``path`` first, then among the presets (:func:`config_dirs`)."""
    if not isinstance(base, str) or not base.strip():
        raise SegvolError(f"{path}: 'base' must be a preset name or a YAML path, got {base!r}")
    if base.endswith((".yaml", ".yml")) or "/" in base or "\\" in base:
        candidate = path.parent / Path(base).expanduser()
        if candidate.is_file():
            return candidate
        raise SegvolError(f"{path}: base {base!r} not found (looked for {candidate})")
    sibling = path.parent / f"{base}.yaml"
    if sibling.is_file() and sibling.resolve() != path.resolve():
        return sibling
    for folder in config_dirs():
        candidate = folder / f"{base}.yaml"
        if candidate.is_file() and candidate.resolve() != path.resolve():
            return candidate
    raise SegvolError(f"{path}: base {base!r} is neither a YAML file beside it nor a preset (looked in "
                      f"{', '.join(str(d) for d in config_dirs())})")


def parse_override(text: str) -> dict[str, Any]:
    """``"train.epochs=2"`` -> ``{"train": {"epochs": 2}}`` (the value is parsed as YAML)."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise SegvolError(f"--set {text!r}: expected section.key=value, e.g. train.epochs=5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise SegvolError(f"--set {text!r}: cannot parse value ({exc})") from exc
    if isinstance(value, str):  # YAML 1.1 reads "3e-4" as text; users mean a number
        try:
            value = float(value) if any(c.isdigit() for c in value) else value
        except ValueError:
            pass
    return {parts[0]: {parts[1]: value}}


def load_config(name_or_path: str, overrides: list[str] | tuple[str, ...] = (), *, saved: bool = False,
                **sections: Any) -> Config:
    """Load a preset or YAML file, apply ``--set`` overrides, then keyword section overrides.

    ``saved``: the file is a run folder's ``config.yaml`` (see :func:`config_from_dict`).
    """
    values = _read_yaml(find_config(name_or_path))
    if saved:
        values = _upgrade_saved(values)
    for text in overrides:
        values = _merge(values, parse_override(text))
    for name, section in sections.items():
        values = _merge(values, {name: section})
    return config_from_dict(values)


def distributed_env() -> tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` as set by ``torchrun`` (``(0, 0, 1)`` outside it)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)))


def env_path(name: str, default: str | None = None) -> str | None:
    """Read a path-valued environment variable (e.g. ``MODEL_PATH``); the one place env vars are consulted."""
    return os.environ.get(name) or default
