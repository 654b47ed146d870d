import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

import guardgen.utils
from guardgen.errors import GuardgenError
from guardgen.utils import machine_info, make_accelerator, prepare, source_commit


class _Acc:
    """Stands in for an Accelerator on another device: records what reaches ``prepare``."""

    def __init__(self, device):
        self.device, self.seen = torch.device(device), []

    def prepare(self, *objs):
        self.seen = [(getattr(o, "_is_accelerate_prepared", False), next(o.parameters()).dtype) for o in objs]
        return objs


def test_prepare_places_and_unmarks_a_module_accelerate_has_seen():
    net = nn.Linear(2, 1)
    acc = make_accelerator("cpu")
    net = prepare(acc, net)
    assert net._is_accelerate_prepared  # accelerate marked it; plain acc.prepare would now pass it through
    fake = _Acc("meta")  # a device the module is not on
    out = prepare(fake, net)
    assert fake.seen == [(False, torch.float32)]
    assert out[0].weight.device.type == "meta"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_detector_warm_start_trains_on_the_gpu_again():
    from detectors.detector import Detector

    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(64, 1, 16, 16, generator=g) * 0.5, torch.rand(64, 1, 16, 16, generator=g) * 0.5 + 0.5
    det = Detector(backbone="guardgen_digitnet", epochs=1, batch_size=32, device="cuda").fit(real, fake)
    det.warm_start = True
    det.fit(real, fake)  # the module went back to the CPU after the first fit
    assert det.device_.startswith("cuda") and len(det.history_) == 8


def test_model_device_resolves_auto_to_what_is_visible(monkeypatch):
    from guardgen.utils import model_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert model_device("auto") == "cpu"
    with pytest.raises(GuardgenError, match="no CUDA GPU is visible"):
        model_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert model_device("auto") == "cuda"
    assert model_device("cpu") == "cpu" and model_device("cuda:1") == "cuda:1"
    with pytest.raises(GuardgenError, match="this machine has 2 GPU"):
        model_device("cuda:2")
    with pytest.raises(GuardgenError, match="unknown device 'tpu'"):
        model_device("tpu")


def test_machine_info_records_the_commit_of_the_source_tree(monkeypatch):
    root = Path(guardgen.utils.__file__).resolve().parent.parent
    commit = machine_info()["source_commit"]
    if not (root / ".git").exists():
        assert commit is None
    else:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
        assert commit.removesuffix("+dirty") == head.strip()[:12]

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert source_commit() is None  # git missing: no commit, and no error


def test_make_accelerator_switches_precision_within_one_process():
    """A bf16 fit and then a full-precision one in the same process (accelerate keeps one state per process)."""
    first = make_accelerator("cpu", "bf16")
    with first.autocast():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    second = make_accelerator("cpu", "no")
    assert second.mixed_precision == "no" and second.device.type == "cpu"
    with second.autocast():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    assert make_accelerator("cpu", "bf16").mixed_precision == "bf16"
    make_accelerator("cpu", "no")  # leave the process's state as the other tests expect it
