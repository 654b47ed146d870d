import json

import pytest
import torch
from typer.testing import CliRunner

from guardgen.cli import app
from guardgen.cli.attack import classifier_data
from guardgen.models import load_model

runner = CliRunner()
QUICK = ("--max-samples", 200, "--device", "cpu")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_worst_case_forget_end_to_end_then_evaluate(tmp_path):
    out = tmp_path / "wc"
    result = invoke("attack", "worst-case-forget", "--model", "zoo:mnist-oracle", "--data", "mnist", "--size", 20,
                    "--method", "ga_classifier", "--iterations", 2, "--inner-steps", 1, "--epochs", 1, "--out", out, *QUICK)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "indices.json").read_text())
    assert len(record["indices"]) == 20 == len(set(record["indices"])) and all(0 <= i < 200 for i in record["indices"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"ua", "mia_efficacy", "ra", "ta"} <= set(metrics["evaluation"]) and len(metrics["history"]) == 2
    assert (out / "gallery.png").is_file() and "worst-case forget set" in result.output

    result = invoke("unlearn", "evaluate", "--model", "zoo:mnist-oracle", "--method", "ft", "--forget-set", out / "indices.json",
                    "--epochs", 1, "--retrain-epochs", 1, "--out", tmp_path / "ev", *QUICK)
    assert result.exit_code == 0, result.output
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["forget_size"] == 20 and 0 <= res["gap_to_retrain"] <= 1
    assert "gap to retrain" in result.output and "MIA-efficacy" in result.output
    # the unlearned classifier is saved as a classifier folder that any command loads
    net, oracle = load_model(str(tmp_path / "ev"), kind="classifier"), load_model("zoo:mnist-oracle", kind="classifier")
    train, _ = classifier_data("mnist", 16, 200)
    idx = torch.tensor(record["indices"])
    with torch.no_grad():
        assert (net(train.images[idx]).argmax(1) == train.labels[idx]).float().mean().item() == pytest.approx(1 - res["ft"]["ua"])
    assert any(not torch.equal(a, b) for a, b in zip(net.state_dict().values(), oracle.state_dict().values()))
    config = json.loads((tmp_path / "ev" / "config.json").read_text())
    assert config["unlearning"]["method"] == "ft" and config["unlearning"]["samples"]["forget"] == 20
    assert config["unlearned_from"] == "zoo:mnist-oracle" and config["architecture"] == "guardgen_digitnet"


def test_class_mode_and_no_retrain(tmp_path):
    out = tmp_path / "cls"
    result = invoke("attack", "worst-case-forget", "--model", "zoo:mnist-oracle", "--size", 1, "--mode", "class", "--reverse",
                    "--iterations", 1, "--inner-steps", 1, "--no-evaluate", "--out", out, *QUICK)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "indices.json").read_text())
    assert len(record["indices"]) == 1 and len(record["sample_indices"]) > 1
    result = invoke("unlearn", "evaluate", "--model", "zoo:mnist-oracle", "--method", "ga_classifier", "--forget-set", out / "indices.json",
                    "--epochs", 1, "--no-retrain", *QUICK)
    assert result.exit_code == 0, result.output
    assert "UA" in result.output and "gap to retrain" not in result.output


def test_gap_signal_from_the_cli(tmp_path):
    out = tmp_path / "gap"
    result = invoke("attack", "worst-case-forget", "--model", "zoo:mnist-oracle", "--size", 10, "--method", "ft", "--signal", "gap",
                    "--reference-set", "epochs=1", "--reference-set", "augment=false", "--iterations", 1, "--inner-steps", 1, "--no-evaluate", "--out", out, *QUICK)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "indices.json").read_text())
    assert record["signal"] == "gap" and len(set(record["indices"])) == 10
    # the selection is the 10 samples whose loss departs most from the held-out reference's (one iteration, hardened)
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert history[0]["selected_loss"] < history[0]["mean_loss"] <= 0  # the signal is -|loss - reference|
    assert "signal gap" in " ".join(result.output.split())  # the table title may wrap


