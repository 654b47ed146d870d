"""One resolver for model spec strings: ``zoo:NAME``, a local folder, or ``hf:ORG/NAME``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from guardgen.checkpoint import PICKLE_SUFFIXES, load_json
from guardgen.errors import GuardgenError

__all__ = ["ModelRef", "resolve", "folder_kind", "KINDS"]

KINDS = ("pipeline", "diffusion-model", "classifier", "gan")


@dataclass(frozen=True)
class ModelRef:
    """Where a spec points: ``path`` (a local folder), its ``kind`` (one of KINDS) and ``source``."""

    spec: str
    path: Path
    kind: str
    source: str  # "zoo" | "local" | "hf"
    run: dict | None = None  # guardgen run metadata (run.json) when the folder is a guardgen run


def folder_kind(folder: Path) -> str:
    """What model a local folder holds, from its config files (never from unpickling anything)."""
    if (folder / "model_index.json").is_file():
        return "pipeline"
    config_path = folder / "config.json"
    if config_path.is_file():
        config = load_json(config_path)
        if isinstance(config, dict):
            if "gan" in config:
                return "gan"
            if "architecture" in config:
                return "classifier"
            if str(config.get("_class_name", "")).startswith(("UNet", "Autoencoder", "VQ", "Transformer")):
                return "diffusion-model"
            if config.get("_class") == "OpenWorldAttribution":  # guardgen's own attribution and detector folders
                raise GuardgenError(f"{folder}: a guardgen attribution model, not a generative model or classifier; "
                                    "pass it where --attribution or an attribution model is asked for")
            if "detector" in config:
                raise GuardgenError(f"{folder}: a guardgen detector, not a model; pass it where a --detector is asked for")
    run = run_record(folder)
    if run is not None:
        model = run.get("model_path")
        if model and (folder / model).is_dir():
            return folder_kind(folder / model)
    files = ", ".join(sorted(p.name for p in folder.iterdir())[:5]) or "empty"
    raise GuardgenError(
        f"{folder}: not a model folder (no model_index.json, or config.json naming a model; found: {files})"
    )


def run_record(folder: Path) -> dict | None:
    """A run folder's ``run.json`` (None without one), checked: an object whose ``model_path``, if any, is a name."""
    path = folder / "run.json"
    if not path.is_file():
        return None
    run = load_json(path)
    if not isinstance(run, dict):
        raise GuardgenError(f"{path}: expected a JSON object (a guardgen run's record), found a {type(run).__name__}; "
                            "restore it or remove it")
    if run.get("model_path") is not None and not (isinstance(run["model_path"], str) and run["model_path"].strip()):
        raise GuardgenError(f"{path}: 'model_path' must name the run's model subfolder, found {run['model_path']!r}")
    return run


def _hf_path(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: try the hub unless offline
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if not offline:
        try:
            return Path(snapshot_download(repo_id, etag_timeout=5, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
        except Exception:  # noqa: BLE001 - any network failure ends in the one-line message below
            pass
    raise GuardgenError(
        f"hf:{repo_id} is not cached and the hub cannot be reached (offline); download it where there is "
        f"network (`hf download {repo_id} --local-dir DIR`) and pass the local folder DIR instead"
    )


def resolve(spec: str) -> ModelRef:
    """Resolve a spec string to a local folder and the kind of model in it."""
    spec = str(spec).strip()
    if not spec:
        raise GuardgenError("empty model spec; use zoo:NAME, a local folder, or hf:ORG/NAME")
    if spec.startswith("zoo:"):
        from guardgen.zoo import zoo_path

        path, source = zoo_path(spec[4:]), "zoo"
    elif spec.startswith("hf:"):
        path, source = _hf_path(spec[3:]), "hf"
    else:
        path, source = Path(spec).expanduser(), "local"
        if not path.exists():
            hint = " (for a built-in model use zoo:NAME)" if ":" not in spec and "/" not in spec else ""
            raise GuardgenError(f"{spec}: no such file or folder{hint}")
        if path.is_file():
            if path.suffix in PICKLE_SUFFIXES:
                raise GuardgenError(
                    f"{spec}: a pickle file is not a model folder; guardgen never unpickles checkpoints by default "
                    "(convert it to a folder with config.json + .safetensors)"
                )
            raise GuardgenError(f"{spec}: a file, not a model folder; pass the folder that holds config.json")
    run = run_record(path)
    return ModelRef(spec=spec, path=path, kind=folder_kind(path), source=source, run=run)
