"""The one exception type for bad user input.

Library code raises :class:`GuardgenError` with a one-line message that names the problem and the
fix; the CLI turns it into that line on stderr and exit code 2, without a traceback.
"""

__all__ = ["GuardgenError"]


class GuardgenError(ValueError):
    """Bad input from the user (a path, a spec, a file, a hyperparameter); the message is one line."""
