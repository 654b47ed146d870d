"""Worst-case forget sets. Fan, Liu, Hero and Liu, "Challenging Forgets: Unveiling the Worst-Case Forget
Sets in Machine Unlearning", ECCV 2024.

Which m training samples (or classes) are hardest to unlearn? Relax the forget-set indicator to weights
w on the capped simplex {0 <= w <= 1, sum w = m} and solve the bi-level problem
    min_w  sum_i w_i l_i(theta_u(w)) + gamma ||w||^2,   theta_u(w) = unlearning with per-sample forget weights w,
by alternating: reset theta to the original model, take ``inner_steps`` sign-SGD steps on the method's
weighted loss (lower level; by default one pass over the data, as the official code runs whole epochs),
then one projected gradient step on w with the per-sample losses l_i as the gradient (the implicit term
through theta_u is dropped, as in the paper), and harden to the top m at the end (and every
``harden_every`` iterations). ``reverse=True`` ascends instead: the easiest set to forget.

The paper's upper-level signal (``upper_signal="loss"``) picks the samples the unlearned model still fits
best. Those are the most typical ones, which a retrained model fits just as well, so the set is hard to
forget but exposes no gap to retraining for methods that only fine-tune (measured in bench/worst_case.py).
``upper_signal="gap"`` (a guardgen variant) aims at the evaluation's own metric instead: the per-sample
signal is ``-|l_i(theta_u(w)) - r_i|``, where ``r_i`` is the loss of a reference model that never saw sample
i (a retraining stand-in: ``reference_folds`` models, each trained from scratch with the ``reference``
recipe on all data but one fold, computed once before the search). It selects the samples on which the
unlearned model departs most from retraining, in either direction: memorised samples that fine-tuning keeps
fitting, typical samples that relabeling over-forgets.

The unlearning method is passed in (``attacks`` never imports ``unlearn``):
- classifiers: an object with ``per_sample_loss(logits, labels, w, generator)`` (guardgen's ``ft``, ``rl``,
  ``ga_classifier``, ``l1_sparse``, ``salun``; optional ``penalty(model, progress)`` and
  ``lower_level_mask(model, images, labels, w)``), or such a function;
- diffusion models (:meth:`WorstCaseForget.fit_diffusion`, class-wise): an object with
  ``per_sample_denoising_loss(mse, w)`` or a function ``(mse, w) -> per-sample loss``, e.g. gradient ascent
  ``-w * mse + (1 - w) * mse``; the upper-level signal is each class's denoising loss after unlearning.
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attacks import ATTACKS
from guardgen.checkpoint import (atomic_dir, check_resumable, fingerprint, load_json, load_safetensors, save_json,
                                 save_safetensors, settings_record)
from guardgen.errors import GuardgenError
from guardgen.registry import NonNegFloat, NonNegInt, PositiveFloat, PositiveInt, Seed, check_settings
from guardgen.utils import Callback, make_accelerator

__all__ = ["WorstCaseForget", "project_capped_simplex"]


def project_capped_simplex(a, m: float, iterations: int = 100) -> torch.Tensor:
    """Euclidean projection of ``a`` onto {w : 0 <= w <= 1, sum w = m}: w = clip(a - mu, 0, 1), mu by bisection."""
    a = torch.as_tensor(a, dtype=torch.float64)
    if not 0 <= m <= len(a):
        raise GuardgenError(f"the capped simplex needs 0 <= m <= {len(a)}, got m={m}")
    lo, hi = float(a.min()) - 1.0, float(a.max())  # sum(clip(a - lo)) = n >= m >= 0 = sum(clip(a - hi))
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if float((a - mid).clamp(0, 1).sum()) > m:
            lo = mid
        else:
            hi = mid
    return (a - 0.5 * (lo + hi)).clamp(0, 1)


def _top(weights: torch.Tensor, losses: torch.Tensor, m: int, reverse: bool) -> torch.Tensor:
    """The m largest weights; ties (e.g. weights clipped at 1) go to the lower loss (higher when reversed)."""
    tie = losses.double() if not reverse else -losses.double()
    order = np.lexsort((tie.numpy(), -weights.double().numpy()))
    return torch.as_tensor(np.sort(order[:m]), dtype=torch.long)


def _form(method, attribute: str):
    if callable(getattr(method, attribute, None)):
        return getattr(method, attribute)
    if callable(method):
        return method
    raise GuardgenError(f"the unlearning method must define {attribute}(...) or be a function; got {type(method).__name__}")


@ATTACKS.register("worst_case_forget")
@dataclass(kw_only=True)
class WorstCaseForget:
    size: int  # m: samples (mode "data") or classes (mode "class") in the forget set
    mode: Literal["data", "class"] = "data"
    reverse: bool = False  # True: the easiest set to forget
    iterations: PositiveInt = 10  # upper-level steps
    inner_steps: NonNegInt | None = None  # lower-level sign-SGD steps per upper step, from the original each time (None: one pass)
    theta_lr: PositiveFloat = 1e-4  # sign steps move every weight by this much: 1e-3 over a pass wrecks a small model (GA loss 5-8)
    w_lr: PositiveFloat = 0.01
    gamma: NonNegFloat = 0.0
    harden_every: NonNegInt = 0  # also harden w to the top m every k iterations (0: only at the end)
    batch_size: PositiveInt = 256
    eval_per_class: PositiveInt = 32  # diffusion: images per class for the upper-level denoising loss
    upper_signal: Literal["loss", "gap", "ratio"] = "loss"  # "loss" (the paper's); classifiers: "gap" (vs a held-out reference); diffusion: "ratio"
    reference_folds: int = 2  # upper_signal="gap": reference models, each holding out one fold of the selection units
    seed: Seed = 0
    device: str = "auto"
    history_: list = field(default_factory=list, init=False, repr=False)

    def check_size(self, n: int, what: str) -> None:
        """One-line error unless the settings are valid and 1 <= size < n (``n`` samples or classes)."""
        check_settings(self)
        if not 1 <= self.size < n:
            raise GuardgenError(f"forget-set size {self.size} must be between 1 and {n - 1}: the data has {n} {what}")
        if self.iterations < 1 or (self.inner_steps is not None and self.inner_steps < 0):
            raise GuardgenError("worst-case forget needs iterations >= 1 and inner_steps >= 0")

    def _batches(self, n: int, generator: torch.Generator) -> list[torch.Tensor]:
        """The lower level's minibatches: ``inner_steps`` of them (None: one pass), walking through reshuffles of n."""
        b = min(self.batch_size, n)
        steps = -(-n // b) if self.inner_steps is None else self.inner_steps
        order = torch.cat([torch.randperm(n, generator=generator) for _ in range(-(-steps * b // n))] or [torch.zeros(0, dtype=torch.long)])
        return [order[k * b : (k + 1) * b] for k in range(steps)]

    def _upper_step(self, w: torch.Tensor, losses: torch.Tensor, it: int) -> tuple[torch.Tensor, torch.Tensor]:
        grad = losses.double() + 2 * self.gamma * w
        w = project_capped_simplex(w + self.w_lr * grad if self.reverse else w - self.w_lr * grad, self.size)
        top = _top(w, losses, self.size, self.reverse)
        if self.harden_every and it % self.harden_every == 0 and it < self.iterations:
            w = torch.zeros_like(w)
            w[top] = 1.0
        return w, top

    def _log(self, it: int, w: torch.Tensor, losses: torch.Tensor, top: torch.Tensor, callback, extra=None) -> None:
        logs = {"objective": float((w * losses.double()).sum()), "selected_loss": float(losses[top].mean()),
                "mean_loss": float(losses.mean()), **(extra or {})}
        self.history_.append({"iteration": it, **logs})
        if callback is not None:
            callback(it, {"total": self.iterations, **logs})

    def _restore(self, state_dir: Path | None, resume: bool, g: torch.Generator, n_w: int) -> dict | None:
        """The search state over ``n_w`` selection units to continue from (tensors, ``iteration``, ``seconds``), or None;
        a state not resumed is removed."""
        if state_dir is None:
            return None
        if not (resume and (state_dir / "state.json").is_file()):
            if state_dir.exists():
                shutil.rmtree(state_dir)
            return None
        meta, state = self._read_saved(state_dir, "state", "search", "w", n_w)
        g.set_state(state.pop("generator"))
        torch.set_rng_state(state.pop("torch_rng"))
        self.history_ = meta["history"]
        return {**state, "iteration": meta["iteration"], "seconds": meta["seconds"]}

    def set_task(self, model: nn.Module, method, reference=None) -> None:
        """Record the model searched and the methods used (lower level, ``reference``), which a resume must share
        with the interrupted search as it shares the settings; :meth:`fit` and :meth:`load_result` call it."""
        def describe(obj):
            if obj is None:
                return None
            if isinstance(obj, torch.Tensor):
                return f"losses, checksum {float(obj.double().sum()):.6g}"
            settings = settings_record(obj, skip=("device", "mixed_precision")) if is_dataclass(obj) else {}
            return {"method": type(obj).__name__, **settings}

        self.resume_task_ = {"model": fingerprint(model), "method": describe(method), "reference": describe(reference)}

    def _settings(self) -> dict:
        return {**settings_record(self, skip=("device",)), **getattr(self, "resume_task_", {})}

    def _read_saved(self, folder: Path, meta_name: str, tensors_name: str, key: str, n: int) -> tuple[dict, dict]:
        """``folder``'s ``META.json`` and ``TENSORS.safetensors``, refused if saved under other settings or if ``key``
        does not run over ``n`` samples (or classes)."""
        meta = load_json(folder / f"{meta_name}.json")
        if not isinstance(meta, dict) or "settings" not in meta:
            raise GuardgenError(f"{folder}: not a saved worst-case search (another command's state?); start again "
                                "without --resume, or pass another --out")
        check_resumable(meta["settings"], self._settings(), folder)
        tensors = load_safetensors(folder / f"{tensors_name}.safetensors")
        if len(tensors[key]) != n:
            raise GuardgenError(f"{folder}: the saved search ran over {len(tensors[key])} samples or classes, this data has "
                                f"{n}; resume with the data of the interrupted run, or start again without --resume")
        return meta, tensors

    def _checkpoint(self, state_dir: Path | None, it: int, g: torch.Generator, seconds: float, tensors: dict) -> None:
        """After upper step ``it`` (0: before the first): the selection weights, the signal's fixed reference, and the
        random state, as one folder."""
        if state_dir is None:
            return
        with atomic_dir(state_dir) as tmp:
            save_safetensors({**{k: v.detach().clone() for k, v in tensors.items() if v is not None},
                              "generator": g.get_state(), "torch_rng": torch.get_rng_state()}, tmp / "search.safetensors")
            save_json({"iteration": it, "seconds": seconds, "history": self.history_, "settings": self._settings()},
                      tmp / "state.json")

    # -- classifiers ------------------------------------------------------------------------------
    def fit(self, model: nn.Module, data, *, method, reference=None, callback: Callback | None = None,
            state_dir: str | Path | None = None, resume: bool = False) -> "WorstCaseForget":
        """Search the worst-case forget set of ``data = (images, labels)`` (the model's training data).

        ``reference`` (``upper_signal="gap"`` only): how to train the reference from scratch, an object with
        ``fit(model, forget=(x, y), retain=(x, y))`` that sets ``model_`` (guardgen's ``retrain_classifier``;
        use the original model's recipe), or the per-sample reference losses themselves, shape (N,).
        Sets ``indices_`` (selected sample indices, or class ids in class mode), ``sample_indices_``,
        ``weights_`` (the relaxed w before hardening), ``losses_`` (per-sample losses after the last lower level),
        ``sample_signal_`` (the per-sample upper-level signal: ``losses_``, or ``-|losses_ - reference_losses_|``)
        and, with ``upper_signal="gap"``, ``reference_losses_``. With ``state_dir``, the search is saved there after
        the reference losses and after each upper step, and removed at the end; ``resume=True`` continues from it
        (the same model, data, method and settings) to the result of an uninterrupted search.
        """
        check_settings(self)
        if hasattr(data, "images"):
            data = (data.images, data.labels)
        x, y = torch.as_tensor(data[0]).float(), torch.as_tensor(data[1]).long()
        classes = torch.unique(y)
        self.check_size(len(y) if self.mode == "data" else len(classes), "samples" if self.mode == "data" else "classes")
        loss_form = _form(method, "per_sample_loss")
        penalty = getattr(method, "penalty", None)
        masker = getattr(method, "lower_level_mask", None)
        if self.upper_signal not in ("loss", "gap"):
            raise GuardgenError(f"a classifier's upper_signal must be 'loss' or 'gap', not {self.upper_signal!r}")
        self.set_task(model, method, reference)
        acc = make_accelerator(self.device)
        torch.manual_seed(self.seed)  # the lower level's dropout: a search is a function of its seed, as the methods' fits are
        g = torch.Generator().manual_seed(self.seed)
        t0 = time.perf_counter()
        original = {k: v.detach().clone() for k, v in model.state_dict().items()}
        net = copy.deepcopy(model).to(acc.device)
        class_of = torch.searchsorted(classes, y)  # class mode: sample -> position of its class in w
        n_w = len(y) if self.mode == "data" else len(classes)
        state_dir = None if state_dir is None else Path(state_dir)
        self.history_ = []
        state = self._restore(state_dir, resume, g, n_w)
        if state is not None:
            t0 -= state["seconds"]
            ref, w, start = state.get("ref"), state["w"], state["iteration"] + 1
        else:
            ref = self._reference_losses(model, x, y, class_of, n_w, reference) if self.upper_signal == "gap" else None
            w, start = torch.full((n_w,), self.size / n_w, dtype=torch.float64), 1
            self._checkpoint(state_dir, 0, g, time.perf_counter() - t0, {"w": w, "ref": ref})
        for it in range(start, self.iterations + 1):
            sample_w = (w if self.mode == "data" else w[class_of]).float()
            net.load_state_dict(original)
            mi = torch.randperm(len(y), generator=g)[: 4 * self.batch_size]  # the mask from a subsample (cheap)
            mask = masker(net, x[mi], y[mi], sample_w[mi]) if callable(masker) else None
            params = dict(net.named_parameters())
            net.train()
            batches = self._batches(len(y), g)
            for k, idx in enumerate(batches):  # lower level: sign-SGD on the method's weighted loss
                xb, yb, wb = x[idx].to(acc.device), y[idx].to(acc.device), sample_w[idx].to(acc.device)
                loss = loss_form(net(xb).float(), yb, wb, g).mean()
                if callable(penalty):
                    loss = loss + penalty(net, k / len(batches))
                grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
                with torch.no_grad():
                    for (name, p), gr in zip(params.items(), grads):
                        if gr is not None:
                            step = gr.sign() if mask is None or name not in mask else gr.sign() * mask[name]
                            p.sub_(self.theta_lr * step)
            losses = _per_sample_ce(net, x, y, self.batch_size)  # upper level: l_i(theta_u(w))
            sample_signal = losses if ref is None else -(losses - ref).abs()
            signal = sample_signal
            if self.mode == "class":
                signal = torch.zeros(n_w, dtype=torch.float64).index_add_(0, class_of, signal.double()) / torch.bincount(class_of, minlength=n_w)
            w_before = w
            w, top = self._upper_step(w, signal, it)
            self._log(it, w_before, signal, top, callback)
            if it < self.iterations:  # after the last step the search ends, and its state with it
                self._checkpoint(state_dir, it, g, time.perf_counter() - t0, {"w": w, "ref": ref})
        if state_dir is not None and state_dir.exists():
            shutil.rmtree(state_dir)
        self.weights_ = w.float()
        self.losses_ = losses.float()
        self.sample_signal_ = sample_signal.float()
        self.reference_losses_ = ref
        self.indices_ = top if self.mode == "data" else classes[top]
        self.sample_indices_ = top if self.mode == "data" else torch.nonzero(torch.isin(y, classes[top])).flatten()
        self.search_seconds_ = time.perf_counter() - t0
        return self

    _RESULT = ("weights_", "losses_", "sample_signal_", "reference_losses_", "indices_", "sample_indices_")

    def save_result(self, folder: str | Path) -> None:
        """Keep a finished classifier search in ``folder`` (tensors, history, time and settings), so that a run
        stopped after it, in the evaluation, need not search again (:meth:`load_result`)."""
        tensors = {k: getattr(self, k) for k in self._RESULT if isinstance(getattr(self, k, None), torch.Tensor)}
        with atomic_dir(folder) as tmp:
            save_safetensors({k: v.detach().cpu().clone() for k, v in tensors.items()}, tmp / "result.safetensors")
            save_json({"search_seconds": self.search_seconds_, "history": self.history_,
                       "settings": self._settings()}, tmp / "result.json")

    def load_result(self, folder: str | Path, num_samples: int, *, model: nn.Module, method,
                    reference=None) -> "WorstCaseForget":
        """The search :meth:`save_result` kept, refused if it ran under other settings, on another ``model``, with
        other ``method``/``reference`` (as passed to :meth:`fit`) or over data of another size."""
        self.set_task(model, method, reference)
        meta, tensors = self._read_saved(Path(folder), "result", "result", "losses_", num_samples)
        for k in self._RESULT:
            setattr(self, k, tensors.get(k))
        self.search_seconds_, self.history_ = meta["search_seconds"], meta["history"]
        return self

    def _reference_losses(self, model, x, y, class_of, n_w: int, reference) -> torch.Tensor:
        """(N,) per-sample losses of models that never saw the sample: one trained from scratch per fold."""
        if isinstance(reference, (torch.Tensor, np.ndarray)):
            ref = torch.as_tensor(reference, dtype=torch.float32).flatten()
            if len(ref) != len(y) or not torch.isfinite(ref).all():
                raise GuardgenError(f"reference losses must be {len(y)} finite values, one per sample; got {len(ref)}")
            return ref
        if not callable(getattr(reference, "fit", None)):
            raise GuardgenError("upper_signal='gap' needs reference=: a from-scratch trainer (e.g. unlearn's retrain_classifier) "
                                "or the per-sample reference losses")
        if not 2 <= self.reference_folds <= n_w:
            raise GuardgenError(f"reference_folds must be between 2 and {n_w}, got {self.reference_folds}")
        fold_of = torch.empty(n_w, dtype=torch.long)  # selection unit (sample or class) -> fold
        fold_of[torch.randperm(n_w, generator=torch.Generator().manual_seed(self.seed + 7))] = torch.arange(n_w) % self.reference_folds
        if self.mode == "class":
            fold_of = fold_of[class_of]
        ref = torch.empty(len(y))
        for k in range(self.reference_folds):
            out = fold_of == k
            trained = reference.fit(model, forget=(x[out], y[out]), retain=(x[~out], y[~out])).model_
            ref[out] = _per_sample_ce(trained, x[out], y[out], self.batch_size)
        return ref

    # -- diffusion models (class- or prompt-wise) --------------------------------------------------
    def fit_diffusion(self, pipe, data, *, method, callback: Callback | None = None, state_dir: str | Path | None = None,
                      resume: bool = False) -> "WorstCaseForget":
        """Class-wise worst-case selection for a class- or text-conditional diffusion pipeline.

        ``data = (images in [0, 1], conditions)``: conditions are class ids or prompts (one per image); the
        selection is over the distinct conditions. The lower level takes sign-SGD steps on
        ``method``'s per-sample form of the denoising losses with per-condition weights; the upper level
        uses each condition's denoising loss (fixed timesteps and noise) after those steps, or with
        ``upper_signal="ratio"`` that loss divided by the original model's (a guardgen variant: the raw loss
        mostly ranks how hard a class is to denoise at all, e.g. the simple digit 1 lowest).
        Sets ``indices_`` (the selected conditions), ``weights_``, ``losses_`` (per condition) and ``conditions_``.
        ``state_dir``/``resume``: as :meth:`fit`, saved after each upper step.
        """
        check_settings(self)
        from guardgen.models.conditioning import conditioning_for

        if self.mode != "class":
            raise GuardgenError("the diffusion version selects whole classes or prompts: use mode='class'")
        x0 = torch.as_tensor(data[0]).float() * 2 - 1
        conds = list(data[1].tolist() if isinstance(data[1], torch.Tensor) else data[1])
        if len(conds) != len(x0):
            raise GuardgenError(f"{len(x0)} images but {len(conds)} conditions")
        names = sorted(set(conds), key=lambda c: (str(type(c)), c))
        self.check_size(len(names), "conditions")
        of = torch.tensor([names.index(c) for c in conds])
        form = _form(method, "per_sample_denoising_loss")
        cond = conditioning_for(pipe)
        acc = make_accelerator(self.device)
        torch.manual_seed(self.seed)
        g = torch.Generator().manual_seed(self.seed)
        t0 = time.perf_counter()
        unet = copy.deepcopy(pipe.unet).to(acc.device)
        original = {k: v.detach().clone() for k, v in unet.state_dict().items()}
        abar = pipe.scheduler.alphas_cumprod.to(acc.device, torch.float32)
        # the upper level's fixed evaluation set: eval_per_class images of each condition, fixed t and noise
        ge = torch.Generator().manual_seed(self.seed + 1)
        ev = torch.cat([torch.nonzero(of == c).flatten()[torch.randperm(int((of == c).sum()), generator=ge)[: self.eval_per_class]]
                        for c in range(len(names))])
        ev_t = torch.randint(0, len(abar), (len(ev),), generator=ge)
        ev_eps = torch.randn(x0[ev].shape, generator=ge)

        def mse(net, idx, t, eps):
            a = abar[t.to(acc.device)].view(-1, 1, 1, 1)
            x_t = a.sqrt() * x0[idx].to(acc.device) + (1 - a).sqrt() * eps.to(acc.device)
            pred = net(x_t, t.to(acc.device), **cond.embed([conds[i] for i in idx.tolist()], acc.device)).sample
            return (pred.float() - eps.to(acc.device)).pow(2).flatten(1).mean(1)

        def condition_losses():
            unet.eval()
            with torch.no_grad():
                per = torch.cat([mse(unet, ev[i : i + self.batch_size], ev_t[i : i + self.batch_size], ev_eps[i : i + self.batch_size])
                                 for i in range(0, len(ev), self.batch_size)]).cpu()
            return torch.zeros(len(names), dtype=torch.float64).index_add_(0, of[ev], per.double()) / torch.bincount(of[ev], minlength=len(names))

        if self.upper_signal not in ("loss", "ratio"):
            raise GuardgenError(f"upper_signal must be 'loss' or 'ratio', not {self.upper_signal!r}")
        self.set_task(pipe.unet, method)
        state_dir = None if state_dir is None else Path(state_dir)
        self.history_ = []
        state = self._restore(state_dir, resume, g, len(names))
        if state is not None:
            t0 -= state["seconds"]
            base, w, start = state.get("base"), state["w"], state["iteration"] + 1
        else:
            base = condition_losses() if self.upper_signal == "ratio" else None
            w, start = torch.full((len(names),), self.size / len(names), dtype=torch.float64), 1
        params = [p for p in unet.parameters() if p.requires_grad]
        for it in range(start, self.iterations + 1):
            unet.load_state_dict(original)
            unet.train()
            for idx in self._batches(len(x0), g):
                t = torch.randint(0, len(abar), (len(idx),), generator=g)
                eps = torch.randn(x0[idx].shape, generator=g)
                loss = form(mse(unet, idx, t, eps), w[of[idx]].float().to(acc.device)).mean()
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                with torch.no_grad():
                    for p, gr in zip(params, grads):
                        if gr is not None:
                            p.sub_(self.theta_lr * gr.sign())
            losses = condition_losses()
            if base is not None:  # how much unlearning raised each condition's loss, not how hard it is to denoise
                losses = losses / base.clamp_min(1e-12)
            w_before = w
            w, top = self._upper_step(w, losses, it)
            self._log(it, w_before, losses, top, callback)
            if it < self.iterations:
                self._checkpoint(state_dir, it, g, time.perf_counter() - t0, {"w": w, "base": base})
        if state_dir is not None and state_dir.exists():
            shutil.rmtree(state_dir)
        self.conditions_ = names
        self.weights_ = w.float()
        self.losses_ = losses.float()
        self.indices_ = [names[i] for i in top.tolist()]
        self.search_seconds_ = time.perf_counter() - t0
        return self


@torch.no_grad()
def _per_sample_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    device = next(model.parameters()).device
    model.eval()
    bs = max(batch_size, 512)
    out = [F.cross_entropy(model(x[i : i + bs].to(device)).float(), y[i : i + bs].to(device), reduction="none").cpu()
           for i in range(0, len(y), bs)]
    return torch.cat(out)
