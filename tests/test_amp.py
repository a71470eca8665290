"""Mixed precision: BN runs in float32 under bf16 autocast, which torch.func's vmap(grad) needs
(a bf16 input with float32 weights fails there); and, on CUDA, an AMP attack runs end to end and
is scored although its originals sit on the GPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from gradinv_lib.attack.bn_stats import bn_in_float32, bn_mode
from gradinv_lib.models import build_model


def _per_seed_grads(model, x, labels):
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss(p, images):
        with torch.autocast("cpu", dtype=torch.bfloat16), bn_in_float32(model):
            logits = functional_call(model, (p, buffers), (images,))
        return F.cross_entropy(logits.float(), labels)
    return vmap(grad(loss), in_dims=(None, 0))(params, x)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_bn_in_float32_lets_vmap_grad_run_under_bf16_autocast(mode):
    model = build_model("lenet_bn", weights="random", num_classes=10)
    x, labels = torch.randn(2, 3, 3, 32, 32), torch.tensor([0, 4, 7])
    with bn_mode(model, mode):  # without bn_in_float32, torch 2.11-2.14 raise a dtype error here
        grads = _per_seed_grads(model, x, labels)
        params = [p for p in model.parameters()]
        exact = [torch.autograd.grad(F.cross_entropy(model(seed), labels), params) for seed in x]
    for k, (name, g) in enumerate(grads.items()):  # bf16 forward: close to the fp32 gradients
        reference = torch.stack([seed[k] for seed in exact])
        assert (g - reference).norm() <= 0.05 * reference.norm() + 1e-6, name
    assert not any(m._forward_pre_hooks for m in model.bn_layers().values())  # hooks removed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_amp_attack_runs_and_is_scored_on_cuda():
    from gradinv_lib.attack.config import InversionConfig
    from gradinv_lib.experiments.run import attack_batch
    model = build_model("lenet_bn", weights="random", num_classes=10, device="cuda")
    images, labels = torch.rand(4, 3, 32, 32, device="cuda"), torch.tensor([1, 3, 5, 7], device="cuda")
    config = InversionConfig(iterations=6, seeds=2, amp=True, warmup=1, register_every=2, log_every=2)
    result, ev = attack_batch(model, images, labels, config, bn_mode="train")
    assert result.consensus.shape == images.shape
    assert ev["labels"]["accuracy"] == 1.0
    assert ev["metrics"]["psnr"] > 0
