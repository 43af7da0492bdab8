from __future__ import annotations

import dataclasses

import pytest
import yaml

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
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 3  # type: ignore[misc]
    assert cfg.replace(train={"epochs": 3}).train.epochs == 3


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(SegvolError, match="no config preset"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(SegvolError, match="not valid YAML"):
        load_config(str(bad))


def test_intensity_norm_resolves_per_modality_and_is_checked():
    assert load_config("imagecas").preprocess.intensity_norm == "window"
    assert load_config("tiny").preprocess.intensity_norm == "window"
    assert load_config("brats").preprocess.intensity_norm == "nonzero"
    assert config_from_dict({"preprocess": {"intensity_window": [-100, 300]}}).preprocess.intensity_norm == "window"
    assert Config().preprocess.intensity_norm == "nonzero"
    with pytest.raises(SegvolError, match="needs preprocess.intensity_window"):
        config_from_dict({"preprocess": {"intensity_norm": "window"}})
    with pytest.raises(SegvolError, match="'nonzero' takes no intensity_window"):
        config_from_dict({"preprocess": {"intensity_norm": "nonzero", "intensity_window": [0, 1]}})
    with pytest.raises(SegvolError, match="not one of"):
        config_from_dict({"preprocess": {"intensity_norm": "zscore"}})
    with pytest.raises(SegvolError, match="lo < hi"):
        config_from_dict({"preprocess": {"intensity_window": [800, -200]}})


def test_saved_configs_without_intensity_norm_keep_their_old_mapping(tmp_path):
    old = config_to_dict(load_config("imagecas"))
    del old["preprocess"]["intensity_norm"]
    assert config_from_dict(old, saved=True).preprocess.intensity_norm == "window_nonzero"
    assert config_from_dict(old).preprocess.intensity_norm == "window"  # a user's YAML: the new mapping
    run_yaml = tmp_path / "config.yaml"
    run_yaml.write_text(yaml.safe_dump(old))
    assert load_config(str(run_yaml), saved=True).preprocess.intensity_norm == "window_nonzero"
    mri = config_to_dict(load_config("brats"))
    del mri["preprocess"]["intensity_norm"]
    assert config_from_dict(mri, saved=True).preprocess.intensity_norm == "nonzero"  # unchanged for MRI


def test_user_yaml_builds_on_shipped_presets_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./configs here
    user = tmp_path / "mine" / "brats.yaml"  # even named like the preset it builds on
    user.parent.mkdir()
    user.write_text("base: brats\ntrain:\n  epochs: 3\n")
    cfg = load_config(str(user))
    assert cfg.data.dataset == "brats" and cfg.train.epochs == 3 and cfg.preprocess.roi_size == (96, 96, 96)
    child = tmp_path / "mine" / "sub" / "child.yaml"
    child.parent.mkdir()
    child.write_text("base: ../brats.yaml\ntrain:\n  lr: 0.01\n")
    cfg = load_config(str(child))
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.01 and cfg.data.dataset == "brats"


def test_missing_base_is_one_line_error(tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text("base: bratz\n")
    with pytest.raises(SegvolError, match="base 'bratz' is neither a YAML file beside it nor a preset") as err:
        load_config(str(user))
    assert "\n" not in str(err.value)
    user.write_text("base: ../nowhere.yaml\n")
    with pytest.raises(SegvolError, match="base '../nowhere.yaml' not found"):
        load_config(str(user))
