"""AIGC image detectors, on-manifold adversarial training (OMAT), open-world GAN attribution.

Layer 2: uses the ``guardgen`` foundation and ``attacks``. Methods land with issues 4 and 5.
"""

from guardgen.registry import Registry

DETECTORS = Registry("detector")

__all__ = ["DETECTORS"]

from detectors import attribution, detector, omat  # noqa: E402,F401  (registers the detectors)
