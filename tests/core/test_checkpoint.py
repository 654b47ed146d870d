import os
from pathlib import Path

import pytest
import torch

from guardgen.checkpoint import (atomic_dir, atomic_path, load_checkpoint, load_json, load_safetensors, load_state_dict,
                                 load_training_state, save_checkpoint, save_json, save_safetensors,
                                 save_training_state)
from guardgen.errors import GuardgenError


def test_safetensors_round_trip(tmp_path):
    state = {"w": torch.randn(3, 4), "b": torch.arange(5)}
    save_safetensors(state, tmp_path / "m.safetensors", metadata={"note": 1})
    back = load_safetensors(tmp_path / "m.safetensors")
    assert torch.equal(back["w"], state["w"]) and torch.equal(back["b"], state["b"])


def test_truncated_safetensors_is_one_line_error(tmp_path):
    path = save_safetensors({"w": torch.randn(64, 64)}, tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(GuardgenError, match="corrupt or truncated") as info:
        load_safetensors(path)
    assert "\n" not in str(info.value)


def test_integer_weights_are_refused_where_weights_are_loaded(tmp_path):
    path = save_safetensors({"w": torch.randn(4).to(torch.int8), "bn.num_batches_tracked": torch.tensor(3)},
                            tmp_path / "m.safetensors")
    assert load_safetensors(path)["w"].dtype == torch.int8  # any tensor file reads as it is ...
    with pytest.raises(GuardgenError, match=r"weight w is int8; guardgen loads floating-point weights") as info:
        load_state_dict(path)  # ... but not as a model's weights
    assert "\n" not in str(info.value)
    save_safetensors({"w": torch.randn(4), "bn.num_batches_tracked": torch.tensor(3)}, path)  # int64 counters are fine
    assert load_state_dict(path)["bn.num_batches_tracked"].item() == 3


def test_pickle_refused_unless_asked_then_weights_only(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(GuardgenError, match="refusing to unpickle"):
        load_state_dict(path)
    assert torch.equal(load_state_dict(path, allow_pickle=True)["w"], torch.ones(2))


def test_pickle_with_arbitrary_object_is_refused_even_when_asked(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"w": Evil()}, path)
    with pytest.raises(GuardgenError, match="cannot be read safely"):
        load_state_dict(path, allow_pickle=True)


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    target = tmp_path / "results.json"
    save_json({"good": 1}, target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"half": ')
            raise RuntimeError("interrupted")
    assert load_json(target) == {"good": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_checkpoint_folder_is_swapped_whole(tmp_path):
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, {"v": 1}, {"model": {"w": torch.zeros(2)}})
    save_checkpoint(folder, {"v": 2}, {"model": {"w": torch.ones(2)}}, extra_files={"card.md": "hello"})
    config, weights = load_checkpoint(folder)
    assert config == {"v": 2} and torch.equal(weights["model"]["w"], torch.ones(2))
    assert (folder / "card.md").read_text() == "hello"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_bad_json_is_one_line_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(GuardgenError, match="not valid JSON"):
        load_json(tmp_path / "config.json")


@pytest.mark.parametrize("fused_step", [False, True])
def test_training_state_resumes_exactly(tmp_path, fused_step):
    """The trainers ask for the fused Adam step where ``fused`` allows it; its state resumes exactly too."""
    from guardgen.utils import fused

    assert fused("cpu") and fused(torch.device("cpu")) and not fused("meta")

    def make():
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        return model, torch.optim.Adam(model.parameters(), lr=0.1, fused=fused_step)

    def run(model, opt, steps):
        for _ in range(steps):
            x = torch.randn(8, 4)
            loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    model, opt = make()
    run(model, opt, 3)
    save_training_state(tmp_path / "state", step=3, modules={"m": model}, optimizers={"o": opt})
    run(model, opt, 4)
    straight = model.weight.detach().clone()

    model2, opt2 = make()
    step, _ = load_training_state(tmp_path / "state", modules={"m": model2}, optimizers={"o": opt2})
    assert step == 3
    run(model2, opt2, 4)
    assert torch.allclose(model2.weight, straight)


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        save_json({"a": 1}, tmp_path / "x.json")
        save_safetensors({"w": torch.ones(1)}, tmp_path / "x.safetensors")
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "f").write_text("1")
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "x.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755


def test_atomic_dir_through_a_link_replaces_the_linked_folder_and_keeps_the_link(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "stale").write_text("0")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with atomic_dir(tmp_path / "link") as tmp:
        (tmp / "f").write_text("1")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "link" / "f").read_text() == "1"
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["f"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]  # nothing left beside them


