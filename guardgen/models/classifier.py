"""Image classifiers and feature extractors: timm models, local weights, and the zoo's digit net.

``DigitNet`` is registered with timm (``timm.create_model("guardgen_digitnet")``), so the zoo oracle
and any timm backbone go through the same factory, the same local-weight loading and the same
``forward_features`` / ``forward_head`` split used for feature-based scores (FD).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from guardgen.checkpoint import load_json, load_state_dict, mismatch, save_json, save_safetensors
from guardgen.errors import GuardgenError

__all__ = ["DigitNet", "create_classifier", "load_classifier", "save_classifier", "classifier_features"]


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class DigitNet(nn.Module):
    """A small VGG-style CNN for low-resolution digits. Input (B, C, H, W) in [0, 1]; logits (B, num_classes).

    The input is normalised inside the model (mean 0.5, std 0.5), so callers always pass [0, 1] images.
    """

    def __init__(self, *, num_classes: int = 10, in_chans: int = 1, width: int = 32, drop_rate: float = 0.2,
                 img_size: int | None = None):  # img_size: taken for timm's fixed-size callers; any size runs
        super().__init__()
        self.num_classes = num_classes
        self.num_features = 4 * width
        self.features = nn.Sequential(
            _block(in_chans, width), _block(width, width), nn.MaxPool2d(2),
            _block(width, 2 * width), _block(2 * width, 2 * width), nn.MaxPool2d(2),
            _block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> (B, num_features)."""
        return self.features((x - 0.5) / 0.5)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(self.drop(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, **_) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _register() -> None:
    from timm.models import register_model
    from timm.models._registry import is_model

    if is_model("guardgen_digitnet"):
        return

    @register_model
    def guardgen_digitnet(pretrained: bool = False, **kwargs) -> DigitNet:  # noqa: ARG001
        for factory_arg in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm's, not the net's
            kwargs.pop(factory_arg, None)
        return DigitNet(**kwargs)


def check_architecture(architecture: str) -> None:
    """A one-line error unless timm (with guardgen's own nets registered) knows ``architecture``."""
    import timm

    _register()
    if not timm.is_model(architecture):
        raise GuardgenError(f"unknown classifier architecture {architecture!r}; see timm.list_models()")


def create_classifier(architecture: str, **kwargs) -> nn.Module:
    """``timm.create_model(architecture, pretrained=False, **kwargs)``; guardgen's own nets are registered first."""
    import timm

    check_architecture(architecture)
    return timm.create_model(architecture, pretrained=False, **kwargs)


def save_classifier(model: nn.Module, folder: str | Path, *, architecture: str, model_args: dict, extra: dict | None = None) -> Path:
    """Write a timm-style local folder: ``config.json`` (architecture + args) and ``model.safetensors``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(model.state_dict(), folder / "model.safetensors")
    config = {"architecture": architecture, "model_args": model_args, "num_classes": model_args.get("num_classes")}
    config.update(extra or {})
    save_json(config, folder / "config.json")
    return folder


def load_classifier(folder: str | Path, *, device: str | torch.device = "cpu", allow_pickle: bool = False) -> nn.Module:
    """Load a classifier folder (``config.json`` with ``architecture`` + a weight file), in eval mode."""
    folder = Path(folder)
    config = load_json(folder / "config.json")
    if not isinstance(config, dict) or "architecture" not in config:
        raise GuardgenError(f"{folder}/config.json names no 'architecture'; not a classifier folder")
    architecture = config["architecture"]
    if not isinstance(architecture, str) or not architecture.strip():
        raise GuardgenError(f"{folder}/config.json: 'architecture' must be a timm model name, found {architecture!r}")
    model_args = config.get("model_args") or {}
    if not isinstance(model_args, dict):
        raise GuardgenError(f"{folder}/config.json: 'model_args' must be an object of keyword arguments, "
                            f"found a {type(model_args).__name__}")
    args = dict(model_args)
    if "num_classes" not in args and config.get("num_classes") is not None:
        args["num_classes"] = config["num_classes"]
    weights = sorted(folder.glob("*.safetensors"), key=lambda p: (p.name != "model.safetensors", p.name)) or sorted(
        p for p in folder.iterdir() if p.suffix in (".pt", ".pth", ".bin"))
    if not weights:
        raise GuardgenError(f"{folder}: no weight file (model.safetensors) beside config.json")
    check_architecture(architecture)  # before the weights are read
    state = load_state_dict(weights[0], allow_pickle=allow_pickle)
    import warnings

    try:
        with warnings.catch_warnings():  # a zero width is refused below, by the weights; not a warning first
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
            model = create_classifier(architecture, **args)
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as err:
        raise GuardgenError(f"{folder}/config.json: model_args do not build {architecture} "
                            f"({str(err).splitlines()[0] if str(err) else err.__class__.__name__})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise GuardgenError(f"{weights[0]}: weights do not fit {architecture} built from config.json ({mismatch(err)})") from None
    return model.to(device).eval()


@torch.no_grad()
def classifier_features(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Pooled pre-logit features of a timm-style model: (N, C, H, W) -> (N, num_features)."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device)
        out.append(model.forward_head(model.forward_features(x), pre_logits=True).float().cpu())
    return torch.cat(out)
