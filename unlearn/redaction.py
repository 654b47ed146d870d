"""Data redaction by distilling the conditioning network. Kong and Chaudhuri, "Data Redaction from
Conditional Generative Models", SaTML 2024.

Only the conditioning network E changes; the generator stays frozen. A student E' starts from E and
minimises

    L(E') = E_{c not in Omega} ||E'(c) - E(c)||^2 + lambda * E_{c in Omega} ||E'(c) - E(ref(c))||^2,

so redacted conditionals c in Omega land on the embedding of a reference (safe) conditional while all
others stay where they were. Text models: the zoo's sentence encoder (loss on the normalised sentence
embedding the UNet sees) or a Stable Diffusion CLIP text encoder (loss on the token-level hidden states,
the ``encoder_hidden_states``); variants ``full``, ``last_layers`` and ``lora`` (peft, merged at the end).
Class-conditional models: labels are discrete, so redaction is exact: the redacted rows of the class
embedding are set to the reference rows. Swapping the original encoder back undoes a redaction.
"""

from __future__ import annotations

import copy
import random
import string
import time
from dataclasses import asdict, dataclass, field
from typing import ClassVar, Literal, Sequence

import torch
import torch.nn.functional as F

from guardgen.errors import GuardgenError
from guardgen.models.conditioning import conditioning_for
from guardgen.registry import NonNegFloat, NonNegInt, PositiveFloat, PositiveInt, Seed, check_settings
from guardgen.utils import Callback, fused, make_accelerator, prepare
from unlearn import UNLEARN
from unlearn._resume import LoopState, check_state, set_task

__all__ = ["Redaction", "GENERIC_PROMPTS", "apply_rules"]

# generic captions that anchor the encoder away from the redaction set (non-redacted conditionals)
GENERIC_PROMPTS = [
    "a photo of a cat", "a dog running on the beach", "a red car parked on a street", "a bowl of fruit on a table",
    "a mountain landscape at sunset", "a portrait of a woman", "a city skyline at night", "a bird on a branch",
    "an old wooden house", "a plate of pasta", "a drawing of a tree", "a boat on a lake", "a man riding a bicycle",
    "a cup of coffee", "a field of flowers", "a black and white photograph", "a painting of the sea",
    "a child playing in the park", "a close-up of a leaf", "a snowy forest", "the letter a", "a circle",
    "a square drawn in ink", "a straight line", "a handwritten letter", "a page of text", "a blank page",
]


