"""Sharding with deduplication of protected works; the disjointness check; shards on disk; shard models."""

import pytest
import torch

from guardgen.copyright import (Shards, check_shards, load_shards, near_duplicate_groups, pixel_distance, save_shards,
                                shard_dataset, train_shard_models, with_copies)
from guardgen.data import ImageSet
from guardgen.errors import GuardgenError


def _data(n=60, res=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, res, res, generator=g)
    return ImageSet(images, torch.arange(n) % 10, [str(c) for c in range(10)], "toy")


def _protected(res=8):
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 1, res, res, generator=g), torch.tensor([3, 8])


def test_near_duplicate_groups_follow_chains():
    a = torch.zeros(1, 1, 8, 8)
    images = torch.cat([a, a + 0.02, a + 0.04, a + 0.5])  # a ~ b ~ c, d apart
    groups = near_duplicate_groups(images, threshold=0.025, size=8)
    assert groups[0] == groups[1] == groups[2] != groups[3]
    assert pixel_distance(a, a + 0.02)[0, 0].item() == pytest.approx(0.02, abs=1e-6)


def test_protected_works_and_their_near_duplicates_land_in_one_shard():
    works, labels = _protected()
    data = with_copies(_data(), works, labels, copies=10, noise=0.01, seed=0)
    plan = shard_dataset(data, works, n_shards=2, threshold=0.05, size=8, seed=0)
    assert plan.protected_shard.tolist() == [0, 1]  # round-robin over shards
    for j, members in enumerate(plan.protected_members):
        assert len(members) == 10  # every noisy copy was found
        assert (plan.assignment[members] == plan.protected_shard[j]).all()
    sizes = torch.bincount(plan.assignment, minlength=2)
    assert sizes.sum() == len(data) and abs(int(sizes[0] - sizes[1])) <= 1  # disjoint cover, balanced
    check_shards([plan.shard(data, i).images for i in range(2)], works, threshold=0.05)  # passes


def test_protected_works_chained_by_shared_copies_share_one_shard():
    """A and B share no copy, but C shares one with each: all three (and their copies) go to one shard."""
    flat = torch.ones(1, 1, 8, 8)
    works = torch.cat([0.02 * flat, 0.18 * flat, 0.10 * flat])  # A, B, C
    data = ImageSet(torch.cat([0.06 * flat, 0.14 * flat, torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(0)) + 1]),
                    torch.zeros(12, dtype=torch.long), ["0"], "chain")  # a copy of A and C, one of C and B, unrelated images
    plan = shard_dataset(data, works, n_shards=2, threshold=0.05, size=8)
    assert plan.protected_members == [[0], [1], [0, 1]]
    assert len(set(plan.protected_shard.tolist())) == 1
    for j, members in enumerate(plan.protected_members):
        assert (plan.assignment[members] == plan.protected_shard[j]).all()  # the safe model is another shard's


def test_check_shards_refuses_a_protected_work_in_both_shards_and_names_the_copies():
    works, labels = _protected()
    data = with_copies(_data(), works, labels, copies=10, noise=0.01, seed=0)
    plan = shard_dataset(data, works, threshold=0.05, seed=0)
    leaked = plan.assignment.clone()
    leaked[plan.protected_members[0][3]] = 1  # one copy of work 0 moved to the other shard
    shards = [data.images[leaked == i] for i in range(2)]
    with pytest.raises(GuardgenError, match=r"protected work 0 has \(near-\)duplicates in 2 shards \(shard 0 images .*; shard 1 images \d+\)"):
        check_shards(shards, works, threshold=0.05)


def test_check_shards_refuses_non_disjoint_shards():
    data = _data()
    works, _ = _protected()
    with pytest.raises(GuardgenError, match="not disjoint: 1 image\\(s\\) in both a and b"):
        check_shards([data.images[:30], torch.cat([data.images[30:], data.images[5:6]])], works, names=["a", "b"])


