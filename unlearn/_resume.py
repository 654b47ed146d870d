"""Checkpoints for the fine-tuning loops of the unlearning baselines (ESD, GA, redaction): ``out/training_state``.

A loop asks :meth:`LoopState.start` for its first step (restoring weights, optimiser, random state and history
when resuming), calls :meth:`LoopState.save` after every step (it writes every ``checkpoint_every`` steps) and
:meth:`LoopState.finish` at the end. The state records the method's settings, and a resume under other settings
is refused: by :func:`check_state`, which a method calls before its slow setup, and again by :meth:`LoopState.start`. Per-step draws in these loops come from generators seeded by (seed, step), the global torch state is
saved by ``save_training_state``, and a loop with a sequential ``random.Random`` passes it in.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

from torch import nn

from guardgen.checkpoint import (check_training_state, fingerprint, load_training_state, save_training_state,
                                 settings_record)

__all__ = ["LoopState", "check_state", "method_settings", "set_task"]


def method_settings(method) -> dict:
    """What a resumed run must share with the interrupted one: the settings, not where it runs or how often it saves,
    and the task :func:`set_task` recorded (what is forgotten, from which model)."""
    return {**settings_record(method, skip=("device", "mixed_precision", "checkpoint_every")),
            **getattr(method, "resume_task_", {})}


def set_task(method, model: nn.Module, **conditions) -> None:
    """Record on ``method`` what a fit does (``conditions``: forget, retain, override, ...; ``model``: the network it
    starts from), so that a saved state is resumed only for the same task: a state that forgot another concept,
    or came from another model, is refused like one saved under other settings."""
    import json

    task = {k: json.loads(json.dumps(list(v) if isinstance(v, (list, tuple)) else v, default=str)) for k, v in conditions.items()}
    method.resume_task_ = {**task, "model": fingerprint(model)}


def check_state(method, out, resume: bool, name: str = "training_state") -> None:
    """Before any slow work: refuse to resume a state in ``out/name`` saved under other settings or for another task
    (:func:`set_task`), naming what differs. Nothing to resume, or no ``resume``: nothing to check."""
    state = None if out is None else Path(out) / name
    if resume and state is not None and (state / "state.json").is_file():
        check_training_state(state, method_settings(method))


class LoopState:
    """``LoopState(method, out, resume)``; ``method`` has ``checkpoint_every``, ``history_`` and, unless
    ``iterations`` is given (a loop of a multi-stage method, saved under ``name``), ``iterations``."""

    def __init__(self, method, out, resume: bool, *, name: str = "training_state", iterations: int | None = None):
        self.method = method
        self.dir = None if out is None else Path(out) / name
        self.resume = resume
        self.iterations = method.iterations if iterations is None else iterations
        self.settings = method_settings(method)
        self.t0 = time.perf_counter()

    def start(self, modules: dict[str, nn.Module], optimizers: dict, rng: random.Random | None = None) -> int:
        """The first step to run: 1, or the one after the saved step, with everything restored."""
        self.t0 = time.perf_counter()
        if self.dir is None:
            return 1
        if not (self.resume and (self.dir / "state.json").is_file()):
            if self.dir.exists():
                shutil.rmtree(self.dir)
            return 1
        step, extra = load_training_state(self.dir, modules=modules, optimizers=optimizers, settings=self.settings)
        if rng is not None:
            version, internal, gauss = extra["python_rng"]
            rng.setstate((version, tuple(internal), gauss))
        self.method.history_ = extra["history"]
        self.t0 -= extra["seconds"]
        return step + 1

    def save(self, step: int, modules: dict[str, nn.Module], optimizers: dict, rng: random.Random | None = None) -> None:
        """After ``step``: the state, every ``checkpoint_every`` steps (not after the last one)."""
        if self.dir is None or step % self.method.checkpoint_every or step >= self.iterations:
            return
        save_training_state(self.dir, step=step, modules=modules, optimizers=optimizers,
                            extra={"settings": self.settings, "history": self.method.history_, "seconds": self.seconds(),
                                   "python_rng": None if rng is None else rng.getstate()})

    def seconds(self) -> float:
        """Training time so far, the interrupted run's included."""
        return time.perf_counter() - self.t0

    def finish(self) -> None:
        if self.dir is not None and self.dir.exists():
            shutil.rmtree(self.dir)