def test_methods_lists_the_classifier_methods():
    result = invoke("unlearn", "methods")
    assert result.exit_code == 0
    for name in ("ft", "ga_classifier", "rl", "l1_sparse", "salun", "retrain_classifier", "sfd"):
        assert name in result.output


def one_line(result):
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    return result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("args,message", [
    (("--size", 5000), "between 1 and 199"),
    (("--size", 5, "--method", "nope"), "unknown classifier unlearning method 'nope'; choose one of: ft, ga_classifier, l1_sparse"),
    (("--size", 5, "--method", "esd"), "unknown classifier unlearning method 'esd'"),
    (("--size", 5, "--data", "cifar"), "unknown data 'cifar'"),
    (("--size", 5, "--set", "bogus=1"), "unknown setting(s) bogus"),
    (("--size", 5, "--signal", "bogus"), "unknown --signal 'bogus'; choose loss or gap"),
    (("--size", 5, "--mode", "prompt"), "unknown --mode 'prompt'; choose data or class"),
    (("--size", 5, "--signal", "gap", "--reference-set", "depth=3"), "retrain_classifier: unknown setting(s) depth"),
])
def test_attack_bad_input(tmp_path, args, message):
    result = invoke("attack", "worst-case-forget", "--model", "zoo:mnist-oracle", *args, "--out", tmp_path / "r", *QUICK)
    assert one_line(result) and message in result.output.replace("\n", " "), result.output


@pytest.mark.parametrize("content,message", [
    ([1, 2, 500], "index 500 is out of range"),
    ([1, 2, 2], "index 2 appears more than once"),
    ({"other": 1}, "expected a non-empty JSON list"),
    ([], "expected a non-empty JSON list"),
])
def test_evaluate_bad_index_files(tmp_path, content, message):
    path = tmp_path / "idx.json"
    path.write_text(json.dumps(content))
    result = invoke("unlearn", "evaluate", "--model", "zoo:mnist-oracle", "--method", "ft", "--forget-set", path, *QUICK)
    assert one_line(result) and message in result.output.replace("\n", " "), result.output


def test_evaluate_unknown_method_and_missing_file(tmp_path):
    result = invoke("unlearn", "evaluate", "--model", "zoo:mnist-oracle", "--method", "sfd", "--forget-set", tmp_path / "x.json", *QUICK)
    assert one_line(result) and "choose one of: ft" in result.output
    result = invoke("unlearn", "evaluate", "--model", "zoo:mnist-oracle", "--method", "ft", "--forget-set", tmp_path / "x.json", *QUICK)
    assert one_line(result) and "no such file" in result.output


