"""guardgen: safety, unlearning and forensics of image generative models.

The foundation lives here (model loaders, data, the built-in zoo, metrics, checkpoints, registry);
the methods live in the sibling packages ``attacks``, ``detectors`` and ``unlearn``; ``guardgen.cli``
and ``guardgen.audit`` compose everything.
"""

from guardgen.errors import GuardgenError

__version__ = "0.1.0"
__all__ = ["GuardgenError", "__version__"]
