"""Defences do what they say on a tiny case: pruning keeps exactly p%, DP-SGD clips each image's
gradient before its noise (and is the clean eval-mode update without noise), aggregation
averages, MixUp mixes with the stated weight, epsilon falls with more noise."""

import math

import pytest
import torch
from conftest import tiny_classifier

from gradinv_lib.defences import (DPSGD, FedAvg, GradientPruning, LargerBatch, MixUp, NoDefence, SecureAggregation,
                                  clean_update, compose, defence_from_dict, defended_update, dp_epsilon, images_needed,
                                  mix_batch, parse_defence, update_cosine)
from gradinv_lib.errors import InputError
from gradinv_lib.federated.client import simulate_client


@pytest.fixture(scope="module")
def model():
    return tiny_classifier(seed=3)


def batch(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g), torch.randperm(10, generator=g)[:n]


def flat(update):
    return torch.cat([g.flatten() for g in update.gradients.values()])


def test_no_defence_is_the_fedsgd_update(model):
    x, y = batch(4)
    assert torch.equal(flat(defended_update(model, x, y)), flat(simulate_client(model, x, y)))


@pytest.mark.parametrize("keep", [0.5, 0.1, 0.013])
def test_pruning_keeps_exactly_p_percent_per_tensor(model, keep):
    x, y = batch(4)
    clean, pruned = simulate_client(model, x, y), defended_update(model, x, y, GradientPruning(keep))
    for name, g in pruned.gradients.items():
        kept = g != 0
        assert int(kept.sum()) == max(1, round(keep * g.numel())), name
        smallest_kept = clean.gradients[name][kept].abs().min()
        assert (clean.gradients[name][~kept].abs() <= smallest_kept).all()   # the largest ones survive
        assert torch.equal(g[kept], clean.gradients[name][kept])
    assert pruned.bn_stats.keys() == clean.bn_stats.keys()


def test_update_cosine_whole_and_per_tensor(model):
    x, y = batch(4)
    clean, pruned = simulate_client(model, x, y), defended_update(model, x, y, GradientPruning(0.05))
    per = [torch.nn.functional.cosine_similarity(pruned.gradients[n].flatten().double(), g.flatten().double(), dim=0)
           for n, g in clean.gradients.items() if n != "body.conv1.bias"]    # before BN: zero up to rounding
    assert update_cosine(pruned, clean, per_tensor=True) == pytest.approx(float(torch.stack(per).mean()))
    assert update_cosine(pruned, clean) == pytest.approx(float(torch.nn.functional.cosine_similarity(
        flat(pruned).double(), flat(clean).double(), dim=0)))
    assert update_cosine(clean, clean) == pytest.approx(1.0) == update_cosine(clean, clean.gradients, per_tensor=True)


def test_global_pruning_keeps_p_percent_of_the_whole_update(model):
    x, y = batch(4)
    pruned = flat(defended_update(model, x, y, GradientPruning(0.05, "global")))
    assert int((pruned != 0).sum()) == round(0.05 * pruned.numel())


def _per_sample_clipped_mean(model, x, y, clip):
    rows = []
    for i in range(len(y)):
        g = flat(simulate_client(model, x[i:i + 1], y[i:i + 1], bn_mode="eval"))
        rows.append(g * min(1.0, clip / (float(g.norm()) + 1e-6)))
    return torch.stack(rows).mean(0)


def test_dp_clips_each_per_sample_gradient_before_noise(model):
    x, y = batch(3)
    norms = [float(flat(simulate_client(model, x[i:i + 1], y[i:i + 1], bn_mode="eval")).norm()) for i in range(3)]
    clip = min(norms) / 2                                   # every image's gradient is clipped
    update = defended_update(model, x, y, DPSGD(clip=clip, noise=0.0))
    assert torch.allclose(flat(update), _per_sample_clipped_mean(model, x, y, clip), atol=1e-6)
    assert float(flat(update).norm()) <= clip + 1e-6
    one = defended_update(model, x[:1], y[:1], DPSGD(clip=clip, noise=0.0))
    assert float(flat(one).norm()) == pytest.approx(clip, rel=1e-4)
    assert update.bn_stats == {} and update.bn_mode == "eval"   # BN frozen, no statistics shared