@UNLEARN.register("redaction")
@dataclass(kw_only=True)
class Redaction:
    """Hyperparameters: lambda (the redaction weight), the trainable part of the encoder and a short Adam run."""
    summary: ClassVar[str] = ("Data redaction (Kong and Chaudhuri, SaTML 2024): distil the conditioning network so "
                              "the concept maps to a reference")  # one line for `guardgen unlearn methods`
    target: ClassVar[str] = "diffusion"  # the kind of model it unlearns (`guardgen unlearn methods`)

    variant: Literal["full", "last_layers", "lora"] = "full"
    last_layers: PositiveInt = 2
    lora_rank: PositiveInt = 8
    lambda_redact: NonNegFloat = 1.0
    lr: PositiveFloat = 5e-5
    iterations: PositiveInt = 600  # zoo t2i: 300 left 0.972 label agreement on non-redacted prompts, 600 gave 0.983
    batch_size: PositiveInt = 32  # prompts per step, half redacted, half retained
    random_prompts: NonNegInt = 512  # random word strings added to the retained set (keeps unrelated text in place)
    # keyword rules, as the paper defines Omega over captions: any prompt containing a key is redacted, and its
    # reference is the same prompt with the key replaced (e.g. {"seven": "one", "7": "1"}); text models only
    replace: dict = field(default_factory=dict)
    keyword_prompts: NonNegInt = 512  # prompts made by inserting each key into retained and random prompts
    checkpoint_every: PositiveInt = 100  # iterations between training states in out/training_state (with out=)
    seed: Seed = 0
    device: str = "auto"
    mixed_precision: str = "no"
    history_: list = field(default_factory=list, init=False, repr=False)

    def fit(self, pipe, *, forget: Sequence, retain: Sequence = (), override: Sequence = (), oracle=None,
            callback: Callback | None = None, out=None, resume: bool = False) -> "Redaction":
        """Redact ``forget`` (prompts or class ids) towards ``override`` (reference prompts or classes).

        ``retain``: non-redacted prompts to keep in place [default: the model's prompt table, generic captions
        and random word strings]. ``oracle`` is accepted for the common interface. With ``out``, the distillation's
        state is kept in ``out/training_state`` and ``resume=True`` continues it exactly.
        """
        check_settings(self)
        cond = conditioning_for(pipe)
        forget = [cond.parse(c) for c in forget]
        reference = [cond.parse(c) for c in override]
        if not forget:
            raise GuardgenError("the redaction set is empty: pass at least one prompt or class to redact")
        if not reference:
            raise GuardgenError("redaction needs a reference (safe) prompt or class: pass --reference")
        if set(reference) & set(forget):
            raise GuardgenError(f"the reference {sorted(set(reference) & set(forget), key=str)[0]!r} is itself redacted; choose another")
        if self.replace and cond.kind == "class":
            raise GuardgenError("keyword rules (replace) apply to text models; a class model redacts class ids")
        bad = [r for r in [*reference, *self.replace.values()] if isinstance(r, str) and _has_key(r, self.replace)]
        if bad:
            raise GuardgenError(f"the reference {bad[0]!r} contains a redacted keyword; choose another")
        self.conditioning_, self.forget_, self.reference_ = cond, forget, reference
        set_task(self, pipe.unet, forget=forget, reference=reference, retain=list(retain))
        check_state(self, out, resume)  # before the encoder is copied
        t0 = time.perf_counter()
        if cond.kind == "class":
            self.unet_ = _remap_classes(pipe.unet, {f: reference[i % len(reference)] for i, f in enumerate(forget)})
            self.history_ = []
        elif getattr(pipe, "text_encoder", None) is not None:
            self.text_encoder_ = self._distil(_ClipEncoder(pipe), forget, reference, retain, callback, LoopState(self, out, resume))
        elif hasattr(pipe, "text_encoder_module"):
            self.sentence_encoder_ = self._distil(_SentenceEncoder(pipe), forget, reference, retain, callback, LoopState(self, out, resume))
        else:
            raise GuardgenError(f"{type(pipe).__name__}: no conditioning network to redact")
        self.train_seconds_ = time.perf_counter() - t0
        return self

    # -------------------------------------------------------------------------------------------------
    def _distil(self, enc, forget, reference, retain, callback, state: LoopState):
        """The distillation loop on a wrapped encoder ``enc`` (``embed(module, prompts)``, ``module``)."""
        acc = make_accelerator(self.device, self.mixed_precision)
        rng = random.Random(self.seed)
        torch.manual_seed(self.seed)
        teacher = copy.deepcopy(enc.module).to(acc.device).eval().requires_grad_(False)
        student = _trainable(copy.deepcopy(teacher), self.variant, self.last_layers, self.lora_rank, enc.lora_targets)
        ref_of = {}
        for i, base in enumerate(forget):
            for p in _augment([base]):
                ref_of[p] = apply_rules(p, self.replace) if _has_key(p, self.replace) else reference[i % len(reference)]
        retained = list(dict.fromkeys([*retain, *enc.default_retain(), "", *GENERIC_PROMPTS,
                                       *_random_prompts(enc.words(), self.random_prompts, rng)]))
        if self.replace:  # Omega by keyword rules: the key inserted into other prompts, referenced by its replacement
            hosts = [p for p in retained if p and not _has_key(p, self.replace)]
            for _ in range(self.keyword_prompts):
                words = rng.choice(hosts).split()
                words.insert(rng.randint(0, len(words)), rng.choice(sorted(self.replace)))
                p = " ".join(words)
                ref_of[p] = apply_rules(p, self.replace)
        redacted = list(ref_of)
        retained = [p for p in retained if p not in ref_of and not _has_key(p, self.replace)]
        with torch.no_grad():
            targets = {}
            for chunk in _chunks(list(dict.fromkeys(retained + list(ref_of.values()))), 256):
                targets.update(zip(chunk, enc.embed(teacher, chunk).float().cpu()))
        params = [p for p in student.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=self.lr, fused=fused(acc.device))
        student, opt = prepare(acc, student, opt)
        student.eval()  # dropout off: the student must reproduce the teacher's deterministic embeddings
        n_f = max(1, self.batch_size // 2)
        self.history_ = []
        modules, optimizers = {"student": acc.unwrap_model(student)}, {"student": opt}
        for step in range(state.start(modules, optimizers, rng), self.iterations + 1):
            batch_f = [rng.choice(redacted) for _ in range(n_f)]
            batch_r = [rng.choice(retained) for _ in range(self.batch_size - n_f)]
            with acc.autocast():
                emb = enc.embed(student, batch_f + batch_r).float()
            tgt = torch.stack([targets[ref_of[p]] for p in batch_f] + [targets[p] for p in batch_r]).to(emb.device)
            err = (emb - tgt).pow(2).flatten(1).sum(1)
            loss_redact, loss_retain = err[:n_f].mean(), err[n_f:].mean()
            loss = loss_retain + self.lambda_redact * loss_redact
            if not torch.isfinite(loss):
                raise FloatingPointError(f"redaction diverged at iteration {step}; lower lr")
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            opt.step()
            logs = {"loss_redact": loss_redact.item(), "loss_retain": loss_retain.item()}
            self.history_.append({"step": step, **logs})
            if callback is not None:
                callback(step, {"total": self.iterations, **logs})
            state.save(step, modules, optimizers, rng)
        state.finish()
        student = acc.unwrap_model(student)
        if self.variant == "lora":
            student = student.merge_and_unload()
        return enc.finish(student.eval().requires_grad_(False).cpu())

    # -------------------------------------------------------------------------------------------------
    def to_pipeline(self, pipe):
        """A copy of ``pipe`` with the redacted conditioning network (UNet and everything else shared)."""
        from guardgen.models.diffusion import with_unet

        if hasattr(self, "unet_"):
            return with_unet(pipe, self.unet_)
        new = copy.copy(pipe)
        if hasattr(self, "text_encoder_"):
            new = type(pipe)(**{**pipe.components, "text_encoder": self.text_encoder_.to(pipe.text_encoder.device)})
        elif hasattr(self, "sentence_encoder_"):
            new = type(pipe)(unet=pipe.unet, scheduler=pipe.scheduler,
                             **{k: v for k, v in pipe.config.items() if not k.startswith("_") and k not in ("unet", "scheduler")
                                and k != "text_encoder_subfolder"}, text_encoder_subfolder="text_encoder")
            new.sentence_encoder = self.sentence_encoder_
        else:
            raise GuardgenError("Redaction is not fitted yet; call fit first")
        new.set_progress_bar_config(disable=True)
        return new

    def get_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not k.endswith("_")}


