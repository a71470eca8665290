"""Prior attacks of Table 4 / Fig. 5 on tiny CPU cases: each does what its paper says."""

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradinv_lib.prior_attacks.state as state_module
from gradinv_lib.attack.objectives import AttackState, BNPrior, ClassificationLoss, TotalVariation
from gradinv_lib.attack.seed_gradients import per_seed_gradients
from gradinv_lib.errors import InputError, MissingAssetError
from gradinv_lib.federated.client import simulate_client
from gradinv_lib.metrics import psnr
from gradinv_lib.models.base import ImageClassifier
from gradinv_lib.prior_attacks import (DeepInversionConfig, DLGConfig, GANProjectionConfig, InvertingGradientsConfig,
                                       LoopSettings, biggan_unavailable_reason, load_biggan, minimise, run_prior_attack)

NC = 10


def sigmoid_net(seed=0):
    """DLG's setting: a small LeNet-like network with sigmoid activations, 8x8 input."""
    torch.manual_seed(seed)
    body = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 12, 5, padding=2, stride=2), act1=nn.Sigmoid(),
        conv2=nn.Conv2d(12, 12, 5, padding=2), act2=nn.Sigmoid(),
        flat=nn.Flatten(), fc=nn.Linear(12 * 4 * 4, NC)))
    return ImageClassifier(body, "fc", (0.5,) * 3, (0.5,) * 3, "sigmoid-lenet", 8).eval()


def bn_net(seed=0):
    """A tiny ReLU conv net with BatchNorm whose running statistics come from real-ish data."""
    torch.manual_seed(seed)
    body = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 8, 3, padding=1), bn1=nn.BatchNorm2d(8), act1=nn.ReLU(),
        conv2=nn.Conv2d(8, 8, 3, padding=1, stride=2), bn2=nn.BatchNorm2d(8), act2=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(8, NC)))
    model = ImageClassifier(body, "fc", (0.5,) * 3, (0.25,) * 3, "bn-net", 8)
    model.train()
    with torch.no_grad():
        body.fc.weight.mul_(20)  # confident enough for the CE term to have something to lower
        for _ in range(20):  # running statistics of smooth random images
            model(model.normalize(F.interpolate(torch.rand(16, 3, 3, 3), size=8, mode="bilinear")))
    return model.eval()


def test_soft_labels_flow_through_vmap_gradients():
    model, x = sigmoid_net(), torch.randn(1, 2, 3, 8, 8, requires_grad=True)
    logits = torch.randn(2, NC, requires_grad=True)
    out = {}
    for mode in ("vmap", "loop"):
        grads, _ = per_seed_gradients(model, x, logits.softmax(-1), mode=mode)
        out[mode] = torch.autograd.grad(sum(g.pow(2).sum() for g in grads), logits)[0]
    assert out["vmap"].abs().sum() > 0
    torch.testing.assert_close(out["vmap"], out["loop"])


def test_dlg_recovers_single_image_and_label_of_sigmoid_net():
    model = sigmoid_net()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    update = simulate_client(model, x, torch.tensor([3]))
    result = run_prior_attack("dlg", model, update, DLGConfig(iterations=300))
    assert result.labels.tolist() == [3]           # learned jointly, never read from the update
    assert psnr(result.consensus, x).item() > 35   # "almost exact": noise start is ~10 dB
    assert result.history["total"][-1] < 1e-3 * result.history["total"][0]


def test_idlg_label_is_exact_at_batch_one():
    model = sigmoid_net(1)
    gen = torch.Generator().manual_seed(0)
    for y in range(NC):
        update = simulate_client(model, torch.rand(1, 3, 8, 8, generator=gen), torch.tensor([y]))
        result = run_prior_attack("idlg", model, update, DLGConfig(labels="sum", iterations=1))
        assert result.labels.tolist() == [y]


def test_inverting_gradients_keeps_the_best_restart():
    model = sigmoid_net(2)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    update = simulate_client(model, x, torch.tensor([1, 7]))
    config = InvertingGradientsConfig(iterations=60, restarts=3, lr=0.05)
    result = run_prior_attack("inverting_gradients", model, update, config)
    losses = result.extra["restart_losses"]
    assert len(losses) == 3 and len(set(losses)) == 3   # restarts really differ
    best = result.extra["best_restart"]
    assert losses[best] == min(losses)
    assert torch.equal(result.consensus, result.images[best])
    assert result.consensus.min() >= 0 and result.consensus.max() <= 1   # box constraint
    assert sorted(result.labels.tolist()) == [1, 7]


def test_signed_adam_steps_have_lr_size():
    x = torch.zeros(5, requires_grad=True)
    weights = torch.tensor([1e-6, -1e-3, 1.0, -1e3, 1e6])
    minimise([x], lambda t: ((weights * x).sum(), {}), LoopSettings(1, 0.1, optimizer="signed_adam"))
    # Adam's first step is lr * sign(grad) for any scale; on the signed gradient too
    torch.testing.assert_close(x.detach(), -0.1 * weights.sign())


