"""Every registered MONAI network builds from the config at a tiny size, trains a step, runs the sliding window
and exports to ONNX matching PyTorch; a patch size a network cannot take is refused with the reason."""

from __future__ import annotations

import pytest
import torch

from segvol.config import config_to_dict, load_config
from segvol.errors import SegvolError
from segvol.networks import NETWORKS, build_network, network_args, shape_divisor

TINY = {  # (model.kwargs, patch size): the smallest settings each network accepts
    "basic_unet": ({}, 32),
    "unet": ({"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}, 32),
    "segresnet": ({"init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}, 32),
    "dynunet": ({"filters": [4, 8, 16], "strides": [1, 2, 2], "kernel_size": [3, 3, 3],
                 "upsample_kernel_size": [2, 2]}, 32),
    "swinunetr": ({"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]}, 64),
}


def _cfg(name: str):
    kwargs, roi = TINY[name]
    return load_config("tiny", [f"model.name={name}", f"preprocess.roi_size=[{roi},{roi},{roi}]"],
                       model={"kwargs": kwargs, "features": [4, 4, 8, 8, 16, 4]})


def test_every_registered_network_has_a_tiny_setting():
    assert set(TINY) == set(NETWORKS)


@pytest.mark.parametrize("name", sorted(TINY))
def test_network_builds_trains_a_step_and_slides(name):
    from segvol.inference.core import sliding_window

    cfg = _cfg(name)
    args = network_args(cfg, 2, 3)
    torch.manual_seed(0)
    net = build_network(args)
    roi = cfg.preprocess.roi_size
    assert all(r % d == 0 for r, d in zip(roi, shape_divisor(args)))
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = torch.randn(1, 2, *roi), torch.randint(0, 3, (1, 1, *roi))
    from monai.losses import DiceLoss

    loss = DiceLoss(to_onehot_y=True, softmax=True)(net(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    net.eval()
    with torch.no_grad():
        out = sliding_window(net, torch.randn(1, 2, roi[0] + 8, roi[1], roi[2] - 4), cfg)
    assert out.shape == (1, 3, roi[0] + 8, roi[1], roi[2] - 4)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_network_exports_to_onnx_matching_pytorch(tmp_path, name):
    from segvol.inference.export import TOLERANCE, export_onnx_file

    cfg = _cfg(name)
    args = network_args(cfg, 2, 3)
    torch.manual_seed(0)
    net = build_network(args)
    ckpt = {"network": args, "state_dict": net.state_dict(), "config": config_to_dict(cfg),
            "task": {"in_channels": 2, "out_channels": 3, "activation": "softmax"}}
    result = export_onnx_file(ckpt, tmp_path / f"{name}.onnx")
    assert result.path.stat().st_size > 1000 and result.max_abs_diff <= TOLERANCE
    for shape in result.checked_shapes:
        assert all(s % d == 0 for s, d in zip(shape[2:], shape_divisor(args)))


@pytest.mark.parametrize("name, roi, need", [("basic_unet", 40, "multiple of 16"), ("unet", 34, "multiple of 4"),
                                             ("swinunetr", 48, "multiple of 32")])
def test_a_patch_size_the_network_cannot_take_is_refused(name, roi, need):
    cfg = load_config("tiny", [f"model.name={name}", f"preprocess.roi_size=[{roi},{roi},{roi}]"],
                      model={"kwargs": TINY[name][0]})
    with pytest.raises(SegvolError, match=f"roi_size .* model {name} needs every axis to be a {need}"):
        network_args(cfg, 1, 2)


def test_a_patch_too_small_to_train_is_refused():
    cfg = load_config("tiny", ["model.name=swinunetr", "preprocess.roi_size=[32,32,32]"],
                      model={"kwargs": TINY["swinunetr"][0]})
    with pytest.raises(SegvolError, match=r"model swinunetr needs at least \[64, 64, 64\] to train"):
        network_args(cfg, 1, 2)
    cfg = load_config("tiny", ["model.name=segresnet", "preprocess.roi_size=[8,8,8]"],  # group norm: 1 voxel is fine
                      model={"kwargs": TINY["segresnet"][0]})
    assert shape_divisor(network_args(cfg, 1, 2)) == (4, 4, 4)


def test_dynunet_anisotropic_strides_give_a_divisor_per_axis():
    cfg = load_config("tiny", ["model.name=dynunet", "preprocess.roi_size=[32,32,8]"],
                      model={"kwargs": {"filters": [4, 8, 16], "strides": [1, [2, 2, 1], [2, 2, 2]],
                                        "kernel_size": [3, 3, 3], "upsample_kernel_size": [[2, 2, 1], [2, 2, 2]]}})
    assert shape_divisor(network_args(cfg, 1, 2)) == (4, 4, 2)


def test_bad_model_settings_are_one_line_errors():
    with pytest.raises(SegvolError, match="unknown model 'vnet'; known: basic_unet, dynunet"):
        network_args(load_config("tiny", ["model.name=vnet"]), 1, 2)
    with pytest.raises(SegvolError, match="in_channels are set from the dataset"):
        network_args(load_config("tiny", [], model={"kwargs": {"in_channels": 3}}), 1, 2)
    with pytest.raises(SegvolError, match="model segresnet: cannot build it .*divisible by num_groups"):
        build_network(network_args(load_config("tiny", ["model.name=segresnet"],
                                               model={"kwargs": {"init_filters": 4}}), 1, 2))


def test_old_configs_and_checkpoints_still_build():
    old = {"name": "basic_unet", "kwargs": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2,
                                            "features": [8, 16, 32, 64, 128, 8], "dropout": 0.0}}
    assert type(build_network(old)).__name__ == "BasicUNet"
    cfg = load_config("tiny")  # a model section with features only, as every preset before model.kwargs
    assert cfg.model.kwargs == {} and network_args(cfg, 1, 2) == old
