"""CLI end to end on tiny GANs and synthetic image folders: `unlearn concept` on a GAN, `attribute fit|discover|predict`."""

import json

import pytest
import torch
from typer.testing import CliRunner

from guardgen.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_gan(tmp_path):
    from guardgen.models.gan import GAN_ARCHITECTURES, save_gan

    torch.manual_seed(0)
    arch = GAN_ARCHITECTURES.get("dcgan")
    g_args, d_args = dict(latent_dim=8, width=4), dict(width=4)
    return save_gan(tmp_path / "gan", arch.generator(**g_args), arch.discriminator(**d_args), architecture="dcgan",
                    generator_args=g_args, discriminator_args=d_args)


@pytest.fixture
def tiny_oracle(tmp_path, tiny_gan):
    """A small digit-classifier folder whose head splits the tiny GAN's samples between classes 3 and 0."""
    from guardgen.models import load_model
    from guardgen.models.classifier import classifier_features, create_classifier, save_classifier
    from guardgen.models.gan import sample_gan

    torch.manual_seed(1)
    args = {"num_classes": 10, "in_chans": 1, "width": 4}
    clf = create_classifier("guardgen_digitnet", **args).eval()
    g, _ = load_model(str(tiny_gan), kind="gan")
    f = classifier_features(clf, sample_gan(g, 256, generator_rng=torch.Generator().manual_seed(5)))
    v = f[0] - f.mean(0)
    with torch.no_grad():
        clf.head.weight.zero_()
        clf.head.bias.fill_(-10.0)
        clf.head.weight[3] = v
        clf.head.bias[3] = -(f.mean(0) @ v)
        clf.head.bias[0] = 0.0
    return save_classifier(clf, tmp_path / "oracle", architecture="guardgen_digitnet", model_args=args)


def _most_common_class(gan, oracle):
    from guardgen.models import load_model
    from guardgen.models.gan import sample_gan
    from guardgen.utils import predict_logits

    g, _ = load_model(str(gan), kind="gan")
    clf = load_model(str(oracle), kind="classifier")
    pred = predict_logits(clf, sample_gan(g, 256, generator_rng=torch.Generator().manual_seed(0))).argmax(1)
    counts = torch.bincount(pred, minlength=10)
    assert 0.05 < counts[3] / 256 < 0.95  # the stand-in oracle splits the samples
    return 3