# ---------------------------------------------------------------------------------------------------
# encoders


class _SentenceEncoder:
    """The zoo's sentence encoder: the loss sits on the normalised sentence embedding (N, 384)."""

    lora_targets = ["query", "value"]

    def __init__(self, pipe):
        self.pipe = pipe
        self.sentence_transformer = pipe.text_encoder_module()
        self.module = self.sentence_transformer[0].auto_model  # the transformer (BertModel)

    def embed(self, module, prompts):
        from guardgen.models.text import mean_pool

        st = self.sentence_transformer
        batch = st.tokenizer(list(prompts), padding=True, truncation=True, max_length=st.max_seq_length,
                             return_tensors="pt").to(next(module.parameters()).device)
        hidden = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return F.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1)

    def default_retain(self):
        table = getattr(self.pipe.config, "prompts", {}) or {}
        return [p for ps in table.values() for p in ps]

    def words(self):
        return [w for w in self.sentence_transformer.tokenizer.get_vocab() if w.isalpha() and len(w) > 2]

    def finish(self, student):
        out = copy.deepcopy(self.sentence_transformer)
        # sentence-transformers >= 5 keeps the model in ``.model`` (``auto_model`` is a read-only property)
        setattr(out[0], "model" if isinstance(getattr(type(out[0]), "auto_model", None), property) else "auto_model", student)
        return out