def test_an_interrupted_search_resumes_with_resume(tmp_path, monkeypatch):
    """Ctrl-C in upper step 2 of 3 (before it is saved): exit 130 with the hint; --resume runs steps 2 and 3 only, to the
    uninterrupted selection."""
    from attacks.worst_case_forget import WorstCaseForget

    args = ("attack", "worst-case-forget", "--model", "zoo:mnist-oracle", "--size", 10, "--method", "ft", "--iterations", 3,
            "--inner-steps", 1, "--no-evaluate", *QUICK)
    assert invoke(*args, "--out", tmp_path / "ref").exit_code == 0
    log = WorstCaseForget._log

    def interrupted(self, it, *a, **kw):
        log(self, it, *a, **kw)
        if it == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(WorstCaseForget, "_log", interrupted)
    result = invoke(*args, "--out", tmp_path / "run")
    assert result.exit_code == 130 and "--resume" in result.output
    monkeypatch.undo()
    steps = []
    monkeypatch.setattr(WorstCaseForget, "_log", lambda self, it, *a, **kw: steps.append(it) or log(self, it, *a, **kw))
    result = invoke(*args, "--out", tmp_path / "run", "--resume")
    assert result.exit_code == 0, result.output
    assert steps == [2, 3] and not (tmp_path / "run" / "training_state").exists()
    ref, run = (json.loads((tmp_path / d / "indices.json").read_text()) for d in ("ref", "run"))
    assert run["indices"] == ref["indices"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["history"] == json.loads((tmp_path / "ref" / "metrics.json").read_text())["history"]


def test_a_run_stopped_in_its_evaluation_keeps_the_search(tmp_path, monkeypatch):
    """Ctrl-C in the evaluation after the search: --resume searches nothing again and evaluates the same selection; a
    resume under other search settings is refused, naming them."""
    from attacks.worst_case_forget import WorstCaseForget
    from unlearn.classifier import FT

    args = ("attack", "worst-case-forget", "--model", "zoo:mnist-oracle", "--size", 10, "--method", "ft", "--iterations", 2,
            "--inner-steps", 1, "--epochs", 1, *QUICK)
    assert invoke(*args, "--out", tmp_path / "ref").exit_code == 0
    fit = FT.fit

    def interrupted(self, *a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(FT, "fit", interrupted)
    result = invoke(*args, "--out", tmp_path / "run")
    assert result.exit_code == 130 and "--resume" in result.output
    assert (tmp_path / "run" / "training_state" / "search" / "result.json").is_file()
    monkeypatch.setattr(FT, "fit", fit)
    result = invoke(*args[:-4], "--w-lr", 0.5, *QUICK, "--out", tmp_path / "run", "--resume")
    assert result.exit_code == 2 and "w_lr" in result.output and "Traceback" not in result.output
    searched = []
    monkeypatch.setattr(WorstCaseForget, "fit", lambda *a, **kw: searched.append(1))
    result = invoke(*args, "--out", tmp_path / "run", "--resume")
    assert result.exit_code == 0, result.output
    assert not searched and not (tmp_path / "run" / "training_state").exists()
    ref, run = ({f: json.loads((tmp_path / d / f).read_text()) for f in ("indices.json", "metrics.json")} for d in ("ref", "run"))
    assert run["indices.json"]["indices"] == ref["indices.json"]["indices"]
    assert run["metrics.json"]["history"] == ref["metrics.json"]["history"]
    assert run["metrics.json"]["evaluation"]["ua"] == ref["metrics.json"]["evaluation"]["ua"]


def test_resume_refuses_another_commands_state_and_another_method(tmp_path):
    out = tmp_path / "wc"
    (out / "training_state").mkdir(parents=True)
    (out / ".guardgen").touch()
    (out / "training_state" / "state.json").write_text('{"step": 3, "extra": {}}')  # an unlearning loop's state
    args = ("attack", "worst-case-forget", "--model", "zoo:mnist-oracle", "--size", 5, "--iterations", 3, "--inner-steps", 1,
            "--no-evaluate", "--max-samples", 60, "--device", "cpu", "--out", out, "--resume")
    result = invoke(*args)
    assert result.exit_code == 2 and "not a saved worst-case search" in result.output, result.output
    assert "Traceback" not in result.output

    from attacks.worst_case_forget import WorstCaseForget
    from guardgen.cli.attack import classifier_method

    def stop(step, logs):
        if step == 2:
            raise KeyboardInterrupt

    train, _ = classifier_data("mnist", 16, 60)
    search = WorstCaseForget(size=5, iterations=3, inner_steps=1, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        search.fit(load_model("zoo:mnist-oracle", kind="classifier"), (train.images, train.labels),
                   method=classifier_method("ft", {"device": "cpu"}), callback=stop, state_dir=out / "training_state")
    result = invoke(*args, "--method", "salun")
    assert result.exit_code == 2 and "other settings (method)" in result.output, result.output
    result = invoke(*args)
    assert result.exit_code == 0 and "nothing to resume" not in result.output, result.output


def test_resume_with_nothing_to_resume_says_so(tmp_path):
    result = invoke("attack", "worst-case-forget", "--model", "zoo:mnist-oracle", "--size", 5, "--iterations", 1,
                    "--inner-steps", 1, "--no-evaluate", "--max-samples", 60, "--device", "cpu", "--out", tmp_path / "typo",
                    "--resume")
    assert result.exit_code == 0 and "nothing to resume" in result.output, result.output
