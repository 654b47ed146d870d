"""OMAT: on-manifold adversarial training of an AIGC detector (Zhou et al., NeurIPS 2025, arXiv 2506.00874).

A detector trained on one diffusion generator learns shortcuts tied to the initial noise z_T. OMAT finds
fakes the detector misses by optimising z_T under fixed conditioning (``attacks.on_manifold``) and adds
them to the fake class; the architecture does not change. Schedule (the pool size and refresh are our
choices; the paper's mixing ratio could not be confirmed):

1. a standard detector is trained on real vs the generator's fakes (or one is passed in);
2. an *offline pool*: ``pool_size`` fresh latents are attacked against that detector; every attacked
   image (a genuine output of the generator) is labelled fake;
3. the detector is warm-started and trained on real vs (fakes + pool) in rounds of ``refresh_every``
   epochs, at a fine-tuning rate (a quarter of the detector's lr, each round on the detector's own
   schedule; at the full rate the zoo detector lost 2.7 points of clean accuracy); before each later
   round, ``refresh_size`` new latents are attacked against the *current* detector and added to the pool
   (``refresh_every = 0``: offline pool only).

Latent attacks as well (our extension, issue 9): with ``gans`` (GAN generators) passed to ``fit``, part of every
pool comes from ``attacks.latent_evasion`` searches of their latent spaces against the same detector
(hyperparameters in ``latent_attack``); with ``pipe=None`` the pools are latent attacks only. Each attack round
splits its images evenly over the sources (the diffusion pipeline first, then each GAN).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from attacks.latent_evasion import LatentEvasion
from attacks.on_manifold import OnManifoldAttack
from detectors import DETECTORS
from detectors.detector import Detector
from guardgen.checkpoint import check_resumable, load_safetensors, save_safetensors, settings_record
from guardgen.errors import GuardgenError
from guardgen.registry import NonNegFloat, NonNegInt, PositiveInt, Seed, check_settings
from guardgen.utils import Callback

__all__ = ["OMAT", "generator_conditions"]


def generator_conditions(pipe, n: int, seed: int = 0) -> list:
    """``n`` conditions spread over a pipeline's concepts: class ids, or the prompts stored with a text model."""
    from guardgen.models.conditioning import conditioning_for

    cond = conditioning_for(pipe)
    g = torch.Generator().manual_seed(seed)
    if cond.kind == "class":
        return torch.randint(0, cond.num_classes, (n,), generator=g).tolist()
    prompts = getattr(pipe.config, "prompts", None) or {}
    phrases = [p[0] for _, p in sorted(prompts.items(), key=lambda kv: int(kv[0]))] if prompts else ["a photo"]
    return [phrases[i] for i in torch.randint(0, len(phrases), (n,), generator=g).tolist()]


