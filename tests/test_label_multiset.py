"""Repeated labels (issue 21): the attack recovers the label multiset by default, for FedSGD and
for FedAvg with K > 1 local steps, and says when eq. 8's premises fail."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from conftest import tiny_classifier
from torch import nn

from gradinv_lib.attack.batch_labels import label_notes, recover_batch_labels
from gradinv_lib.attack.config import InversionConfig
from gradinv_lib.attack.labels import recover_labels_from_update
from gradinv_lib.attack.pipeline import gradinversion
from gradinv_lib.data import embedded_cifar10
from gradinv_lib.federated.client import simulate_client
from gradinv_lib.models import build_model
from gradinv_lib.models.base import ImageClassifier
from gradinv_lib.studies.label_multiset import multiset_hits, synthetic_accuracy

REPEATS = [0, 1, 3, 6, 6, 6, 8, 8]  # the first 8 CIFAR-10 images, sorted
TWO_STEPS = InversionConfig(iterations=2, seeds=1, group="none", warmup=0, log_every=1, bn_target="none")


@pytest.fixture(scope="module")
def lenet10():
    return build_model("lenet_bn", weights="random", num_classes=10, seed=0)


@pytest.fixture(scope="module")
def cifar():
    data = embedded_cifar10()  # its first 8 images: labels 3, 8, 8, 0, 6, 6, 1, 6
    assert sorted(data.labels[:8].tolist()) == REPEATS
    return data.images[:8], data.labels[:8]


@pytest.mark.parametrize("steps,local_batch", [(1, None), (3, None), (2, 4), (4, 2)])
def test_multiset_exact_with_repeats_fedsgd_and_fedavg(lenet10, cifar, steps, local_batch):
    images, labels = cifar
    update = simulate_client(lenet10, images, labels, local_steps=steps, lr=0.001 if steps > 1 else None,
                             local_batch_size=local_batch).without_labels()
    estimate = recover_batch_labels(update, lenet10)
    assert estimate.rule == "multiset" and estimate.labels.tolist() == REPEATS
    assert len(set(recover_labels_from_update(update, lenet10, "min").tolist())) == 8  # eq. 8: distinct


def test_the_k_step_rule_divides_by_k():
    """Derivation check on the final layer alone: (dW, db) / K of K exact SGD steps gives the counts
    at small lr for every K; without the division the counts would be read K times too large."""
    for k in (1, 2, 4):
        row = synthetic_accuracy(batch_size=8, local_steps=k, trials=10, lr=0.01, seed=1)
        assert row["accuracy"] == 1.0, row
        assert row["min_rule_accuracy"] < 1.0  # these batches repeat labels


def test_attack_uses_the_multiset_and_min_stays_available(lenet10, cifar):
    images, labels = cifar
    update = simulate_client(lenet10, images, labels).without_labels()
    assert InversionConfig().label_rule == "multiset"
    result = gradinversion(lenet10, update, TWO_STEPS, progress=False)
    assert result.labels.tolist() == REPEATS
    assert result.extra["labels"] == {"rule": "multiset", "uncertain": []}
    paper = gradinversion(lenet10, update, TWO_STEPS.replace(label_rule="min"), progress=False)
    assert paper.extra["labels"]["rule"] == "min" and len(set(paper.labels.tolist())) == 8
    assert multiset_hits(paper.labels, labels, 10) == 5 / 8


def test_distinct_labels_give_eq8s_answer():
    """On the quick network with distinct labels the default rule returns eq. 8's labels."""
    from gradinv_lib.data import load_pool, sample_batch
    model = build_model("lenet_bn", weights="random", num_classes=1000, seed=0)
    batch = sample_batch(load_pool(resolution=32), batch_size=8, seed=0)
    update = simulate_client(model, batch.images, batch.labels).without_labels()
    assert torch.equal(recover_batch_labels(update, model).labels, recover_labels_from_update(update, model))


class _Then(nn.Module):
    """``body`` then ``after`` (e.g. a final ReLU after the classifier)."""

    def __init__(self, body, after):
        super().__init__()
        self.net, self.after = body, after

    def forward(self, x):
        return self.after(self.net(x))


@pytest.mark.parametrize("change,expected", [
    ("silu", "features entering the final layer are negative"),
    ("final_relu", "output is not 'body.net.fc''s"),
    ("dropout", "drop units at random"),
])
def test_uncertain_recovery_is_said_and_warned(change, expected):
    model = tiny_classifier(act=nn.SiLU if change == "silu" else nn.ReLU)
    if change == "final_relu":
        model = ImageClassifier(_Then(model.body, nn.ReLU()), "net.fc", (0.5,) * 3, (0.25,) * 3, "relu_out", 16)
    if change == "dropout":
        body = model.body
        model = ImageClassifier(nn.Sequential(OrderedDict(
            [(n, m) for n, m in body.named_children() if n != "fc"] + [("drop", nn.Dropout(0.2)), ("fc", body.fc)])),
            "fc", (0.5,) * 3, (0.25,) * 3, "dropout", 16)
    update = simulate_client(model.eval(), torch.rand(4, 3, 16, 16), torch.tensor([1, 1, 2, 5]))
    with pytest.warns(UserWarning, match=expected):
        estimate = recover_batch_labels(update.without_labels(), model)
    assert any(expected.split(":")[0][:20] in note for note in estimate.notes)


def test_clean_network_has_no_notes_and_large_local_steps_are_flagged(lenet10, cifar):
    images, labels = cifar
    calm = simulate_client(lenet10, images, labels, local_steps=2, lr=0.001)
    assert label_notes(calm, lenet10) == []
    wild = simulate_client(lenet10, images, labels, local_steps=2, lr=0.1)
    assert any("moved the final layer's logits" in n for n in label_notes(wild, lenet10))
    uneven = simulate_client(lenet10, images, labels, local_steps=3, lr=0.001, local_batch_size=4)
    assert any("more often than others" in n for n in label_notes(uneven, lenet10))


def test_prior_attacks_take_gradinversions_rule():
    """``gradinv compare`` hands GradInversion's label rule to Inverting Gradients."""
    from gradinv_lib.experiments.compare import default_configs
    from gradinv_lib.prior_attacks.inverting_gradients import inverting_gradients
    model = tiny_classifier()
    update = simulate_client(model, torch.rand(3, 3, 16, 16), torch.tensor([1, 1, 4])).without_labels()
    config = default_configs(InversionConfig(iterations=1))["inverting_gradients"]
    assert config.label_rule == "multiset"
    assert inverting_gradients(model, update, config).labels.tolist() == [1, 1, 4]
