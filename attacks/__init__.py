"""Attacks that stress unlearning and detectors: worst-case forget sets, on-manifold and latent evasion, PGD.

Layer 2: uses the ``guardgen`` foundation only; never imports ``detectors`` or ``unlearn`` (an
unlearning routine is passed in as an argument). Methods land with issues 4, 6 and 9.
"""

from guardgen.registry import Registry

ATTACKS = Registry("attack")

__all__ = ["ATTACKS"]

from attacks import latent_evasion, on_manifold, pgd, prompt_search, worst_case_forget  # noqa: E402,F401  (registers the attacks)
