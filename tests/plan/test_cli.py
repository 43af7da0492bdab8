"""``segvol plan`` on the command line, and which datasets ``segvol train`` plans by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segvol.cli import build_parser, main
from segvol.cli.train import _load_train_config
from tests.plan.phantoms import write_dataset


@pytest.fixture(scope="module")
def ct_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("plan-cli"), "Dataset904_CTmixed")


def test_plan_command_prints_the_table_and_writes_yaml_and_json(ct_dataset, tmp_path, capsys):
    out, js = tmp_path / "plan.yaml", tmp_path / "plan.json"
    argv = ["plan", "--dataset", "nnunet", "--data", str(ct_dataset), "--memory-gb", "4", "-o", str(out),
            "--json", str(js)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "spacing (mm)" in printed and f"segvol train --config {out}" in printed
    assert out.read_text().count("base: msd") == 1 and json.loads(js.read_text())["channels"][0]["scheme"] == "ct"
    assert main(argv) == 2  # both exist: refused, one line, nothing replaced
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_train_plans_nnunet_by_default_and_keeps_presets_on_request(ct_dataset):
    def config(*extra: str):
        return _load_train_config(build_parser().parse_args(["train", "--dataset", "nnunet", "--data",
                                                              str(ct_dataset), *extra]))

    planned = config("--set", "train.epochs=2")
    assert planned.preprocess.intensity_norm == "channels" and planned.preprocess.channels[0]["scheme"] == "ct"
    assert planned.train.epochs == 2 and planned.data.root == str(ct_dataset)
    preset = config("--no-plan")
    assert preset.preprocess.intensity_norm != "channels" and preset.preprocess.spacing == (1.0, 1.0, 1.0)
    assert config("--config", "tiny-msd").preprocess.intensity_norm != "channels"  # a named config is kept
    imagecas = _load_train_config(build_parser().parse_args(["train", "--dataset", "imagecas"]))
    assert imagecas.preprocess.spacing == (1.0, 1.0, 1.0)  # ImageCAS keeps its preset by name
