import json

import pytest
import torch
from typer.testing import CliRunner

HOSTILE = "<script>alert(1)</script>"
TINY = ["--set", "samples_per_class=3", "--set", "num_inference_steps=4", "--set", "concept_samples=6",
        "--set", "mia_members=40", "--set", "mia_timesteps=[100]", "--set", "mia_noise_draws=1", "--set", "nn_neighbours=10"]


@pytest.fixture(scope="session")
def zoo_report(tmp_path_factory):
    """`guardgen audit zoo:mnist-t2i` at a tiny budget, run once for the session; one concept name is hostile HTML."""
    import torch

    from guardgen.cli import app

    out = tmp_path_factory.mktemp("audit") / "zoo-ddpm"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU is shared; one thread is steadier than two under load
    try:
        result = CliRunner().invoke(app, ["audit", "zoo:mnist-t2i", "--concept", f"{HOSTILE}=7", "--concept",
                                            "a handwritten digit seven", "--out", str(out), *TINY])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "report.json").read_text()), result.output


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a shared CPU, a second OpenMP thread mostly waits (10x slower backward passes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
