"""The concept-unlearning figures, on a scripted generator and a scripted oracle."""

import time

import torch
from torch import nn

from unlearn.evaluate import evaluate_concept_unlearning


class PixelOracle(nn.Module):
    """Reads the class written into pixel (0, 0): class k is the value k / 10."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        k = (x[:, 0, 0, 0] * 10).round().long().clamp(0, 9)
        return torch.nn.functional.one_hot(k, 10).float() + self.dummy


def scripted(classes_by_condition):
    """sample_fn whose i-th sample of condition c depicts classes_by_condition[c][i % len(...)]."""
    def sample_fn(conditions):
        seen = {}
        out = torch.zeros(len(conditions), 1, 4, 4)
        for n, c in enumerate(conditions):
            i = seen.get(c, 0)
            seen[c] = i + 1
            script = classes_by_condition[c]
            out[n, 0, 0, 0] = script[i % len(script)] / 10
        return out
    return sample_fn


def test_rates_by_hand():
    # forgotten 7 -> 1 three times in four; retained 1 reads as 7 once in four (the override's own floor); 2 is clean
    sample_fn = scripted({7: [7, 1, 1, 1], 1: [1, 1, 1, 7], 2: [2], "p7": [7, 7, 3, 3]})
    r = evaluate_concept_unlearning(sample_fn, PixelOracle(), forget={7: 7}, retain={1: 1, 2: 2}, paraphrases={"p7": 7},
                                    per_condition=8, override_class=1)
    assert r["forget_rate"] == 0.25
    assert r["override_rate"] == 0.75
    assert r["retain_accuracy"] == 0.875  # (6 + 8) / 16
    assert r["override_as_forgotten_rate"] == 0.25
    assert r["paraphrase_forget_rate"] == 0.5
    assert r["per_condition"]["2"] == 1.0 and r["samples"] == 32


def test_override_floor_absent_when_the_override_is_not_retained():
    sample_fn = scripted({7: [1], 2: [2]})
    r = evaluate_concept_unlearning(sample_fn, PixelOracle(), forget={7: 7}, retain={2: 2}, per_condition=4, override_class=1)
    assert r["override_rate"] == 1.0 and "override_as_forgotten_rate" not in r


def test_a_short_draw_is_timed_again_and_the_faster_time_kept():
    calls = []
    inner = scripted({7: [1], 2: [2]})

    def sample_fn(conditions):  # the first draw pays a one-time cost, as a cold GPU does
        calls.append(len(conditions))
        if len(calls) == 1:
            time.sleep(0.5)
        return inner(conditions)

    r = evaluate_concept_unlearning(sample_fn, PixelOracle(), forget={7: 7}, retain={2: 2}, per_condition=4, retime_below=1.0)
    assert calls == [8, 8] and r["forget_rate"] == 0.0 and r["retain_accuracy"] == 1.0
    assert r["samples_per_second"] > 8 / 0.5  # the 0.5 s is not in the figure
    calls.clear()
    r = evaluate_concept_unlearning(sample_fn, PixelOracle(), forget={7: 7}, retain={2: 2}, per_condition=4, retime_below=0.0)
    assert calls == [8] and r["samples_per_second"] < 8 / 0.5  # a draw above the bound is timed once
