"""Networks: an explicit registry of MONAI architectures, built from the config's ``model`` section.

``model.name`` picks the entry and ``model.kwargs`` overrides its defaults (any keyword of the MONAI class);
``model.dropout`` goes to the network's own dropout argument, and ``model.features`` (six numbers) are BasicUNet's.
Each entry also says by how much the input must be divisible per axis (from its strides or patch merging), so a
patch size the network cannot take is refused with the reason before training starts::

    model:
      name: dynunet
      kwargs: {filters: [16, 32, 64, 128], strides: [1, 2, 2, 2], kernel_size: [3, 3, 3, 3],
               upsample_kernel_size: [2, 2, 2]}

A new network is one :func:`register_network` call (a factory taking ``spatial_dims``, ``in_channels``,
``out_channels`` and keywords; defaults; the dropout argument's name; a divisor function).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from segvol.config import Config
from segvol.errors import SegvolError

__all__ = ["NETWORKS", "NetworkEntry", "network_args", "build_network", "shape_divisor", "divisor_text",
           "register_network"]


@dataclass(frozen=True)
class NetworkEntry:
    """One registered architecture.

    Attributes:
        build: ``build(spatial_dims=, in_channels=, out_channels=, **kwargs)`` -> ``torch.nn.Module``.
        defaults: keyword arguments used unless ``model.kwargs`` overrides them.
        dropout_key: the name of the network's dropout argument (``model.dropout`` goes there).
        divisor: ``divisor(kwargs)`` -> the factor each spatial axis of the input must be a multiple of.
        uses_features: ``model.features`` are this network's feature sizes (BasicUNet).
        min_multiple: the least multiple of ``divisor`` a training patch takes per axis: 2 where the deepest
            features are instance-normalised (one voxel there cannot be normalised in training), else 1.
    """

    build: Callable[..., Any]
    defaults: dict[str, Any] = field(default_factory=dict)
    dropout_key: str | None = "dropout"
    divisor: Callable[[Mapping[str, Any]], tuple[int, int, int]] = lambda kwargs: (16, 16, 16)
    uses_features: bool = False
    min_multiple: int = 2


def _monai(name: str) -> Callable[..., Any]:
    def build(**kwargs: Any) -> Any:
        from monai.networks import nets

        return getattr(nets, name)(**kwargs)

    return build


def _per_axis(strides: Any) -> tuple[int, int, int]:
    """The product of a stride list per axis (each stride an int or a 3-list)."""
    total = [1, 1, 1]
    for s in strides:
        each = [int(s)] * 3 if isinstance(s, (int, float)) else [int(v) for v in s]
        total = [t * v for t, v in zip(total, each)]
    return total[0], total[1], total[2]


def _segresnet_divisor(kwargs: Mapping[str, Any]) -> tuple[int, int, int]:
    n = 2 ** (len(kwargs.get("blocks_down", (1, 2, 2, 4))) - 1)
    return n, n, n


def _swin_divisor(kwargs: Mapping[str, Any]) -> tuple[int, int, int]:
    n = int(kwargs.get("patch_size", 2)) * 2 ** len(kwargs.get("depths", (2, 2, 2, 2)))
    return n, n, n


NETWORKS: dict[str, NetworkEntry] = {
    "basic_unet": NetworkEntry(_monai("BasicUNet"), uses_features=True),
    "unet": NetworkEntry(_monai("UNet"), {"channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2),
                                          "num_res_units": 2},
                         divisor=lambda kw: _per_axis(kw["strides"])),
    "segresnet": NetworkEntry(_monai("SegResNet"), {"init_filters": 16, "blocks_down": (1, 2, 2, 4),
                                                    "blocks_up": (1, 1, 1)},
                              dropout_key="dropout_prob", divisor=_segresnet_divisor, min_multiple=1),
    "dynunet": NetworkEntry(_monai("DynUNet"), {"kernel_size": (3, 3, 3, 3, 3), "strides": (1, 2, 2, 2, 2),
                                                "upsample_kernel_size": (2, 2, 2, 2),
                                                "filters": (32, 64, 128, 256, 320)},
                            divisor=lambda kw: _per_axis(kw["strides"])),
    "swinunetr": NetworkEntry(_monai("SwinUNETR"), {"feature_size": 24}, dropout_key="drop_rate",
                              divisor=_swin_divisor),
}


def register_network(name: str, entry: NetworkEntry, *, replace: bool = False) -> None:
    """Add ``entry`` to :data:`NETWORKS` under ``name`` (a taken name is an error unless ``replace``)."""
    if name in NETWORKS and not replace:
        raise SegvolError(f"network {name!r} is already registered")
    NETWORKS[name] = entry


def _entry(name: str) -> NetworkEntry:
    try:
        return NETWORKS[name]
    except KeyError:
        raise SegvolError(f"unknown model {name!r}; known: {', '.join(sorted(NETWORKS))}") from None


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (what YAML and ``torch.load(weights_only=True)`` store)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _tupled(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_tupled(v) for v in value)
    return value


def _check_kwargs(name: str, entry: NetworkEntry, kwargs: dict[str, Any]) -> None:
    reserved = sorted({"spatial_dims", "in_channels", "out_channels"} & set(kwargs))
    if reserved:
        raise SegvolError(f"model.kwargs: {', '.join(reserved)} are set from the dataset, not the config")
    if name == "dynunet" and kwargs.get("deep_supervision"):
        raise SegvolError("model.kwargs.deep_supervision: segvol trains one output head; leave it false")


def shape_divisor(args: Mapping[str, Any]) -> tuple[int, int, int]:
    """The factor each spatial axis of the input must be a multiple of, for :func:`network_args`' result."""
    entry = _entry(args["name"])
    return tuple(int(v) for v in entry.divisor(args["kwargs"]))  # type: ignore[return-value]