def test_unlearn_concept_on_a_gan(tmp_path, tiny_gan, tiny_oracle, monkeypatch):
    from guardgen.data import ImageSet

    fake = ImageSet(torch.rand(60, 1, 16, 16), torch.arange(60) % 10, [str(c) for c in range(10)], "fake")
    monkeypatch.setattr("guardgen.zoo.gan.load_mnist", lambda split, resolution=16, exclude=(): fake.exclude(exclude))
    forget = _most_common_class(tiny_gan, tiny_oracle)
    out = tmp_path / "run"
    result = runner.invoke(app, ["unlearn", "concept", "--model", str(tiny_gan), "--forget", str(forget),
                                 "--method", "adapt_then_unlearn", "--oracle", str(tiny_oracle), "--iterations", "2",
                                 "--set", "adapt_iterations=2", "--set", "num_samples=128", "--set", "batch_size=8",
                                 "--eval-per-class", "10", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "forget_share" in result.output and "fd_ratio" in result.output
    assert (out / "grid.png").is_file() and (out / "generator.safetensors").is_file()
    results = json.loads((out / "results.json").read_text())
    assert results["forget"] == [forget] and 0 <= results["after"]["forget_share"] <= 1
    config = json.loads((out / "config.json").read_text())
    assert config["unlearning"]["method"] == "adapt_then_unlearn" and config["unlearning"]["forget"] == [forget]
    from guardgen.models import load_model

    g, d = load_model(str(out), kind="gan")
    assert d is not None


def test_unlearn_concept_gan_bad_input(tmp_path, tiny_gan, tiny_oracle):
    base = ["unlearn", "concept", "--model", str(tiny_gan), "--oracle", str(tiny_oracle), "--device", "cpu",
            "--out", str(tmp_path / "r")]
    result = runner.invoke(app, base + ["--forget", "7", "--method", "esd"])
    assert result.exit_code == 2 and "for a GAN use --method" in result.output
    result = runner.invoke(app, base + ["--forget", "seven", "--method", "gan_finetune"])
    assert result.exit_code == 2 and "class ids" in result.output
    for extra in (["--override", "1"], ["--retain", "3"], ["--override-mode", "oracle"]):  # diffusion-only options
        result = runner.invoke(app, base + ["--forget", "7", *extra])
        assert result.exit_code == 2 and f"{extra[0]}: a GAN forgets oracle classes outright" in result.output
    # --resume with the other GAN method into an interrupted Adapt-then-Unlearn run: refused, its state kept
    (tmp_path / "r" / "training_state" / "adapt").mkdir(parents=True)
    (tmp_path / "r" / "training_state" / "adapt" / "state.json").write_text("{}")
    (tmp_path / "r" / ".guardgen").touch()
    result = runner.invoke(app, base + ["--forget", "7", "--method", "gan_finetune", "--resume"])
    assert result.exit_code == 2 and "holds another run's interrupted state" in result.output, result.output
    assert (tmp_path / "r" / "training_state" / "adapt" / "state.json").is_file()
    # the feature is found in fewer samples than min_negatives: the run stops with one line
    result = runner.invoke(app, base + ["--forget", "3", "--method", "gan_finetune", "--set", "num_samples=16",
                                        "--set", "min_negatives=17"])
    assert result.exit_code == 2 and "nothing to unlearn" in result.output, result.output


def _write_sources(make_sources, root, n, seed, names):
    from guardgen.data import write_image_set

    x, y = make_sources(n, seed=seed)
    for i, name in enumerate(names):
        if name is not None:
            write_image_set(x[y == i], root / name)
    return root


def test_attribute_fit_discover_predict(tmp_path, make_sources):
    seen = _write_sources(make_sources, tmp_path / "seen", 100, 0, ["real", "gan-a", "gan-b", None, None])
    pool = _write_sources(make_sources, tmp_path / "pool", 60, 1, ["real", "gan-a", "gan-b", "gan-c", "gan-d"])
    model = tmp_path / "model"
    settings = ["--set", "width=8", "--set", "embed_dim=32", "--set", "epochs=12", "--set", "later_epochs=3",
                "--set", "lr=0.003", "--set", "batch_size=64", "--set", "wta_permutations=256",
                "--set", "svm_min_members=8", "--set", "n_clusters=5"]
    result = runner.invoke(app, ["attribute", "fit", "--data", str(seen), "--out", str(model), "--device", "cpu", *settings,
                                 "--set", "ood=wta"])
    assert result.exit_code == 0, result.output
    assert (model / "config.json").is_file() and (model / "model.safetensors").is_file()
    result = runner.invoke(app, ["attribute", "discover", str(model), "--data", str(pool), "--rounds", "1",
                                 "--out", str(tmp_path / "found")])
    assert result.exit_code == 0, result.output
    assert "nmi" in result.output and "discovery rounds" in result.output
    result = runner.invoke(app, ["attribute", "predict", str(tmp_path / "found"), "--data", str(pool),
                                 "--out", str(tmp_path / "pred")])
    assert result.exit_code == 0, result.output
    preds = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert len(preds["predictions"]) == 300 and preds["true"][0] == "gan-a"
    # images of other sizes and colour formats are read at the model's own (8x8 gray)
    from PIL import Image

    (tmp_path / "odd").mkdir()
    Image.new("RGB", (20, 20), (200, 10, 10)).save(tmp_path / "odd" / "big.png")
    Image.new("L", (8, 8), 90).save(tmp_path / "odd" / "small.png")
    result = runner.invoke(app, ["attribute", "predict", str(model), "--images", str(tmp_path / "odd"),
                                 "--out", str(tmp_path / "pred-odd")])
    assert result.exit_code == 0, result.output
    preds = json.loads((tmp_path / "pred-odd" / "predictions.json").read_text())
    assert len(preds["predictions"]) == 2 and [p.rsplit("/", 1)[-1] for p in preds["images"]] == ["big.png", "small.png"]
    # the default, transductive scorer from the CLI: fit, discover
    result = runner.invoke(app, ["attribute", "fit", "--data", str(seen), "--out", str(tmp_path / "pu"), "--device", "cpu",
                                 *settings])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["attribute", "discover", str(tmp_path / "pu"), "--data", str(pool), "--rounds", "1",
                                 "--out", str(tmp_path / "pu-found")])
    assert result.exit_code == 0 and "nmi" in result.output, result.output
    assert (tmp_path / "pu-found" / "novelty.safetensors").is_file()
    # in place (the default --out is MODEL_DIR): the folder stays guardgen's, so a later fit may replace it
    result = runner.invoke(app, ["attribute", "discover", str(tmp_path / "pu-found"), "--data", str(pool), "--rounds", "1"])
    assert result.exit_code == 0 and (tmp_path / "pu-found" / ".guardgen").is_file(), result.output
    for out, why in ((tmp_path / "pu-found" / "sub", "MODEL_DIR"), (pool / "gan-a" / "run", "a later read of it")):
        result = runner.invoke(app, ["attribute", "discover", str(tmp_path / "pu-found"), "--data", str(pool), "--out", str(out)])
        assert result.exit_code == 2 and f"--out {out}" in result.output and why in result.output, result.output
        assert not out.exists()
    # too many clusters for the images given: one clear line
    result = runner.invoke(app, ["attribute", "discover", str(model), "--data", str(seen), "--clusters", "1000",
                                 "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "fewer than the 1000 clusters" in result.output


def test_attribute_fit_bad_source(tmp_path):
    result = runner.invoke(app, ["attribute", "fit", "--source", "nonsense", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "NAME=SPEC" in result.output


def test_attribute_bad_unlabeled_and_images_are_refused_before_training(tmp_path, make_sources):
    seen = _write_sources(make_sources, tmp_path / "seen", 40, 0, ["a", "b"])
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["attribute", "fit", "--data", str(seen), "--unlabeled", str(tmp_path / "empty"),
                                 "--out", str(tmp_path / "m"), "--device", "cpu"])
    assert result.exit_code == 2 and "no readable images" in result.output and "training" not in result.output
    result = runner.invoke(app, ["attribute", "predict", str(tmp_path / "m"), "--images", str(seen / "a"),
                                 "--source", "a=mnist"])
    assert result.exit_code == 2 and "give it alone" in " ".join(result.output.split())


TINY_ATTR = ["--device", "cpu", "--set", "epochs=1", "--set", "width=4", "--set", "embed_dim=8",
             "--set", "wta_permutations=64", "--set", "n_clusters=2"]


def _flat(folder, images):
    """PNGs directly in ``folder`` (write_image_set puts them in a subfolder)."""
    from guardgen.data.generated import to_pil

    folder.mkdir(parents=True, exist_ok=True)
    for i, x in enumerate(images):
        to_pil(x).save(folder / f"img {i:03d}.png")
    return folder


def test_attribute_sources_in_two_colour_formats_or_one_source_are_refused_up_front(tmp_path, make_sources, monkeypatch):
    x, y = make_sources(10, seed=0)
    _flat(tmp_path / "rgb", x[y == 1].expand(-1, 3, -1, -1))
    _flat(tmp_path / "gray", x[y == 0])
    result = runner.invoke(app, ["attribute", "fit", "--source", f"g={tmp_path / 'gray'}", "--source",
                                 f"c={tmp_path / 'rgb'}", "--out", str(tmp_path / "m"), *TINY_ATTR])
    out = " ".join(result.output.split())
    assert result.exit_code == 2 and "differ in colour channels (g 1, c 3)" in out and "--resolution" not in out
    result = runner.invoke(app, ["attribute", "fit", "--data", str(tmp_path / "gray"), "--out", str(tmp_path / "m"),
                                 *TINY_ATTR])  # images, no source subfolders
    assert result.exit_code == 2 and "takes one subfolder of images per source" in " ".join(result.output.split())
    import guardgen.models.gan as gan

    monkeypatch.setattr(gan, "sample_gan", lambda *a, **k: (_ for _ in ()).throw(AssertionError("sampled")))
    result = runner.invoke(app, ["attribute", "fit", "--source", "a=zoo:mnist-gan", "--out", str(tmp_path / "m"),
                                 *TINY_ATTR])
    assert result.exit_code == 2 and "at least 2 sources" in result.output, result.output


def test_attribute_reads_rgb_pools_and_sources_in_a_gray_models_format(tmp_path, make_sources):
    x, y = make_sources(12, seed=0)
    seen = _write_sources(make_sources, tmp_path / "seen", 12, 0, ["a", "b"])
    rgb = _flat(tmp_path / "rgb", x[y == 1].expand(-1, 3, -1, -1))
    gray = _flat(tmp_path / "gray", x[y == 0])
    result = runner.invoke(app, ["attribute", "fit", "--data", str(seen), "--unlabeled", str(rgb), "--out",
                                 str(tmp_path / "m"), *TINY_ATTR])  # gray sources, an RGB pool
    assert result.exit_code == 0, result.output
    for command in (["discover", str(tmp_path / "m"), "--rounds", "1", "--out", str(tmp_path / "d")],
                    ["predict", str(tmp_path / "m"), "--out", str(tmp_path / "p")]):
        result = runner.invoke(app, ["attribute", *command, "--source", f"a={gray}", "--source", f"c={rgb}"])
        assert result.exit_code == 0, result.output
    preds = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert preds["true"].count("c") == len(list(rgb.iterdir())) and len(preds["predictions"]) == len(preds["true"])


def test_attribute_predict_names_the_files_and_a_damaged_model_is_one_line(tmp_path, make_sources):
    seen = _write_sources(make_sources, tmp_path / "seen", 20, 0, ["a", "b"])
    model = tmp_path / "m"
    result = runner.invoke(app, ["attribute", "fit", "--data", str(seen), "--out", str(model), *TINY_ATTR])
    assert result.exit_code == 0, result.output
    x, _ = make_sources(2, seed=3)
    images = _flat(tmp_path / "new", x[:3])
    result = runner.invoke(app, ["attribute", "predict", str(model), "--images", str(images), "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    preds = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert preds["images"] == [str(images / f"img {i:03d}.png") for i in range(3)] and len(preds["predictions"]) == 3
    # a folder whose images are in subfolders: the flat read says where they are
    result = runner.invoke(app, ["attribute", "predict", str(model), "--images", str(seen), "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and "2 subfolder(s) (a, b)" in " ".join(result.output.split())
    result = runner.invoke(app, ["attribute", "predict", str(model), "--images", str(images),
                                 "--out", str(images / "p")])
    assert result.exit_code == 2 and "inside --images" in " ".join(result.output.split())
    config = json.loads((model / "config.json").read_text())
    del config["detector"]
    (model / "config.json").write_text(json.dumps(config))
    result = runner.invoke(app, ["attribute", "predict", str(model), "--images", str(images), "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and "a damaged attribution model (KeyError" in " ".join(result.output.split())
    assert result.exception is None or isinstance(result.exception, SystemExit)
