"""The optimisation loop: it recovers an image far above its noise start, resumes from a
checkpoint to exactly the uninterrupted result, calls its callback, and validates its config."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_classifier

from gradinv_lib.attack.config import InversionConfig
from gradinv_lib.attack.pipeline import build_objective, gradinversion
from gradinv_lib.data import embedded_cifar10
from gradinv_lib.errors import InputError
from gradinv_lib.federated.client import simulate_client
from gradinv_lib.metrics import psnr
from gradinv_lib.runtime.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def batch():
    data = embedded_cifar10()
    images = F.interpolate(data.images[:2], size=16, mode="area").clamp(0, 1)
    return images, data.labels[:2]


def small_config(**changes):
    base = dict(iterations=20, seeds=2, group="registered", register_start=0.25, register_every=3,
                lr=0.1, warmup=5, checkpoint_every=5, log_every=5)
    return InversionConfig(**{**base, **changes})


def test_inversion_recovers_image_far_above_noise_start(batch):
    model = tiny_classifier(width=16)
    images, labels = batch[0][:1], batch[1][:1]
    update = simulate_client(model, images, labels).without_labels()
    config = InversionConfig(iterations=200, seeds=1, group="none", warmup=10, bn_target="none",
                             checkpoint_every=0)
    result = gradinversion(model, update, config, progress=False)
    start, end = psnr(result.start, images).item(), psnr(result.consensus, images).item()
    assert end > start + 4.0, (start, end)
    assert result.labels.tolist() == labels.tolist()  # recovered by the min rule, not given
    assert result.history["total"][-1] < result.history["total"][0]


def test_full_objective_has_every_paper_term(batch):
    model = tiny_classifier()
    update = simulate_client(model, *batch)
    names = [t.name for _, t in build_objective(model, update, small_config(weighting="paper")).items()]
    assert names == ["grad", "tv", "l2", "bn", "group"]
    balanced = [t.name for _, t in build_objective(model, update, small_config()).items()]
    assert balanced == names
    assert "group" not in [t.name for _, t in build_objective(model, update, small_config(seeds=1)).items()]


def test_resume_from_checkpoint_equals_uninterrupted_run(batch, tmp_path):
    model = tiny_classifier()
    update = simulate_client(model, *batch)
    config = small_config()
    reference = gradinversion(model, update, config, progress=False)

    def crash_at_15(progress):
        if progress.iteration == 15:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        gradinversion(model, update, config, checkpoint_dir=tmp_path, callback=crash_at_15,
                      callback_every=5, progress=False)
    assert load_checkpoint(tmp_path)["iteration"] == 15  # saved before the callback raised
    resumed = gradinversion(model, update, config, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert resumed.resumed_from == 15
    assert torch.equal(resumed.images, reference.images)
    assert torch.equal(resumed.consensus, reference.consensus)
    assert resumed.history == reference.history


def test_resume_refuses_a_checkpoint_of_other_settings(batch, tmp_path):
    model = tiny_classifier()
    update = simulate_client(model, *batch)
    gradinversion(model, update, small_config(iterations=5), checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(InputError, match="different configuration.*lr"):
        gradinversion(model, update, small_config(iterations=5, lr=0.05), checkpoint_dir=tmp_path,
                      resume=True, progress=False)


def test_callback_sees_progress_and_images_stay_in_the_box(batch):
    model = tiny_classifier()
    update = simulate_client(model, *batch)
    seen = []
    result = gradinversion(model, update, small_config(checkpoint_every=0),
                           callback=lambda p: seen.append((p.iteration, p.to_pixels(p.images).shape,
                                                           sorted(p.losses))),
                           callback_every=10, progress=False)
    assert [s[0] for s in seen] == [10, 20]
    assert seen[0][1] == (2, 2, 3, 16, 16)
    assert seen[0][2] == sorted(["total", "grad", "tv", "l2", "bn", "group"])
    assert 0 <= result.images.min() and result.images.max() <= 1
    assert result.images.shape == (2, 2, 3, 16, 16) and result.consensus.shape == (2, 3, 16, 16)


def test_same_seed_same_result_and_bn_mode_restored(batch):
    model = tiny_classifier()
    update = simulate_client(model, *batch, bn_mode="train")
    a = gradinversion(model, update, small_config(iterations=4), progress=False)
    b = gradinversion(model, update, small_config(iterations=4), progress=False)
    assert torch.equal(a.images, b.images)
    assert not model.training and all(m.track_running_stats for m in model.bn_layers().values())


def test_config_round_trips_through_json_and_rejects_bad_values(tmp_path):
    config = small_config(alpha_l2=1e-6)
    config.save(tmp_path / "c.json")
    assert InversionConfig.load(tmp_path / "c.json") == config
    assert json.loads((tmp_path / "c.json").read_text())["alpha_l2"] == 1e-6
    with pytest.raises(InputError, match="group='sideways'"):
        InversionConfig(group="sideways")
    with pytest.raises(InputError, match="unknown InversionConfig fields"):
        InversionConfig.from_dict({"iterations": 3, "alpha_magic": 1})
    paper = InversionConfig(weighting="paper")  # the paper's constants (sec. 4)
    assert (paper.lr, paper.alpha_tv, paper.alpha_bn, paper.alpha_grad, paper.alpha_l2,
            paper.alpha_group, paper.alpha_noise, paper.seeds, paper.iterations) == (
        0.1, 1e-4, 0.1, 1e-3, 1e-5, 0.01, 0.2, 8, 20_000)
    assert InversionConfig().weighting == "balanced"  # the default: scale-free terms (README)
