"""Classification-based metrics: accuracy, forget rate, conditional accuracy of generated samples."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["accuracy", "forget_rate", "conditional_accuracy", "class_rates"]


def _labels(x) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return x.argmax(-1) if x.ndim == 2 else x


def accuracy(logits_or_pred, target) -> float:
    """Share of predictions (argmax of (N, K) logits, or (N,) labels) equal to ``target`` (N,)."""
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(_labels(target), _labels(logits_or_pred)))


def forget_rate(logits_or_pred, concept: int) -> float:
    """Share of samples generated for a forgotten concept that the oracle still classifies as it."""
    pred = _labels(logits_or_pred)
    return float((pred == concept).mean()) if len(pred) else float("nan")


def conditional_accuracy(logits_or_pred, conditioning) -> float:
    """Share of generated samples the oracle labels as the class they were conditioned on."""
    return accuracy(logits_or_pred, conditioning)


def class_rates(logits_or_pred, conditioning, num_classes: int = 10) -> dict[int, float]:
    """Per conditioning class, the share of samples classified as that class."""
    pred, cond = _labels(logits_or_pred), _labels(conditioning)
    return {c: float((pred[cond == c] == c).mean()) for c in range(num_classes) if (cond == c).any()}
