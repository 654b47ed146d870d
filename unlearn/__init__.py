"""Unlearning for generative models and classifiers: SFD, Adapt-then-Unlearn, redaction, baselines.

Layer 2: uses the ``guardgen`` foundation only. Methods land with issues 3, 5, 6 and 7.
"""

from guardgen.registry import Registry

UNLEARN = Registry("unlearning method")

__all__ = ["UNLEARN", "methods_for"]


def methods_for(target: str) -> list[str]:
    """The registered methods that unlearn a ``target`` model: "diffusion", "gan" or "classifier"."""
    return [name for name in UNLEARN.names() if getattr(UNLEARN.get(name), "target", None) == target]


from unlearn import adapt_then_unlearn, classifier, esd, ga, redaction, retrain, sfd  # noqa: E402,F401  (registers the methods)