def test_shards_round_trip_and_a_tampered_folder_is_refused(tmp_path):
    works, labels = _protected()
    data = with_copies(_data(), works, labels, copies=5, noise=0.01)
    plan = shard_dataset(data, works, threshold=0.05)
    save_shards(Shards(data, plan, works, labels, ["a", "b"]), tmp_path / "s")
    back = load_shards(tmp_path / "s")
    assert torch.equal(back.data.images, data.images) and torch.equal(back.plan.assignment, plan.assignment)
    assert back.safe_shard(0) == 1 and back.safe_shard(1) == 0
    from safetensors.torch import load_file, save_file

    t = load_file(tmp_path / "s" / "shards.safetensors")
    t["assignment"][plan.protected_members[1][0]] = 0
    save_file(t, tmp_path / "s" / "shards.safetensors")
    with pytest.raises(GuardgenError, match="protected work 1"):
        load_shards(tmp_path / "s")


def test_shard_models_train_through_the_zoo_loop(tmp_path):
    works, labels = _protected()
    data = with_copies(_data(), works, labels, copies=4, noise=0.01)
    shards = Shards(data, shard_dataset(data, works, threshold=0.05), works, labels, ["a", "b"])
    metrics = train_shard_models(shards, tmp_path / "m", which=["full", "shard-1"], steps=2, batch_size=8,
                                 block_out_channels=(8, 16), device="cpu", checkpoint_every=100)
    assert metrics["full"]["train_images"] == len(data) and metrics["shard-1"]["train_images"] == len(shards.shard(1))
    assert (tmp_path / "m" / "full" / "model_index.json").is_file() and (tmp_path / "m" / "shard-1" / "unet").is_dir()
    with pytest.raises(GuardgenError, match="unknown model"):
        train_shard_models(shards, tmp_path / "m", which=["shard-7"])


def test_an_interrupted_shard_training_resumes(tmp_path):
    """Ctrl-C in the second model: --resume keeps the finished one (not trained again), continues the other from its
    training state to the weights of an uninterrupted run; a kept model trained with other settings is refused."""
    from guardgen.checkpoint import load_safetensors

    works, labels = _protected()
    data = with_copies(_data(), works, labels, copies=4, noise=0.01)
    shards = Shards(data, shard_dataset(data, works, threshold=0.05), works, labels, ["a", "b"])
    kw = dict(which=["full", "shard-0"], steps=6, batch_size=8, block_out_channels=(8, 16), device="cpu", checkpoint_every=2)
    train_shard_models(shards, tmp_path / "ref", **kw)

    def stop(step, logs):
        if logs["model"] == "shard-0" and step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_shard_models(shards, tmp_path / "run", callback=stop, **kw)
    seen = []
    metrics = train_shard_models(shards, tmp_path / "run", callback=lambda step, logs: seen.append((logs["model"], step)),
                                 resume=True, **kw)
    assert seen == [("shard-0", 5), ("shard-0", 6)]  # full kept; shard-0 from its state at step 4
    assert metrics["full"]["train_images"] == len(data) and metrics["shard-0"]["steps"] == 6
    for name in ("full", "shard-0"):
        ref = load_safetensors(tmp_path / "ref" / name / "unet" / "diffusion_pytorch_model.safetensors")
        run = load_safetensors(tmp_path / "run" / name / "unet" / "diffusion_pytorch_model.safetensors")
        assert all(torch.allclose(ref[k], run[k], atol=1e-6) for k in ref)
    with pytest.raises(GuardgenError, match="used other settings \\(steps\\)"):
        train_shard_models(shards, tmp_path / "run", resume=True, **{**kw, "steps": 8})


def test_reproduction_refuses_images_of_another_size():
    from guardgen.copyright import reproduction

    with pytest.raises(GuardgenError, match=r"samples are \(1, 8, 8\), the protected works \(1, 12, 12\)"):
        reproduction(torch.rand(3, 1, 8, 8), torch.rand(2, 1, 12, 12), delta=0.1)
    works = torch.stack([torch.zeros(1, 12, 12), torch.ones(1, 12, 12)])
    samples = torch.stack([torch.ones(1, 8, 8), torch.full((1, 8, 8), 0.5), torch.zeros(1, 8, 8)])
    result = reproduction(samples, works, delta=0.1, size=4)  # both pooled to 4x4: two exact copies, one far from both
    assert result["hits"] == 2 and result["per_work"] == pytest.approx([1 / 3, 1 / 3])