@DETECTORS.register("omat")
@dataclass(kw_only=True)
class OMAT:
    """``OMAT(detector={...}, attack={...}).fit(real, fake, pipe=...)``; the trained detector is ``detector_``."""

    detector: dict = field(default_factory=dict)  # Detector hyperparameters (backbone, mode, epochs of the base, ...)
    attack: dict = field(default_factory=dict)  # OnManifoldAttack hyperparameters used to build the pool
    latent_attack: dict = field(default_factory=dict)  # LatentEvasion hyperparameters for the GANs passed to fit
    epochs: NonNegInt = 6  # adversarial-training epochs (after the base detector)
    pool_size: NonNegInt = 128  # offline pool, attacked against the base detector
    refresh_every: NonNegInt = 2  # epochs between pool refreshes against the current detector (0: offline only)
    refresh_size: NonNegInt = 32
    keep: str = "all"  # "all" attacked images join the pool, or only the "success"ful ones
    pool_repeat: PositiveInt = 1  # how many times the pool is repeated in the fake class (up-weighting)
    lr: NonNegFloat = 0.0  # learning rate of the adversarial rounds (0: a quarter of the detector's, a fine-tuning rate)
    seed: Seed = 0

    def _validate_params(self) -> None:
        check_settings(self, name="omat")
        if self.keep not in ("all", "success"):
            raise GuardgenError(f"omat: keep must be all or success, got {self.keep!r}")
        for name, cls, kw in (("attack", OnManifoldAttack, self.attack), ("latent_attack", LatentEvasion, self.latent_attack)):
            try:  # the attacks run after the base detector: their settings are checked before it trains
                cls(**kw)._validate_params()
            except TypeError as err:
                raise GuardgenError(f"omat {name}: unknown setting among {sorted(kw)} ({err})") from None
            except GuardgenError as err:
                raise GuardgenError(f"omat {name}: {err}") from None

    def _attack(self, sources: list, detector: Detector, n: int, seed: int, callback, stage: str):
        """``n`` adversarial fakes against ``detector``, split evenly over ``sources`` [("pipe" | "gan i", model)]."""
        cb = None if callback is None else (lambda s, logs: callback(s, {**logs, "stage": stage}))
        out = []
        for i, (kind, model) in enumerate(sources):
            m = n // len(sources) + (i < n % len(sources))
            if m == 0:
                continue
            if kind == "pipe":
                attack = OnManifoldAttack(**{**self.attack, "seed": seed})
                res = attack.attack(model, detector.as_module(), generator_conditions(model, m, seed=seed), callback=cb)
                images, success, summary = res.images, res.success, res.summary()
            else:
                attack = LatentEvasion(**{"threshold": detector.threshold, **self.latent_attack, "seed": seed + i})
                res = attack.attack(model, [detector], m, callback=cb)
                images, success = res.images, res.success.all(1)
                summary = {"n": m, "success_rate": float(success.float().mean()), "mean_drift": float(res.drift.mean()),
                           "seconds": round(res.seconds, 2)}
            out.append(images if self.keep == "all" else images[success])
            self.attack_log_.append({"stage": stage, "source": kind, **summary})
        return torch.cat(out) if out else torch.empty(0, *_detector_shape(detector))

    def fit(self, real: torch.Tensor, fake: torch.Tensor, *, pipe=None, gans=(), base: Detector | None = None,
            callback: Callback | None = None, state_dir: str | Path | None = None, resume: bool = False) -> "OMAT":
        """real, fake: (N, C, H, W) in [0, 1]; ``pipe`` the diffusers pipeline that made ``fake`` (its z_T is attacked);
        ``gans``: GAN generators whose latent spaces are attacked as well (``attacks.latent_evasion``).

        ``base`` is a trained standard detector to start from (else one is trained with ``detector``).
        With ``state_dir``, the pool and the detector are saved there after the offline pool and after each
        round (a round's own training state as well, every ``checkpoint_every`` steps of the detector), and
        removed at the end; ``resume=True`` continues from them as an uninterrupted run would (the same data,
        generators, settings and base). A refresh attack cut short is made again, from its own seed.
        """
        self._validate_params()
        from attacks.latent_spaces import latent_space
        from attacks.on_manifold import _needs_diffusion

        gans = list(gans or [])
        if pipe is not None or not gans:
            _needs_diffusion(pipe)
        sources = ([("pipe", pipe)] if pipe is not None else []) + [(f"gan {i}", latent_space(g)) for i, g in enumerate(gans)]
        self.attack_log_, t0 = [], time.perf_counter()
        state_dir = None if state_dir is None else Path(state_dir)
        if state_dir is not None and not resume and state_dir.exists():
            shutil.rmtree(state_dir)
        if base is None:
            base = Detector(**{**self.detector, "seed": self.seed})
            if resume and state_dir is not None and (state_dir / "base" / "state.json").is_file():
                base.load_state(state_dir / "base", real)
            else:
                base.fit(real, fake, callback=_stage(callback, "base"), resume=resume,
                         state_dir=None if state_dir is None else state_dir / "base-fit")
                if state_dir is not None:
                    base.save_state(state_dir / "base")
        self.base_ = base
        det = base.clone()
        det.warm_start = True
        det.lr = self.lr or det.lr / 4
        det.epochs = self.refresh_every or self.epochs
        done, round_ = 0, 0

        def save_round() -> None:  # the pool first: a state never names more pool than is on disk
            save_safetensors({"pool": pool}, state_dir / "pool.safetensors")
            det.save_state(state_dir / "round", extra={"done": done, "round": round_, "pool": len(pool), "attack_log": self.attack_log_,
                                                        "seconds": time.perf_counter() - t0, "settings": settings_record(self)})

        if resume and state_dir is not None and (state_dir / "round" / "state.json").is_file():
            extra = det.load_state(state_dir / "round", real)
            check_resumable(extra["settings"], settings_record(self), state_dir)
            done, round_, self.attack_log_ = extra["done"], extra["round"], extra["attack_log"]
            t0 -= extra["seconds"]  # train_seconds_ counts the time before the interruption too
            pool = load_safetensors(state_dir / "pool.safetensors")["pool"][: extra["pool"]]
        else:
            pool = self._attack(sources, base, self.pool_size, self.seed + 1_000, callback, "offline pool")
            if state_dir is not None:
                save_round()
        while done < self.epochs:
            if round_ > 0 and self.refresh_size > 0:
                new = self._attack(sources, det, self.refresh_size, self.seed + 2_000 + round_, callback, f"refresh {round_}")
                pool = torch.cat([pool, new])
            det.epochs = min(det.epochs, self.epochs - done)
            fakes = torch.cat([fake] + [pool] * self.pool_repeat) if len(pool) else fake
            det.fit(real, fakes, callback=_stage(callback, f"train round {round_ + 1}"), resume=resume,
                    state_dir=None if state_dir is None else state_dir / "round-fit")
            done += det.epochs
            round_ += 1
            if state_dir is not None and done < self.epochs:  # after the last round the state is removed
                save_round()
        det.warm_start, det.lr = False, base.lr
        self.pool_ = pool
        self.detector_ = det
        self.train_seconds_ = time.perf_counter() - t0
        if state_dir is not None and state_dir.exists():
            shutil.rmtree(state_dir)
        return self

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return self.detector_.predict_proba(images)

    def save_pretrained(self, folder: str | Path, extra: dict | None = None) -> Path:
        """Saves the adversarially trained detector (a :class:`Detector` folder) with the OMAT settings and attack log."""
        from dataclasses import asdict

        info = {"omat": {**asdict(self), "pool": len(self.pool_), "attack_log": self.attack_log_,
                         "train_seconds": self.train_seconds_}}
        return self.detector_.save_pretrained(folder, extra={**info, **(extra or {})})


def _detector_shape(detector: Detector) -> tuple[int, int, int]:
    return (detector.in_chans, detector.input_size, detector.input_size)


def _stage(callback, stage: str):
    return None if callback is None else (lambda s, logs: callback(s, {**logs, "stage": stage}))
