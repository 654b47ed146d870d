"""Loading without the libraries' own progress bars: a guardgen command prints its own progress, and an error
before any work is its one line alone."""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Turn off diffusers' and transformers' loading bars ("Loading pipeline components", "Loading weights") for the
    block, and restore what the caller had after it."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = [lib for lib in (diffusers_logging, transformers_logging) if lib.is_progress_bar_enabled()]
    for lib in libraries:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib in libraries:
            lib.enable_progress_bar()