def test_dp_without_noise_and_huge_clip_is_the_clean_eval_update(model):
    x, y = batch(4)
    update = defended_update(model, x, y, DPSGD(clip=1e6, noise=0.0))
    assert torch.allclose(flat(update), flat(simulate_client(model, x, y, bn_mode="eval")), atol=1e-6)


def test_dp_noise_has_the_stated_scale_and_seed(model):
    x, y = batch(4)
    clean = flat(defended_update(model, x, y, DPSGD(clip=0.5, noise=0.0)))
    noisy = [flat(defended_update(model, x, y, DPSGD(clip=0.5, noise=2.0), seed=s)) for s in (0, 0, 1)]
    assert torch.equal(noisy[0], noisy[1]) and not torch.equal(noisy[0], noisy[2])
    std = float((noisy[0] - clean).std())
    assert std == pytest.approx(2.0 * 0.5 / 4, rel=0.1)     # noise * clip / B on the mean


def test_epsilon_is_finite_and_falls_with_more_noise():
    eps = [dp_epsilon(DPSGD(noise=s, sample_rate=0.02, steps=50)) for s in (0.7, 1.0, 2.0, 4.0)]
    assert all(math.isfinite(e) and e > 0 for e in eps)
    assert eps == sorted(eps, reverse=True) and len(set(eps)) == 4
    assert dp_epsilon(DPSGD(noise=0.0)) == math.inf
    assert dp_epsilon(DPSGD(noise=1.0, steps=1)) < dp_epsilon(DPSGD(noise=1.0, steps=100))


def test_secure_aggregation_averages_clients_and_their_bn_statistics(model):
    x, y = batch(6)
    update = defended_update(model, x[:2], y[:2], SecureAggregation(3), others=(x[2:], y[2:]))
    clients = [simulate_client(model, x[2 * c:2 * c + 2], y[2 * c:2 * c + 2]) for c in range(3)]
    assert torch.allclose(flat(update), sum(flat(c) for c in clients) / 3, atol=1e-7)
    for name, (mean, var) in update.bn_stats.items():
        assert torch.allclose(mean, sum(c.bn_stats[name][0] for c in clients) / 3, atol=1e-6)
        assert torch.allclose(var, sum(c.bn_stats[name][1] for c in clients) / 3, atol=1e-6)
    assert update.batch_size == 6 and update.labels.tolist() == y.tolist()
    assert update_cosine(update, clean_update(model, x[:2], y[:2], SecureAggregation(3), others=(x[2:], y[2:]))) \
        == pytest.approx(1.0)


def test_larger_batch_trains_on_own_and_other_images(model):
    x, y = batch(6)
    assert images_needed(LargerBatch(3), 2) == 4
    assert images_needed(compose(LargerBatch(2), SecureAggregation(2)), 2) == 6
    update = defended_update(model, x[:2], y[:2], LargerBatch(3), others=(x[2:], y[2:]))
    assert torch.equal(flat(update), flat(simulate_client(model, x, y))) and update.batch_size == 6
    with pytest.raises(InputError, match="expected 4 further images"):
        defended_update(model, x[:2], y[:2], LargerBatch(3))


def test_mixup_mixes_with_the_stated_weight(model):
    x, y = batch(4)
    mixed, partner = mix_batch(x, 0.7, torch.Generator().manual_seed(0))
    assert (partner != torch.arange(4)).all() and sorted(partner.tolist()) == [0, 1, 2, 3]
    assert torch.allclose(mixed, 0.7 * x + 0.3 * x[partner])
    update = defended_update(model, x, y, MixUp(0.7), seed=0)
    expected = 0.7 * flat(simulate_client(model, mixed, y)) + 0.3 * flat(simulate_client(model, mixed, y[partner]))
    assert torch.allclose(flat(update), expected, atol=1e-7)
    assert update.labels.tolist() == y.tolist()
    with pytest.raises(InputError, match="FedSGD step only"):
        defended_update(model, x, y, compose(MixUp(0.7), FedAvg(2, 0.1)))


