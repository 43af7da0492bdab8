"""A dataset defined in this file alone, registered with ``register_dataset``, goes through synth, check-data,
train and evaluate without any other module knowing it."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from segvol import api
from segvol.cli import main
from segvol.config import Config, load_config
from segvol.labels import TaskSpec
from segvol.data.adapter import CheckRules, DatasetAdapter, EvalDefaults
from segvol.data.registry import ALIASES, DATASETS, register_dataset
from segvol.errors import SegvolError
from tests.conftest import REPO


class Spheres(DatasetAdapter):
    """``<root>/scans/sN.nii.gz`` + ``<root>/masks/sN.nii.gz``: bright balls (label 1) and dim balls (unlabelled)
    in a CT-like volume; held out as ``test`` by an official split file."""

    name = "spheres"
    modality = "CT"
    label_names = ("background", "ball")
    default_modalities = ("ct",)

    def find_records(self, root: str | Path, modalities: Sequence[str] = (), require_labels: bool = True
                     ) -> list[dict]:
        root = Path(root)
        scans = sorted((root / "scans").glob("s*.nii.gz"))
        if not scans:
            raise SegvolError(f"{root}: no scans/s*.nii.gz")
        return [{"id": p.name[:-7], "image": str(p), "label": str(root / "masks" / p.name)} for p in scans]

    def task_spec(self, cfg: Config) -> TaskSpec:
        return TaskSpec(in_channels=1, out_channels=2, activation="softmax", class_names=("ball",),
                        modalities=("ct",))

    def official_split(self, root: str | Path) -> dict[str, list[str]] | None:
        ids = [r["id"] for r in self.find_records(root)]
        return {"train": ids[:-2], "val": ids[-2:-1], "test": ids[-1:]}

    def check_rules(self, root: str | Path, modalities: Sequence[str] = ()) -> CheckRules:
        return CheckRules(modality="CT", channels=1, label_values=frozenset({0, 1}))

    def evaluation_defaults(self) -> EvalDefaults:
        return EvalDefaults(label_names={1: "bright ball"})

    def write_phantom_case(self, out: Path, index: int, size: str, seed: int) -> list[Path]:
        from segvol.io.nifti import save_nifti

        rng = np.random.default_rng(seed * 1000 + index)
        grid = np.indices((40, 40, 36)).transpose(1, 2, 3, 0)
        image = rng.normal(-50, 20, (40, 40, 36))
        image[:4] = -1000  # some air
        label = np.zeros((40, 40, 36), np.uint8)
        for value, labelled in ((400, True), (150, False)):
            centre = rng.uniform(10, 26, 3)
            ball = np.linalg.norm(grid - centre, axis=-1) < rng.uniform(4, 7)
            image[ball] = value + rng.normal(0, 20, int(ball.sum()))
            label[ball] = int(labelled)
        paths = [out / "scans" / f"s{index}.nii.gz", out / "masks" / f"s{index}.nii.gz"]
        save_nifti(image.astype(np.int16), np.diag([1.2, 1.2, 1.5, 1.0]), paths[0])
        save_nifti(label, np.diag([1.2, 1.2, 1.5, 1.0]), paths[1])
        return paths


@pytest.fixture()
def spheres_registered():
    register_dataset("spheres", Spheres, aliases=("balls",))
    yield
    DATASETS.pop("spheres")
    ALIASES.pop("balls")


def test_a_dataset_added_in_one_file_works_everywhere(tmp_path, spheres_registered, capsys):
    data = tmp_path / "balls"
    assert main(["-q", "synth", "balls", "--out", str(data), "--cases", "5"]) == 0
    assert len(list((data / "scans").iterdir())) == 5

    assert main(["-q", "check-data", "--dataset", "spheres", "--data", str(data)]) == 0
    assert "5 case(s): 0 error(s)" in capsys.readouterr().out

    cfg = load_config(str(REPO / "configs" / "tiny.yaml"), ["train.epochs=1", "train.steps_per_epoch=2"],
                      data={"dataset": "spheres", "root": str(data)})
    api.train(cfg=cfg, models_dir=tmp_path / "models", name="run", device="cpu", progress=False)
    run = tmp_path / "models" / "run"
    assert (run / "split.json").read_text().count("s5") == 1  # the adapter's official split was used

    assert main(["-q", "evaluate", "--run", str(run), "--device", "cpu"]) == 0
    with open(run / "eval" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["case"], r["class"]) for r in rows] == [("s5", "ball")]
    assert (run / "eval" / "predictions" / "s5_seg.nii.gz").is_file()


def test_register_refuses_a_taken_name_and_lists_new_names(spheres_registered):
    with pytest.raises(SegvolError, match="already registered"):
        register_dataset("msd", Spheres)
    with pytest.raises(SegvolError, match=r"unknown dataset 'nope'; known: .*balls.*spheres"):
        api.synth(dataset="nope", out="unused", cases=1)


def test_an_adapter_must_implement_the_abstract_methods():
    class Half(DatasetAdapter):
        name = "half"

    with pytest.raises(TypeError, match="find_records"):
        Half()  # type: ignore[abstract]
