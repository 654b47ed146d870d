"""Adversarial prompt search against a redacted (or concept-erased) text encoder.

Looks for prompts whose embedding under the edited encoder comes back near the redacted region, i.e.
near the ORIGINAL encoder's embeddings of the redacted prompts: a greedy discrete search that, from
each start prompt, proposes word substitutions, insertions and deletions drawn from a vocabulary and
keeps the best candidate by cosine similarity to the nearest target embedding. Black-box in the
encoder (only ``encode`` is called), so it works on the zoo's sentence encoder and on CLIP alike.
Whether a found prompt really brings the redacted content back is judged on the generated images
(see ``bench/redaction.py``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from attacks import ATTACKS
from guardgen.errors import GuardgenError
from guardgen.registry import Seed

__all__ = ["PromptSearch"]


@ATTACKS.register("prompt_search")
@dataclass(kw_only=True)
class PromptSearch:
    steps: int = 30
    candidates: int = 64  # proposals scored per step
    max_words: int = 10
    seed: Seed = 0
    history_: list = field(default_factory=list, init=False, repr=False)

    def fit(self, encode: Callable[[list[str]], torch.Tensor], targets: torch.Tensor, *, start: Sequence[str],
            vocabulary: Sequence[str], callback=None) -> "PromptSearch":
        """encode: N prompts -> (N, D) embeddings of the edited encoder; targets: (K, D) embeddings of the
        redacted prompts under the original encoder. Sets ``prompts_``, ``scores_`` (cosine to the nearest
        target) and ``start_scores_``."""
        if not start:
            raise GuardgenError("prompt search needs at least one start prompt")
        vocabulary = sorted(set(vocabulary))
        if not vocabulary:
            raise GuardgenError("prompt search needs a non-empty vocabulary")
        rng = random.Random(self.seed)
        targets = F.normalize(targets.float().flatten(1), dim=-1)

        def score(prompts: list[str]) -> torch.Tensor:
            with torch.no_grad():
                emb = F.normalize(encode(prompts).float().flatten(1), dim=-1).to(targets.device)
            return (emb @ targets.T).max(1).values.cpu()

        self.prompts_, self.scores_ = [], []
        self.start_scores_ = score(list(start)).tolist()
        self.history_ = []
        for i, prompt in enumerate(start):
            best, best_score = prompt, self.start_scores_[i]
            for step in range(1, self.steps + 1):
                proposals = [self._propose(best.split(), vocabulary, rng) for _ in range(self.candidates)]
                proposals = [p for p in dict.fromkeys(proposals) if p and p != best]
                if not proposals:
                    continue
                scores = score(proposals)
                j = int(scores.argmax())
                if scores[j] > best_score:
                    best, best_score = proposals[j], float(scores[j])
                self.history_.append({"start": i, "step": step, "score": best_score})
                if callback is not None:
                    callback(i * self.steps + step, {"total": len(start) * self.steps, "score": best_score})
            self.prompts_.append(best)
            self.scores_.append(best_score)
        return self

    def _propose(self, words: list[str], vocabulary: list[str], rng: random.Random) -> str:
        words = list(words)
        op = rng.random()
        if words and (op < 0.5 or len(words) >= self.max_words):  # substitute
            words[rng.randrange(len(words))] = rng.choice(vocabulary)
        elif words and op < 0.65:  # delete
            del words[rng.randrange(len(words))]
        else:  # insert
            words.insert(rng.randint(0, len(words)), rng.choice(vocabulary))
        return " ".join(words)