def test_deepinversion_lowers_bn_loss_without_parameter_gradients(monkeypatch):
    model = bn_net()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    update = simulate_client(model, x, torch.tensor([0, 2, 4, 6]))

    def forbidden(*args, **kwargs):
        raise AssertionError("DeepInversion computed parameter gradients")

    monkeypatch.setattr(state_module, "per_seed_gradients", forbidden)
    update.gradients = {k: torch.full_like(v, float("nan")) for k, v in update.gradients.items()}
    config = DeepInversionConfig(iterations=150, lr=0.1, alpha_bn=1.0)
    result = run_prior_attack("deepinversion", model, update, config, labels=update.labels)
    bn = result.history["bn"]
    assert bn[-1] < 0.5 * bn[0]
    assert result.history["ce"][-1] < 0.5 * result.history["ce"][0]
    with pytest.raises(InputError, match="true labels"):
        run_prior_attack("deepinversion", model, update, config)


def test_classification_loss_own_forward_matches_shared_logits():
    model = bn_net()
    images = torch.randn(2, 3, 3, 8, 8)
    term = ClassificationLoss(model, torch.tensor([1, 2, 3]))
    logits = torch.stack([model(s) for s in images])
    own = term(AttackState(images=images))
    shared = term(AttackState(images=images, logits=logits))
    torch.testing.assert_close(own, shared)
    assert term.needs_logits and not (1.0 * term + 1e-4 * TotalVariation()).needs_grads
    assert (term + BNPrior({})).needs_bn


class TinyGenerator(nn.Module):
    """z (4) + class vector (NC) -> 3 x side x side image in [0, 1]."""

    latent_dim = 4

    def __init__(self, side=8):
        super().__init__()
        torch.manual_seed(5)
        self.side = side
        self.net = nn.Sequential(nn.Linear(self.latent_dim + NC, 64), nn.Tanh(), nn.Linear(64, 3 * side * side))

    def forward(self, z, classes):
        return torch.sigmoid(self.net(torch.cat([z, classes], 1))).view(-1, 3, self.side, self.side)


def test_gan_projection_recovers_images_in_the_generators_range():
    model, generator = sigmoid_net(3), TinyGenerator().requires_grad_(False)
    labels = torch.tensor([2, 5])
    with torch.no_grad():
        x = generator(torch.randn(2, 4, generator=torch.Generator().manual_seed(4)),
                      F.one_hot(labels, NC).float())
    update = simulate_client(model, x, labels)
    config = GANProjectionConfig(iterations=150, lr=0.05, optimise_class=False)
    result = run_prior_attack("gan_projection", model, update, config, labels=labels,
                              generator=generator, latent_dim=4)
    assert psnr(result.consensus, x).mean() > psnr(result.start, x).mean() + 10
    assert result.history["grad"][-1] < 0.05 * result.history["grad"][0]


def test_biggan_missing_is_reported_not_faked(tmp_path):
    reason = biggan_unavailable_reason(tmp_path / "nowhere")
    assert reason.startswith("unavailable: needs BigGAN-deep weights at") and "nowhere" in reason
    with pytest.raises(MissingAssetError, match="BigGAN-deep"):
        load_biggan(tmp_path / "nowhere")


def test_compare_runs_every_row_on_one_update():
    from gradinv_lib.attack.config import InversionConfig
    from gradinv_lib.cli.app import build_parser
    from gradinv_lib.experiments.compare import (ALL_ATTACKS, COLUMNS, compare_attacks, default_configs,
                                                 parse_iterations, table4_csv)
    model = bn_net()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))  # SSIM needs >= 11 px
    base = InversionConfig(iterations=4, seeds=1, group="none", warmup=1)
    configs = default_configs(base)
    out = compare_attacks(model, x, torch.tensor([3, 8]), ALL_ATTACKS, configs, base,
                          registration="translation", biggan="/nonexistent")
    rows = {r["method"]: r for r in out["rows"]}
    assert out["rows"][0]["method"] == "noise" and set(rows) == {"noise", *ALL_ATTACKS}
    assert rows["gan_projection"]["status"].startswith("unavailable: needs BigGAN-deep weights at /nonexistent")
    assert rows["gan_projection"]["psnr"] is None                       # never faked
    assert rows["deepinversion"]["needs_true_labels"] and not rows["dlg"]["needs_true_labels"]
    assert rows["gan_projection"]["needs_gan"] and not rows["deepinversion"]["needs_gan"]
    for name in ALL_ATTACKS:
        if name != "gan_projection":
            assert rows[name]["status"] == "ok" and rows[name]["fft2d"] is not None
            assert rows[name]["lpips"] is None or isinstance(rows[name]["lpips"], float)
    assert rows["gradinversion_bn_exact"]["paper_psnr"] == 12.929
    assert rows["deepinversion"]["label_accuracy"] == 1.0
    assert table4_csv(out["rows"]).splitlines()[0] == ",".join(COLUMNS)
    assert parse_iterations(["7", "dlg=3"], ["dlg", "idlg"]) == {"dlg": 3, "idlg": 7}
    with pytest.raises(InputError):
        parse_iterations(["nope=3"], ["dlg"])
    assert "compare" in build_parser()._subparsers._group_actions[0].choices


def test_compare_runs_the_gan_row_with_a_supplied_generator():
    from gradinv_lib.attack.config import InversionConfig
    from gradinv_lib.experiments.compare import compare_attacks, default_configs
    model, generator = bn_net(4), TinyGenerator(side=16).requires_grad_(False)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    base = InversionConfig(iterations=3, seeds=1, group="none", warmup=1, bn_target="none")
    out = compare_attacks(model, x, torch.tensor([1, 4]), ["gan_projection"], default_configs(base),
                          base, registration="translation", generator=generator, latent_dim=4)
    (row,) = out["rows"]
    assert row["status"] == "ok" and row["iterations"] == 3 and row["psnr"] is not None
