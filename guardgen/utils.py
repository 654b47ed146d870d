"""Small shared helpers: seeding, the accelerator, and a batched predict."""

from __future__ import annotations

import os
import platform
import random
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np
import torch

__all__ = ["seed_everything", "make_accelerator", "model_device", "prepare", "fused", "machine_info", "Callback", "predict_logits"]

Callback = Callable[[int, dict], None]


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU ``torch.Generator`` seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def make_accelerator(device: str = "auto", mixed_precision: str = "no", gradient_accumulation_steps: int = 1):
    """An ``accelerate.Accelerator``: ``device="cpu"`` forces the CPU, ``"auto"`` takes a GPU when present.

    Started under ``accelerate launch`` or ``torchrun`` it joins the process group (gloo on CPU, NCCL on
    GPUs), so the same loop runs on one CPU, one GPU or many processes.

    accelerate keeps one state per process and refuses a second ``Accelerator`` with another precision or device
    (a bf16 fit, then a full-precision one). In a single process nothing else holds that state once a fit has
    returned, so it is started again; across processes the launcher's settings stand and a clash is an error.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    from guardgen.errors import GuardgenError

    check_device(device, mixed_precision)
    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if cpu and mixed_precision == "fp16":
        mixed_precision = "no"  # fp16 autocast is a GPU feature; bf16 works on CPU
    try:
        return Accelerator(cpu=cpu, mixed_precision=mixed_precision, gradient_accumulation_steps=gradient_accumulation_steps)
    except ValueError as err:
        if "already been initialized" not in str(err):
            raise
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed or PartialState().num_processes > 1:
            raise GuardgenError(f"cannot switch to device={device!r}, mixed_precision={mixed_precision!r} in this "
                                f"process: {err}") from None
    AcceleratorState._reset_state(reset_partial_state=True)  # one process, no process group: nothing to tear down
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision, gradient_accumulation_steps=gradient_accumulation_steps)


def check_device(device: str, mixed_precision: str = "no") -> None:
    """One line for a device this machine does not have or a precision guardgen does not train in."""
    from guardgen.errors import GuardgenError

    if not (device in ("auto", "cpu", "cuda", "mps") or (device.startswith("cuda:") and device[5:].isdigit())):
        raise GuardgenError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    if device == "mps" and not torch.backends.mps.is_available():
        raise GuardgenError("device 'mps': no Apple GPU is available here; use --device cpu (or auto)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GuardgenError(f"device {device!r}: no CUDA GPU is visible here; use --device cpu (or auto)")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise GuardgenError(f"device {device!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    if mixed_precision not in ("no", "fp16", "bf16"):
        raise GuardgenError(f"unknown mixed precision {mixed_precision!r}; use no, fp16 or bf16")


def model_device(device: str = "auto") -> str:
    """Where to load a model for a ``--device`` value: ``"auto"`` is the GPU when one is visible, else the CPU."""
    check_device(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def prepare(acc, *objs):
    """``acc.prepare(*objs)`` that also places modules it has seen before.

    accelerate marks what it prepares and passes a marked module through untouched, also a deep copy of one and one
    moved back to the CPU since: a second ``fit`` on a GPU (a warm start) would then train a CPU module on CUDA
    batches. Each module is moved to ``acc.device`` and unmarked first, so it is placed (and wrapped) again.
    """
    for obj in objs:
        if isinstance(obj, torch.nn.Module):
            obj.to(acc.device)
            obj.__dict__.pop("_is_accelerate_prepared", None)
    return acc.prepare(*objs)


def fused(device: torch.device | str) -> bool:
    """Whether to ask Adam/AdamW for torch's fused step (one kernel over all parameters) on ``device``.

    CPU and CUDA have it. On 2 CPU cores it makes the step on the zoo's 22.7M-parameter sentence encoder
    0.063 s -> 0.008 s; the result matches the default step to float rounding.
    """
    return torch.device(device).type in ("cpu", "cuda")


def machine_info() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "source_commit": source_commit(),
    }
    return info


def source_commit() -> str | None:
    """The git commit of guardgen's source tree, with ``+dirty`` when tracked files have uncommitted changes; None
    when guardgen does not run from a git checkout (an installed wheel) or git is missing. Recorded with every
    benchmark result, so a figure can be traced to the code that measured it."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    git = ["git", "-C", str(root)]
    try:
        head, dirty = (subprocess.run([*git, *args], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
                       for args in (("rev-parse", "--short=12", "HEAD"), ("status", "--porcelain", "--untracked-files=no")))
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` on (N, C, H, W) images, in batches, on the model's device; returns CPU float32."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [model(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)
