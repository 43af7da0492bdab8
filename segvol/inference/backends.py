"""Model backends for inference: a PyTorch checkpoint or an ONNX file, both as ``logits = f(patches)``."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segvol.config import Config, config_from_dict
from segvol.labels import TaskSpec
from segvol.errors import SegvolError, first_line

__all__ = ["LoadedModel", "load_model", "require_device", "ONNX_META_KEYS", "LOCATOR_META_KEY", "session_options"]

log = logging.getLogger(__name__)
ONNX_META_KEYS = ("segvol_config", "segvol_network", "segvol_task")
LOCATOR_META_KEY = "segvol_locator"  # a cascade's ONNX file names its coarse stage's file, beside it


@dataclass
class LoadedModel:
    """A callable network plus what it was trained with."""

    predict: Any  # (B, C, H, W, D) float tensor -> (B, K, H, W, D) logits
    cfg: Config
    task: TaskSpec
    network: dict[str, Any]
    backend: str  # "pytorch" or "onnxruntime"
    device: torch.device
    path: Path
    provider: str = ""  # what actually runs it: the torch device, or ONNX Runtime's first execution provider
    locator: LoadedModel | None = None  # a cascade's coarse stage (docs/cascade.md), loaded with it

    @property
    def dataset(self) -> str:
        """The dataset it was trained on: the task's, else (older checkpoints) the config's ``data.dataset``."""
        return self.task.dataset or self.cfg.data.dataset


def load_model(path: str | Path, device: torch.device) -> LoadedModel:
    """Open ``.pt`` with PyTorch or ``.onnx`` with ONNX Runtime (CUDA provider when present)."""
    path = Path(path)
    if not path.is_file():
        raise SegvolError(f"{path}: model file not found (train one with 'segvol train', then 'segvol export-onnx')")
    if path.suffix == ".onnx":
        return _load_onnx(path, device)
    if path.suffix in (".pt", ".pth"):
        return _load_torch(path, device)
    raise SegvolError(f"{path}: unknown model type; expected a .pt checkpoint or an .onnx file")


def require_device(model: LoadedModel, device: torch.device) -> None:
    """For a device asked for by name: an ONNX model that ONNX Runtime does not run on CUDA is an error, not a
    silent CPU run."""
    if model.backend == "onnxruntime" and device.type == "cuda" and model.provider != "CUDAExecutionProvider":
        raise SegvolError(f"{model.path}: --device {device}: ONNX Runtime runs this model on {model.provider}, "
                          f"not CUDA (install segvol[gpu], i.e. onnxruntime-gpu and the CUDA libraries it needs; "
                          f"or use --device cpu, or a .pt checkpoint)")


def _load_torch(path: Path, device: torch.device) -> LoadedModel:
    from segvol.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    loaded = _from_checkpoint(dict(ckpt), path, device)
    if "locator" in ckpt:  # a cascade: its coarse stage travels inside the checkpoint
        loaded.locator = _from_checkpoint(dict(ckpt["locator"]), path, device)
    return loaded


def _from_checkpoint(ckpt: dict[str, Any], path: Path, device: torch.device) -> LoadedModel:
    from segvol.networks import build_network

    model = build_network(ckpt["network"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise SegvolError(f"{path}: weights do not match the network stored in the checkpoint "
                          f"({first_line(exc, 120)})") from exc
    model.to(device).eval()

    @torch.inference_mode()
    def predict(x: torch.Tensor) -> torch.Tensor:
        return model(x.to(device))

    cfg, task = config_from_dict(ckpt["config"], saved=True), TaskSpec.from_dict(ckpt["task"], str(path))
    return LoadedModel(predict, cfg, task, ckpt["network"], "pytorch", device, path, provider=str(device))


def onnx_providers(device: torch.device) -> list[Any]:
    """CUDA on ``device``'s GPU (each torchrun rank its own) when ONNX Runtime has the provider, else the CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        index = device.index if device.index is not None else torch.cuda.current_device()
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime settings for one large convolutional graph on the CPU: every graph optimisation, one
    intra-op thread per physical core (PyTorch's default count; ORT's own default oversubscribes shared or
    hyper-threaded machines), nodes run one after another, and the memory arena kept so that consecutive windows
    reuse their buffers."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_cpu_mem_arena = True
    return options


def _load_onnx(path: Path, device: torch.device) -> LoadedModel:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), session_options(), providers=onnx_providers(device))
    except Exception as exc:  # onnxruntime raises its own exception types for broken files
        raise SegvolError(f"{path}: not a loadable ONNX model ({first_line(exc)})") from exc
    meta = session.get_modelmeta().custom_metadata_map
    missing = [k for k in ONNX_META_KEYS if k not in meta]
    if missing:
        raise SegvolError(f"{path}: ONNX model lacks segvol metadata ({', '.join(missing)}); export it with "
                          f"'segvol export-onnx'")
    cfg = config_from_dict(json.loads(meta["segvol_config"]), saved=True)
    task = TaskSpec.from_dict(json.loads(meta["segvol_task"]), str(path))
    network = json.loads(meta["segvol_network"])
    inp = session.get_inputs()[0]
    if isinstance(inp.shape[1], int) and inp.shape[1] != task.in_channels:
        raise SegvolError(f"{path}: ONNX input has {inp.shape[1]} channels, metadata says {task.in_channels}")
    provider = session.get_providers()[0]  # the one in use: a CUDA provider whose libraries fail drops out here
    log.info("onnxruntime provider: %s", provider)

    def predict(x: torch.Tensor) -> torch.Tensor:
        out = session.run(None, {inp.name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(out)

    loaded = LoadedModel(predict, cfg, task, network, "onnxruntime", torch.device("cpu"), path, provider=provider)
    if meta.get(LOCATOR_META_KEY):  # a cascade: its coarse stage's file lies beside this one
        locator = path.parent / json.loads(meta[LOCATOR_META_KEY])
        if not locator.is_file():
            raise SegvolError(f"{path}: its coarse stage {locator.name} is missing; keep the two files of a cascade "
                              f"together (segvol export-onnx writes both)")
        loaded.locator = _load_onnx(locator, device)
    return loaded
