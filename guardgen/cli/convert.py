"""``guardgen convert``: a third-party pickle state dict -> safetensors, the one place the CLI reads a pickle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from guardgen.cli._common import console, guarded


@guarded
def convert(
    weights: Annotated[Path, typer.Argument(help="A .pt/.pth/.bin file holding a flat state dict of tensors.")],
    to: Annotated[Optional[Path], typer.Option("--to", help="The .safetensors file to write.", show_default="WEIGHTS with .safetensors")] = None,
) -> None:
    """Convert a pickled state dict to .safetensors, read with torch.load(weights_only=True) (tensors only, no code)."""
    from guardgen.checkpoint import PICKLE_SUFFIXES, check_out, load_state_dict, save_safetensors
    from guardgen.errors import GuardgenError

    if weights.suffix not in PICKLE_SUFFIXES:
        raise GuardgenError(f"{weights}: expected a {'/'.join(sorted(PICKLE_SUFFIXES))} file")
    to = to if to is not None else weights.with_suffix(".safetensors")
    if to.suffix != ".safetensors":
        raise GuardgenError(f"--to {to}: the output must end in .safetensors")
    if to.exists():
        raise GuardgenError(f"{to} exists; pass another --to (nothing is overwritten)")
    check_out(to, option="--to", replaces=False)  # a file on its path: one line, not mkdir's "File exists"
    state = load_state_dict(weights, allow_pickle=True)
    if not state:
        raise GuardgenError(f"{weights}: holds no tensors; nothing to convert")
    save_safetensors({k: v.clone() for k, v in state.items()}, to)
    console.print(f"{len(state)} tensors -> {to}")