def test_a_folder_given_for_a_file_and_an_unwritable_place_are_named(tmp_path):
    with pytest.raises(GuardgenError, match="a folder, not a JSON file"):
        load_json(tmp_path)
    with pytest.raises(GuardgenError, match="a folder, not a .safetensors file"):
        load_safetensors(tmp_path)
    with pytest.raises(OSError) as err:  # /proc takes no new files, even for root
        save_json({"a": 1}, "/proc/guardgen-test.json")
    assert err.value.filename == "/proc"


def test_check_out_refuses_a_place_it_cannot_write_or_that_overlaps_an_input(tmp_path):
    from guardgen.checkpoint import check_out

    model = tmp_path / "model"
    model.mkdir()
    (tmp_path / "file").write_text("x")
    check_out(tmp_path / "new" / "run", {"--model": model})  # fine: nothing is made
    assert not (tmp_path / "new").exists()
    for out, message in [(tmp_path / "file" / "run", "is a file, not a folder"),
                         (model, "the same folder as --model"),
                         (tmp_path, "holds --model"),
                         (model / "run", "inside --model")]:
        with pytest.raises(GuardgenError, match=message):
            check_out(out, {"--model": model})
    (tmp_path / "link").symlink_to(model)
    with pytest.raises(GuardgenError, match="the same folder as --model"):
        check_out(tmp_path / "link", [("--model", model)])


def test_check_out_wants_a_writable_parent_only_where_the_result_replaces_out(tmp_path, monkeypatch):
    import os

    from guardgen.checkpoint import check_out

    locked = tmp_path / "locked"
    (locked / "run").mkdir(parents=True)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))  # root passes any
    check_out(locked / "run", replaces=False)  # written into: its own folder is writable
    with pytest.raises(GuardgenError, match="its folder .*locked is not writable, and the result replaces"):
        check_out(locked / "run")
    with pytest.raises(GuardgenError, match="locked is not writable"):
        check_out(locked / "new")


def test_check_out_tries_a_write_where_permissions_do_not_tell():
    """/proc takes no new folder, even for root, whose permission bits pass everything."""
    from guardgen.checkpoint import check_out

    with pytest.raises(GuardgenError, match=r"^--out /proc/guardgen-run: /proc is not writable$"):
        check_out("/proc/guardgen-run", replaces=False)


def test_fingerprint_tells_models_apart():
    from guardgen.checkpoint import fingerprint

    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    assert fingerprint(a) == fingerprint(a) != fingerprint(b)


def test_a_damaged_or_foreign_training_state_is_one_line(tmp_path):
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.Adam(model.parameters())
    save_training_state(tmp_path / "state", step=3, modules={"m": model}, optimizers={"o": opt})
    with pytest.raises(GuardgenError, match="do not fit this model"):  # another model's weights
        load_training_state(tmp_path / "state", modules={"m": torch.nn.Linear(5, 1)})
    with pytest.raises(GuardgenError, match="not a training state this run can continue"):  # an optimizer it never saved
        load_training_state(tmp_path / "state", modules={"m": model}, optimizers={"other": opt})
    for text in ("[1]", '{"extra": {}}', '{"step": "3"}'):
        (tmp_path / "state" / "state.json").write_text(text)
        with pytest.raises(GuardgenError, match="not a training state this run can continue"):
            load_training_state(tmp_path / "state", modules={"m": model})


def test_a_resume_names_the_changed_settings_or_says_the_state_is_another_runs(tmp_path):
    model = torch.nn.Linear(4, 1)
    save_training_state(tmp_path / "state", step=3, modules={"m": model}, extra={"settings": {"lr": 0.1, "steps": 5}})
    step, _ = load_training_state(tmp_path / "state", modules={"m": model}, settings={"lr": 0.1, "steps": 5})
    assert step == 3
    with pytest.raises(GuardgenError, match=r"used other settings \(lr\)"):
        load_training_state(tmp_path / "state", modules={"m": model}, settings={"lr": 0.2, "steps": 5})
    with pytest.raises(GuardgenError, match="was another method's or command's, or an older") as err:  # not a list of every key
        load_training_state(tmp_path / "state", modules={"m": model}, settings={"alpha": 1.2, "steps": 5})
    assert "alpha" not in str(err.value)