def test_fedavg_is_the_client_simulation_with_local_steps(model):
    x, y = batch(4)
    update = defended_update(model, x, y, FedAvg(2, 0.1, 2))
    ref = simulate_client(model, x, y, local_steps=2, lr=0.1, local_batch_size=2)
    assert torch.equal(flat(update), flat(ref)) and update.local_steps == 2


def test_configs_round_trip_and_reject_bad_values():
    d = parse_defence("mixup:weight=0.6+prune:keep=0.2,scope=global")
    assert [p.name for p in d.parts()] == ["mixup", "prune"]        # stage order, not written order
    assert defence_from_dict(d.to_dict()) == d and parse_defence(d.label()) == d
    assert parse_defence("dp:clip=1").to_dict() == DPSGD(clip=1.0).to_dict()
    assert parse_defence("none") == NoDefence() and compose(NoDefence(), GradientPruning(0.1)) == GradientPruning(0.1)
    for text, message in [("prune:keep=0", "prune keep"), ("prune:keep=2", "prune keep"), ("dp:clip=-1", "dp clip"),
                          ("mixup:weight=0.3", "mixup weight"), ("nope", "expected one of"),
                          ("prune:frac=0.1", "prune"), ("dp+fedavg", "one defence per stage"),
                          ("fedavg:local_steps=1.5", "local_steps")]:
        with pytest.raises(InputError, match=message):
            parse_defence(text)


def test_per_sample_norms_are_each_images_own_gradient_norm(model):
    from gradinv_lib.defences import per_sample_norms
    x, y = batch(3)
    expected = [float(flat(simulate_client(model, x[i:i + 1], y[i:i + 1], bn_mode="eval")).norm()) for i in range(3)]
    assert per_sample_norms(model, x, y).tolist() == pytest.approx(expected, rel=1e-5)


def test_defend_cli_attacks_the_defended_update(tmp_path, capsys):
    import argparse
    import json

    from gradinv_lib.defences.cli import add_cli_arguments, run_cli
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    args = parser.parse_args(["--batch-size", "2", "--iterations", "2", "--seeds", "1", "--defence",
                              "dp:clip=5,noise=0.5", "--defence", "secure_aggregation:clients=2",
                              "--out", str(tmp_path), "--no-progress"])
    assert run_cli(args) == 0
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["defence"]["name"] == "compose" and record["config"]["bn_target"] == "running"
    assert record["epsilon"] > 0 and -1 <= record["utility_cosine"] <= 1 and len(record["labels"]["true"]) == 4
    assert record["model"] == "lenet_bn"
    assert "epsilon" in capsys.readouterr().out and (tmp_path / "grid.png").exists()
    with pytest.raises(InputError, match="expected one of"):
        run_cli(parser.parse_args(["--defence", "bogus", "--out", str(tmp_path)]))


def test_defend_command_reports_the_defence_its_utility_and_bad_specs_in_one_line(tmp_path, capsys):
    """``gradinv defend``: the attack on a pruned client's update, with the defence and its utility
    in the JSON record; an unknown defence is one line on stderr and exit 2."""
    import json

    from gradinv_lib.cli.app import main
    common = ["defend", "--batch-size", "2", "--iterations", "2", "--seeds", "1", "--no-progress",
              "--device", "cpu", "--out", str(tmp_path / "run")]
    assert main(common + ["--defence", "prune:keep=0.1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["defence"]["keep"] == 0.1   # a single defence is recorded as itself
    assert 0 < record["utility_cosine"] < 1 and record["labels"]["accuracy"] == 1.0
    assert (tmp_path / "run" / "grid.png").is_file()
    assert main(common + ["--defence", "shield:strength=9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shield" in err[0]
