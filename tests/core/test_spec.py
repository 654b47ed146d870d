import json

import pytest
import torch

from guardgen.errors import GuardgenError
from guardgen.models import load_model, resolve


def test_zoo_specs_resolve_to_shipped_weights():
    ref = resolve("zoo:mnist-oracle")
    assert ref.kind == "classifier" and ref.source == "zoo" and (ref.path / "model.safetensors").is_file()


def test_user_zoo_dir_wins(tmp_path, monkeypatch):
    from guardgen.models.classifier import create_classifier, save_classifier

    save_classifier(create_classifier("guardgen_digitnet", num_classes=10), tmp_path / "mnist-oracle",
                    architecture="guardgen_digitnet", model_args={"num_classes": 10})
    monkeypatch.setenv("GUARDGEN_ZOO_DIR", str(tmp_path))
    assert resolve("zoo:mnist-oracle").path == tmp_path / "mnist-oracle"


@pytest.mark.parametrize("spec,match", [
    ("zoo:nope", "unknown zoo model 'nope'; available: .*mnist-oracle"),
    ("/no/such/folder", "no such file or folder"),
    ("mnist-oracle", "for a built-in model use zoo:NAME"),
    ("", "empty model spec"),
])
def test_bad_specs_are_one_line_errors(spec, match):
    with pytest.raises(GuardgenError, match=match) as info:
        resolve(spec)
    assert "\n" not in str(info.value)


def test_hf_spec_offline_says_how_to_pass_a_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GuardgenError, match="pass the local folder"):
        resolve("hf:someone/not-cached-model")


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(GuardgenError, match="not a model folder"):
        resolve(str(tmp_path))
    for name, config, message in [("det", {"_class": "Detector", "detector": {}}, "a guardgen detector, not a model"),
                                  ("attr", {"_class": "OpenWorldAttribution", "detector": {}},
                                   "a guardgen attribution model, not a generative model")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        with pytest.raises(GuardgenError, match=message):
            resolve(str(tmp_path / name))


def test_pt_file_passed_as_checkpoint_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(1)}, path)
    with pytest.raises(GuardgenError, match="never unpickles"):
        resolve(str(path))


def test_classifier_folder_with_pickle_weights_needs_permission(tmp_path):
    from guardgen.models.classifier import create_classifier

    model = create_classifier("guardgen_digitnet", num_classes=10)
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "guardgen_digitnet", "num_classes": 10}))
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(GuardgenError, match="refusing to unpickle"):
        load_model(str(tmp_path))
    loaded = load_model(str(tmp_path), allow_pickle=True)
    x = torch.rand(2, 1, 16, 16)
    model.eval()
    assert torch.allclose(loaded(x), model(x))


def test_timm_backbone_folder(tmp_path):
    from guardgen.models.classifier import create_classifier, save_classifier

    model = create_classifier("resnet18", num_classes=2, in_chans=3).eval()
    save_classifier(model, tmp_path / "r18", architecture="resnet18", model_args={"num_classes": 2, "in_chans": 3})
    loaded = load_model(str(tmp_path / "r18"), kind="classifier")
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(loaded(x), model(x), atol=1e-6)


def test_wrong_kind_is_refused():
    with pytest.raises(GuardgenError, match="holds a classifier"):
        load_model("zoo:mnist-oracle", kind="pipeline")


def test_run_folder_points_at_its_model(tmp_path, tiny_class_pipeline):
    import shutil

    shutil.copytree(tiny_class_pipeline, tmp_path / "run" / "model")
    (tmp_path / "run" / "run.json").write_text(json.dumps({"method": "sfd", "model_path": "model"}))
    ref = resolve(str(tmp_path / "run"))
    assert ref.kind == "pipeline" and ref.run["method"] == "sfd"
    assert type(load_model(str(tmp_path / "run"))).__name__ == "ClassConditionalPipeline"
