"""Networks: an explicit registry of MONAI architectures, built from the config's ``model`` section."""

from __future__ import annotations

from typing import Any

from segvol.config import Config
from segvol.errors import SegvolError

__all__ = ["NETWORKS", "network_args", "build_network"]


def _basic_unet(**kwargs: Any) -> Any:
    from monai.networks.nets import BasicUNet

    return BasicUNet(**kwargs)


NETWORKS = {"basic_unet": _basic_unet}


def network_args(cfg: Config, in_channels: int, out_channels: int) -> dict[str, Any]:
    """The keyword arguments that rebuild the network exactly; stored in every checkpoint."""
    if cfg.model.name not in NETWORKS:
        raise SegvolError(f"unknown model {cfg.model.name!r}; known: {', '.join(sorted(NETWORKS))}")
    if len(cfg.model.features) != 6:
        raise SegvolError(f"model.features: BasicUNet takes 6 numbers, got {list(cfg.model.features)}")
    return {
        "name": cfg.model.name,
        "kwargs": {
            "spatial_dims": 3,
            "in_channels": int(in_channels),
            "out_channels": int(out_channels),
            "features": [int(f) for f in cfg.model.features],
            "dropout": float(cfg.model.dropout),
        },
    }


def build_network(args: dict[str, Any]) -> Any:
    """Instantiate ``{"name": ..., "kwargs": {...}}`` as produced by :func:`network_args`."""
    try:
        factory = NETWORKS[args["name"]]
    except KeyError:
        raise SegvolError(f"unknown model {args.get('name')!r}; known: {', '.join(sorted(NETWORKS))}") from None
    kwargs = dict(args["kwargs"])
    kwargs["features"] = tuple(kwargs["features"])
    return factory(**kwargs)
