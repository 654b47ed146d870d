"""Section 1, provenance: what the checkpoint is, where it came from, and what guardgen did to it."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from guardgen.audit._base import Section

__all__ = ["provenance_section", "sha256_file", "tensor_sha256"]

LIMITATIONS = [
    "Hashes identify the files audited, not how they were trained: lineage is what guardgen recorded in run metadata "
    "and cannot be verified from the weights.",
    "Licences and the training-data manifest are reported only where the model folder records them.",
]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def tensor_sha256(x) -> str:
    """sha256 of a tensor's bytes (float32, contiguous): a fingerprint of a dataset."""
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(x.float().cpu().numpy()).tobytes()).hexdigest()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance_section(subject, *, config, train_description: str | None, train_hash: str | None, original=None) -> Section:
    """Hashes of every file of the model, architecture, parameter count, lineage, versions, seeds, machine."""
    import torch

    from guardgen import __version__
    from guardgen.utils import machine_info

    files = [{"file": str(p.relative_to(subject.path)), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in subject.weight_files()]
    combined = hashlib.sha256("".join(f["file"] + f["sha256"] for f in files).encode()).hexdigest()
    dtypes = sorted({str(p.dtype) for m in _modules(subject) for p in m.parameters()})
    lineage = {"kind": "original"}
    if subject.run:
        lineage = {"kind": "guardgen run", "method": subject.run.get("method"), "original_model": subject.run.get("original_model"),
                   "forgotten": subject.run.get("forget"), "override": subject.run.get("override"),
                   "hyperparameters": subject.run.get("hyperparameters"), "seed": subject.run.get("seed"),
                   "guardgen_version": subject.run.get("guardgen_version"),
                   "original_found": original is not None}
    elif subject.meta.get("zoo"):
        lineage = {"kind": "zoo model", "zoo": subject.meta.get("zoo"), "train_config": subject.meta.get("train_config"),
                   "rebuild": f"guardgen zoo build {subject.meta.get('zoo')}"}
    figures = {
        "spec": subject.spec,
        "path": str(subject.path),
        "model_kind": subject.kind,
        "conditioning": subject.cond_kind,
        "image_shape": list(subject.image_shape),
        "parameters": subject.parameter_count(),
        "dtypes": dtypes,
        "sha256": combined,
        "files": files,
        "architecture": subject.architecture(),
        "lineage": lineage,
        "training_data": train_description,
        "training_data_sha256": train_hash,
        "guardgen_version": __version__,
        "guardgen_commit": _git_commit(),
        "torch_version": torch.__version__,
        "seed": config.seed,
        "sampling": {"num_inference_steps": config.num_inference_steps if subject.kind == "diffusion" else 1,
                     "guidance_scale": subject.guidance_scale},
        "machine": {**machine_info(), "node": platform.node()},
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    table = [{"file": f["file"], "bytes": f["bytes"], "sha256": f["sha256"][:16] + "..."} for f in files]
    return Section(name="provenance", figures=figures, tables={"files": table}, limitations=LIMITATIONS)


def _modules(subject):
    if subject.kind == "gan":
        return [m for m in subject.model if m is not None]
    return [getattr(subject.model, n) for n in ("unet", "vae", "text_encoder") if getattr(subject.model, n, None) is not None]
