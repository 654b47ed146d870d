"""``python -m guardgen.cli``: the same as the ``guardgen`` command (handy under torchrun / accelerate launch)."""

from guardgen.cli import main

main()