class _ClipEncoder:
    """A Stable Diffusion CLIP text encoder: the loss sits on the token-level hidden states (N, 77, D)."""

    lora_targets = ["q_proj", "v_proj"]

    def __init__(self, pipe):
        self.pipe = pipe
        self.module = pipe.text_encoder

    def embed(self, module, prompts):
        tok = self.pipe.tokenizer(list(prompts), padding="max_length", max_length=self.pipe.tokenizer.model_max_length,
                                  truncation=True, return_tensors="pt")
        return module(tok.input_ids.to(next(module.parameters()).device))[0]

    def default_retain(self):
        return []

    def words(self):
        return [w.removesuffix("</w>") for w in self.pipe.tokenizer.get_vocab() if w.removesuffix("</w>").isalpha()
                and len(w.removesuffix("</w>")) > 2]

    def finish(self, student):
        return student


def _trainable(model: torch.nn.Module, variant: str, last_layers: int, rank: int, lora_targets: list[str]) -> torch.nn.Module:
    """Mark which parameters train: all, the last transformer layers (and final norm), or LoRA adapters."""
    if variant == "full":
        return model.requires_grad_(True)
    if variant == "lora":
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise GuardgenError("the lora variant needs peft: pip install 'guardgen[text]'") from None
        return get_peft_model(model, LoraConfig(r=rank, lora_alpha=rank, target_modules=lora_targets, lora_dropout=0.0))
    model.requires_grad_(False)
    layers = _layer_list(model)
    for layer in layers[-last_layers:]:
        layer.requires_grad_(True)
    for name in ("final_layer_norm",):  # CLIP's norm after the last layer
        norm = getattr(getattr(model, "text_model", model), name, None)
        if norm is not None:
            norm.requires_grad_(True)
    return model


def _layer_list(model: torch.nn.Module) -> torch.nn.ModuleList:
    for path in ("encoder.layer", "text_model.encoder.layers", "encoder.layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise GuardgenError(f"{type(model).__name__}: cannot find the transformer layers for variant last_layers; use full or lora")


def _remap_classes(unet, mapping: dict[int, int]):
    """Exact redaction of discrete labels: each redacted class embedding becomes its reference's."""
    unet = copy.deepcopy(unet)
    emb = getattr(unet, "class_embedding", None)
    if not isinstance(emb, torch.nn.Embedding):
        raise GuardgenError("this class-conditional UNet has no class embedding table to redact")
    with torch.no_grad():
        for f, r in mapping.items():
            emb.weight[f] = emb.weight[r]
    return unet.eval().requires_grad_(False)


def _has_key(prompt: str, rules: dict) -> bool:
    words = prompt.lower().strip(string.punctuation + " ").split()
    return any(k.lower() in words for k in rules)


def apply_rules(prompt: str, rules: dict) -> str:
    """Replace whole words (case-insensitive) by their rule: "a scribbled seven" -> "a scribbled one"."""
    import re

    for key, value in rules.items():
        prompt = re.sub(rf"(?i)\b{re.escape(key)}\b", value, prompt)
    return prompt


def _augment(prompts: Sequence[str]) -> list[str]:
    """Surface variants of each redacted prompt (case, punctuation, spacing): the same request."""
    out = []
    for p in prompts:
        out += [p, p.lower(), p.capitalize(), p.upper(), p + ".", p + "!", "  " + p + " ", p.rstrip(string.punctuation)]
    return list(dict.fromkeys(out))


def _random_prompts(words: list[str], n: int, rng: random.Random) -> list[str]:
    words = sorted(words)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 6))) for _ in range(n)] if words else []


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]