def divisor_text(divisor: tuple[int, ...]) -> str:
    """A :func:`shape_divisor` for messages: ``16`` when every axis has the same factor, else ``4x4x2``."""
    return str(divisor[0]) if len(set(divisor)) == 1 else "x".join(map(str, divisor))


def network_args(cfg: Config, in_channels: int, out_channels: int) -> dict[str, Any]:
    """The keyword arguments that rebuild the network exactly; stored in every checkpoint.

    Raises :class:`SegvolError` for an unknown name, bad keywords, or a ``preprocess.roi_size`` the network cannot
    take (not a multiple of its :func:`shape_divisor` on every axis).
    """
    name = cfg.model.name
    entry = _entry(name)
    extra = dict(cfg.model.kwargs) if isinstance(cfg.model.kwargs, Mapping) else None
    if extra is None:
        raise SegvolError(f"model.kwargs: expected a mapping of keyword arguments, got {cfg.model.kwargs!r}")
    _check_kwargs(name, entry, extra)
    kwargs: dict[str, Any] = {"spatial_dims": 3, "in_channels": int(in_channels), "out_channels": int(out_channels),
                              **entry.defaults}
    if entry.uses_features:
        if len(cfg.model.features) != 6:
            raise SegvolError(f"model.features: BasicUNet takes 6 numbers, got {list(cfg.model.features)}")
        kwargs["features"] = [int(f) for f in cfg.model.features]
    if entry.dropout_key:
        kwargs[entry.dropout_key] = float(cfg.model.dropout)
    kwargs.update(extra)
    args = {"name": name, "kwargs": _plain(kwargs)}
    _check_roi(cfg.preprocess.roi_size, name, args, entry.min_multiple)
    return args


def _check_roi(roi: tuple[int, ...], name: str, args: dict[str, Any], min_multiple: int) -> None:
    try:
        divisor = shape_divisor(args)
    except (KeyError, TypeError, ValueError) as exc:
        raise SegvolError(f"model.kwargs for {name}: cannot read the strides ({type(exc).__name__}: {exc})") from exc
    if any(int(r) % d for r, d in zip(roi, divisor)):
        raise SegvolError(f"preprocess.roi_size {list(roi)}: model {name} needs every axis to be a multiple of "
                          f"{divisor_text(divisor)} (its downsampling); "
                          f"e.g. {[math.ceil(r / d) * d for r, d in zip(roi, divisor)]}")
    least = [d * min_multiple for d in divisor]
    if any(int(r) < m for r, m in zip(roi, least)):
        raise SegvolError(f"preprocess.roi_size {list(roi)}: model {name} needs at least {least} to train (its "
                          f"deepest features must keep more than one voxel per axis for instance norm)")


def build_network(args: Mapping[str, Any]) -> Any:
    """Instantiate ``{"name": ..., "kwargs": {...}}`` as produced by :func:`network_args`."""
    entry = _entry(str(args.get("name")))
    kwargs = {k: _tupled(v) for k, v in dict(args["kwargs"]).items()}
    try:
        return entry.build(**kwargs)
    except (TypeError, ValueError, AssertionError) as exc:  # MONAI checks its arguments with these
        raise SegvolError(f"model {args['name']}: cannot build it with {kwargs} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
