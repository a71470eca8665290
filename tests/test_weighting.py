"""The term weighting (config ``weighting``), the forces recorded in every result, and the quick
profile's network: the parts of issue 11's "balanced objective"."""

import torch

from gradinv_lib.attack.config import WEIGHTINGS, InversionConfig
from gradinv_lib.attack.pipeline import gradinversion
from gradinv_lib.data import load_pool, sample_batch
from gradinv_lib.federated.client import simulate_client
from gradinv_lib.models import build_model
from gradinv_lib.profiles import get_profile


def test_weighting_sets_every_unset_alpha_and_replace_swaps_them():
    balanced, paper = InversionConfig(), InversionConfig(weighting="paper")
    assert balanced.alpha_grad == WEIGHTINGS["balanced"]["alpha_grad"]
    assert paper.alpha_tv == 1e-4 and paper.alpha_grad == 1e-3  # the paper's constants
    assert balanced.replace(weighting="paper") == paper
    assert balanced.replace(weighting="paper", alpha_tv=0.5).alpha_tv == 0.5
    assert balanced.replace(alpha_tv=0.5).alpha_grad == balanced.alpha_grad
    assert InversionConfig.from_dict(paper.to_dict()) == paper  # saved numbers are explicit


def test_quick_profile_attacks_a_training_client_with_the_balanced_full_method():
    profile = get_profile("quick")
    assert profile.client_bn_mode == "train" and profile.config.weighting == "balanced"
    assert profile.config.seeds >= 4 and profile.config.group == "registered"
    assert get_profile("paper").config.weighting == "paper"


def test_lenet_bn_widths_share_one_architecture():
    x = torch.rand(2, 3, 32, 32)
    for name, width in (("lenet_bn16", 16), ("lenet_bn", 32), ("lenet_bn64", 64)):
        model = build_model(name, weights="random", num_classes=10)
        assert model(model.normalize(x)).shape == (2, 10)
        assert model.final_layer.in_features == width * 8 * 8 and len(model.bn_layers()) == 4


def test_every_result_records_each_terms_force_at_start_and_end():
    model = build_model("lenet_bn16", weights="random", num_classes=1000)
    batch = sample_batch(load_pool(32), 2, seed=0)
    update = simulate_client(model, batch.images, batch.labels).without_labels()
    config = InversionConfig(iterations=3, seeds=2, group="lazy", warmup=1, checkpoint_every=0)
    result = gradinversion(model, update, config, progress=False)
    assert set(result.forces) == {"start", "end"}
    assert set(result.forces["start"]) == {"grad", "tv", "l2", "bn", "group"}
    assert all(v > 0 for v in result.forces["start"].values())  # seeds' noise differs from its mean
    assert all(v >= 0 for v in result.forces["end"].values())
