from __future__ import annotations

import pytest

from segvol.config import Config, config_from_dict, config_to_dict, load_config, parse_override
from segvol.errors import SegvolError


def test_presets_load_and_tiny_inherits_imagecas():
    full, tiny = load_config("imagecas"), load_config("tiny")
    assert full.model.features == (32, 64, 128, 256, 512, 32)
    assert full.preprocess.roi_size == (96, 96, 96) and full.preprocess.spacing == (1.0, 1.0, 1.0)
    assert full.augment.num_samples == 4 and full.train.lr == pytest.approx(1e-4)
    assert tiny.preprocess.roi_size == (32, 32, 32)
    assert tiny.preprocess.intensity_window == full.preprocess.intensity_window  # inherited


def test_unknown_keys_are_errors():
    with pytest.raises(SegvolError, match="unknown key.*epochz"):
        config_from_dict({"train": {"epochz": 3}})
    with pytest.raises(SegvolError, match="unknown key.*trian"):
        config_from_dict({"trian": {}})


def test_types_are_checked():
    with pytest.raises(SegvolError, match="train.epochs: expected int"):
        config_from_dict({"train": {"epochs": "many"}})
    with pytest.raises(SegvolError, match="expected 3 values"):
        config_from_dict({"preprocess": {"roi_size": [96, 96]}})
    assert config_from_dict({"train": {"lr": 1}}).train.lr == 1.0  # ints widen to floats


def test_overrides_and_round_trip():
    cfg = load_config("imagecas", ["train.epochs=2", "preprocess.roi_size=[64,64,32]", "data.root=/x"])
    assert cfg.train.epochs == 2 and cfg.preprocess.roi_size == (64, 64, 32) and cfg.data.root == "/x"
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert parse_override("train.lr=3e-4") == {"train": {"lr": 3e-4}}
    with pytest.raises(SegvolError, match="section.key=value"):
        parse_override("epochs=2")


def test_frozen_and_replace():
    cfg = Config()
    with pytest.raises(Exception):
        cfg.train.epochs = 3  # type: ignore[misc]
    assert cfg.replace(train={"epochs": 3}).train.epochs == 3


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(SegvolError, match="no config preset"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(SegvolError, match="not valid YAML"):
        load_config(str(bad))
