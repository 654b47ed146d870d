"""Diffusion models and pipelines (diffusers): build, save, load, sample.

Loaders return plain diffusers objects: a ``DiffusionPipeline`` for a pipeline folder
(``model_index.json``), a ``UNet2DModel``/``UNet2DConditionModel`` for a model folder (``config.json``
with a ``_class_name``). Weights are read with ``use_safetensors=True`` only.
"""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import torch

from guardgen.checkpoint import atomic_dir, load_json
from guardgen.errors import GuardgenError
from guardgen.models._loading import quiet_loading

__all__ = [
    "class_conditional_unet",
    "load_diffusion",
    "save_pipeline",
    "sample_class_conditional",
    "sample_images",
    "with_unet",
    "DIFFUSERS_MODEL_CLASSES",
]

DIFFUSERS_MODEL_CLASSES = ("UNet2DModel", "UNet2DConditionModel", "AutoencoderKL", "VQModel", "Transformer2DModel")


def class_conditional_unet(
    *,
    resolution: int = 16,
    channels: int = 1,
    num_classes: int = 10,
    block_out_channels: tuple[int, ...] = (32, 64, 64),
    layers_per_block: int = 1,
    attention_levels: tuple[bool, ...] | None = None,
    norm_num_groups: int = 8,
):
    """A class-conditional ``UNet2DModel`` with ``num_classes + 1`` class embeddings (the last is the null class).

    Input (B, channels, resolution, resolution) in [-1, 1]; predicts the noise epsilon.
    """
    from diffusers import UNet2DModel

    if attention_levels is None:  # self-attention at the lowest resolution only
        attention_levels = tuple(i == len(block_out_channels) - 1 for i in range(len(block_out_channels)))
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels))
    return UNet2DModel(
        sample_size=resolution, in_channels=channels, out_channels=channels,
        block_out_channels=block_out_channels, layers_per_block=layers_per_block,
        down_block_types=down, up_block_types=up, num_class_embeds=num_classes + 1,
        norm_num_groups=norm_num_groups, attention_head_dim=8,
    )


def save_pipeline(pipe, folder: str | Path) -> Path:
    """``pipe.save_pretrained`` (safetensors) into a fresh folder swapped in atomically.

    For a guardgen pipeline class, its self-contained source is copied in as ``pipeline_guardgen.py``
    and named in ``model_index.json``, so stock ``DiffusionPipeline.from_pretrained(folder)`` loads it.
    """
    import json

    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        if getattr(pipe, "sentence_encoder", None) is not None:  # a pipeline-owned sentence encoder (redaction)
            pipe.sentence_encoder.save(str(tmp / pipe.config.text_encoder_subfolder), safe_serialization=True)
        module = type(pipe).__module__
        if module.startswith("guardgen.models.pipelines"):
            shutil.copyfile(inspect.getsourcefile(type(pipe)), tmp / "pipeline_guardgen.py")
            index = json.loads((tmp / "model_index.json").read_text())
            index["_class_name"] = ["pipeline_guardgen", type(pipe).__name__]
            (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return folder


def load_diffusion(folder: str | Path, *, device: str | torch.device = "cpu", torch_dtype: torch.dtype | None = None):
    """Load a diffusers pipeline folder or model folder from local disk (safetensors only)."""
    with quiet_loading():
        return _load_diffusion(Path(folder), device, torch_dtype)


def _load_diffusion(folder: Path, device, torch_dtype):
    import diffusers

    if not folder.is_dir():
        raise GuardgenError(f"{folder}: no such folder")
    if (folder / "model_index.json").is_file():
        index = load_json(folder / "model_index.json")
        if not isinstance(index, dict):
            raise GuardgenError(f"{folder / 'model_index.json'}: expected a JSON object naming the pipeline's parts, "
                                f"found a {type(index).__name__}")
        cls_name = index.get("_class_name")
        _check_components(folder, index)
        _check_weights(folder)
        try:
            if isinstance(cls_name, list):  # a guardgen pipeline: the installed class, no remote code executed
                pipe = _load_guardgen_pipeline(folder, index, torch_dtype)
            else:
                cls = getattr(diffusers, cls_name or "", None) or diffusers.DiffusionPipeline
                pipe = cls.from_pretrained(folder, use_safetensors=True, local_files_only=True, torch_dtype=torch_dtype)
        except GuardgenError:
            raise
        except (OSError, ValueError, TypeError, AttributeError) as err:  # a config diffusers cannot build from
            raise GuardgenError(f"{folder}: cannot load the pipeline ({_first_line(err)})") from None
        pipe.set_progress_bar_config(disable=True)
        _check_sizes(folder, getattr(pipe, "unet", None))
        return pipe.to(device)
    if (folder / "config.json").is_file():
        config = _config_object(folder / "config.json")
        cls_name = config.get("_class_name")
        if cls_name not in DIFFUSERS_MODEL_CLASSES or not hasattr(diffusers, cls_name):
            raise GuardgenError(f"{folder}: config.json is not a diffusers model ({cls_name or 'no _class_name'})")
        _check_weights(folder)
        try:
            model = getattr(diffusers, cls_name).from_pretrained(folder, use_safetensors=True, local_files_only=True, torch_dtype=torch_dtype)
        except (OSError, ValueError, TypeError, AttributeError) as err:
            raise GuardgenError(f"{folder}: cannot load the model ({_first_line(err)})") from None
        _check_sizes(folder, model)
        return model.to(device).eval()
    raise GuardgenError(f"{folder}: neither model_index.json nor config.json; not a diffusers folder")


def _load_guardgen_pipeline(folder: Path, index: dict, torch_dtype):
    """Build a guardgen pipeline from its component folders (what ``from_pretrained`` would do, minus remote code)."""
    import importlib

    from guardgen.models import pipelines

    cls = getattr(pipelines, index["_class_name"][1], None)
    if cls is None:
        raise GuardgenError(f"{folder}: unknown guardgen pipeline {index['_class_name'][1]!r}; upgrade guardgen")
    kwargs = {}
    for name, value in index.items():
        if name.startswith("_"):
            continue
        if isinstance(value, list) and len(value) == 2 and value[0] is not None:
            try:
                component_cls = getattr(importlib.import_module(value[0]), value[1])
            except (ImportError, AttributeError, TypeError):
                raise GuardgenError(f"{folder / 'model_index.json'}: its {name} is {value[0]}.{value[1]}, which is not "
                                    "installed; restore the file or rebuild the pipeline") from None
            is_model = issubclass(component_cls, torch.nn.Module)
            extra = {"torch_dtype": torch_dtype, "use_safetensors": True} if is_model else {}
            kwargs[name] = component_cls.from_pretrained(folder / name, local_files_only=True, **extra)
        elif not isinstance(value, list):
            kwargs[name] = value
    pipe = cls(**kwargs)
    pipe.register_to_config(_name_or_path=str(folder))  # as from_pretrained records it (pipeline-owned subfolders)
    return pipe


def _check_sizes(folder: Path, model) -> None:
    """A model (the pipeline's UNet) whose config gives its sizes as anything but whole numbers loads, then fails when
    sampled: refuse it."""
    config = getattr(model, "config", None)
    if config is None:
        return
    for key in ("sample_size", "in_channels", "out_channels"):
        value = config.get(key)
        whole = isinstance(value, int) or (isinstance(value, (list, tuple)) and value and all(isinstance(v, int) for v in value))
        if value is not None and (isinstance(value, bool) or not whole):
            raise GuardgenError(f"{folder}: {type(model).__name__} {key} is {value!r}, not a whole number; restore its config.json")


def _config_object(path: Path) -> dict:
    """A component's config file, which must hold a JSON object (diffusers reads a list as a hub id)."""
    config = load_json(path)
    if not isinstance(config, dict):
        raise GuardgenError(f"{path}: expected a JSON object of settings, found a {type(config).__name__}; restore or rebuild it")
    return config


def _check_components(folder: Path, index: dict) -> None:
    """Each part ``model_index.json`` names must be a subfolder with an object config, checked on disk before
    diffusers looks for it (it would ask the hub for a missing one, with retries, and read a list config as a hub id)."""
    for name, value in index.items():
        if name.startswith("_") or not (isinstance(value, list) and len(value) == 2 and value[0] is not None):
            continue
        sub = folder / name
        if not sub.is_dir():
            raise GuardgenError(f"{folder}: model_index.json names a {name} ({value[1]}), but there is no {name}/ folder; "
                                "restore it or rebuild the pipeline")
        for config in ("config.json", "scheduler_config.json"):
            if (sub / config).is_file():
                _config_object(sub / config)
        if (sub / "config.json").is_file() and not any(sub.rglob("*.safetensors")) and not any(
                p.suffix in (".bin", ".pt", ".pth", ".ckpt") for p in sub.rglob("*")):
            raise GuardgenError(f"{sub}: no weights (a .safetensors file) beside its config.json; restore them or rebuild the pipeline")


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else err.__class__.__name__


def _check_weights(folder: Path) -> None:
    """Fail early, in one line, on a truncated or corrupt safetensors file anywhere in the folder, or on integer
    (quantised) weights."""
    from guardgen.checkpoint import check_safetensors

    for path in folder.rglob("*.safetensors"):  # a training state (beside its state.json) holds RNG bytes too
        check_safetensors(path, weights=not (path.parent / "state.json").is_file())
    pickles = [p for p in folder.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    if pickles and not any(folder.rglob("*.safetensors")):
        raise GuardgenError(f"{pickles[0]}: only pickle weights here; guardgen loads safetensors (convert the folder first)")


def sample_class_conditional(
    pipe,
    class_labels: torch.Tensor,
    *,
    num_inference_steps: int = 50,
    guidance_scale: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
) -> torch.Tensor:
    """Sample (N, C, H, W) images in [0, 1] for (N,) class labels; see :func:`sample_images`."""
    return sample_images(pipe, torch.as_tensor(class_labels, dtype=torch.long), num_inference_steps=num_inference_steps,
                         guidance_scale=guidance_scale, seed=seed, batch_size=batch_size)


@torch.no_grad()
def sample_images(
    pipe,
    conditions,
    *,
    num_inference_steps: int = 50,
    guidance_scale: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
    height: int | None = None,
) -> torch.Tensor:
    """(N,) class ids or N prompts -> (N, C, H, W) images in [0, 1], for any guardgen or Stable Diffusion pipeline.

    One-step pipelines ignore ``num_inference_steps`` and ``guidance_scale``. Reproducible from ``seed``.
    """
    conditions = list(conditions.tolist() if isinstance(conditions, torch.Tensor) else conditions)
    text = bool(conditions) and isinstance(conditions[0], str)
    name = type(pipe).__name__
    out = []
    for i in range(0, len(conditions), batch_size):
        chunk = conditions[i : i + batch_size]
        g = torch.Generator().manual_seed(seed * 7919 + i)
        if name == "OneStepPipeline":
            kwargs = {"prompt": chunk} if text else {"class_labels": chunk}
            images = pipe(**kwargs, generator=g).images
        elif text:
            kwargs = {"height": height, "width": height} if height and name.startswith("StableDiffusion") else {}
            images = pipe(prompt=chunk, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                          generator=g, output_type="pt", **kwargs).images
        else:
            images = pipe(chunk, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                          generator=g, output_type="pt").images
        out.append(torch.as_tensor(images).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def with_unet(pipe, unet):
    """A shallow copy of ``pipe`` whose ``unet`` is replaced (the scheduler, VAE and text encoder are shared),
    moved beside ``pipe``'s UNet so that the new pipeline runs on one device."""
    import copy

    new = copy.copy(pipe)
    new.register_modules(unet=unet.to(pipe.unet.device))
    return new
