"""Metrics against hand-computed values; LPIPS loading path; IIP; matching by label."""

import math
from collections import OrderedDict

import pytest
import torch
import torchvision
from torch import nn

from gradinv_lib import metrics as M
from gradinv_lib.errors import InputError, MissingAssetError
from gradinv_lib.metrics import perceptual
from gradinv_lib.models.base import ImageClassifier
from gradinv_lib.registration import Registration, translation_matrix, warp_translate


def imgs(n=2, s=16, seed=0):
    return torch.rand(n, 3, s, s, generator=torch.Generator().manual_seed(seed))


def test_psnr_of_known_mse_and_cap():
    x = torch.full((2, 3, 8, 8), 0.5)
    y = x.clone()
    y[0] += 0.1  # MSE 0.01 -> 20 dB
    assert M.psnr(y, x)[0].item() == pytest.approx(20.0, abs=1e-4)
    assert M.psnr(y, x)[1].item() == M.PSNR_CAP_DB  # identical: documented 100 dB cap


def test_fft2d_hand_values():
    x = imgs()
    assert torch.allclose(M.fft2d_distance(x, x), torch.zeros(2), atol=1e-6)
    assert torch.allclose(M.fft2d_distance(1 - x, x), torch.zeros(2), atol=1e-6)  # magnitudes only
    assert torch.allclose(M.fft2d_distance(torch.roll(x, 3, dims=-1), x), torch.zeros(2), atol=1e-6)
    assert torch.allclose(M.fft2d_distance(x + 0.2, x), torch.zeros(2), atol=1e-6)  # DC (mean colour) dropped
    n = torch.arange(16.0)
    wave = lambda k: torch.cos(2 * math.pi * k * n / 16).expand(16, 16)  # noqa: E731
    flat = torch.zeros(16, 16)

    def image(*channels):
        return (0.5 + 0.25 * torch.stack(channels))[None]

    # non-DC spectra of different frequencies do not overlap: orthogonal
    assert M.fft2d_distance(image(wave(2), wave(2), wave(2)), image(wave(3), wave(3), wave(3))).item() == pytest.approx(1.0)
    # orig: frequency 2 on the red channel only; recon: on red and green. After ImageNet
    # normalisation the channel-c peaks scale with 1/std_c, so cos = (1/s_r^2) / ((1/s_r) sqrt(1/s_r^2 + 1/s_g^2))
    s_r, s_g = M.IMAGENET_STD[:2]
    expected = 1 - s_g / math.sqrt(s_r ** 2 + s_g ** 2)  # 0.3008 (0.2929 without the normalisation)
    got = M.fft2d_distance(image(wave(2), wave(2), flat), image(wave(2), flat, flat)).item()
    assert got == pytest.approx(expected, abs=1e-6)
    # a flat image has an all-zero non-DC spectrum: the worst score against any structured image
    grey, mean_colour = torch.full_like(x, 0.5), x.mean(dim=(-2, -1), keepdim=True).expand_as(x)
    assert torch.equal(M.fft2d_distance(grey, x), torch.ones(2))
    assert torch.equal(M.fft2d_distance(mean_colour, x), torch.ones(2))
    assert torch.equal(M.fft2d_distance(grey, mean_colour), torch.zeros(2))  # both flat: nothing to tell apart


def test_ssim_hand_values_and_reference():
    x = imgs(s=24)
    assert torch.allclose(M.ssim(x, x), torch.ones(2), atol=1e-6)
    a, b = torch.full((1, 3, 16, 16), 0.2), torch.full((1, 3, 16, 16), 0.6)
    c1 = 0.01 ** 2  # constant images: sigma = 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    assert M.ssim(a, b).item() == pytest.approx((2 * 0.12 + c1) / (0.04 + 0.36 + c1), abs=1e-6)
    skm = pytest.importorskip("skimage.metrics")
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    ref = [skm.structural_similarity(x[i].double().numpy(), y[i].double().numpy(), gaussian_weights=True,
                                     sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=0)
           for i in range(2)]
    torch.testing.assert_close(M.ssim(y, x).double(), torch.tensor(ref, dtype=torch.double), atol=1e-5, rtol=0)


def shift_by(dx):
    """A fake registration that always estimates a pure x-shift of ``dx`` px; records its calls."""
    seen = []

    def register(moving, fixed):
        seen.append((moving.clone(), fixed.clone()))
        matrix = translation_matrix(torch.tensor([[float(dx), 0.0]]).expand(moving.shape[0], 2))
        return Registration(moving, matrix, matrix[:, :, 2])

    return register, seen


def test_registered_psnr_warps_each_original_onto_its_own_reconstruction():
    orig = imgs(3, s=32)
    recon = warp_translate(orig, torch.tensor([2.0, 0.0]))  # content moved right by 2 px
    register, seen = shift_by(2)
    out = M.registered_psnr(recon, orig, register)
    assert torch.all(out == M.PSNR_CAP_DB)  # integer shift, reflection borders: exact
    assert (M.psnr(recon, orig) < 15).all()
    moving, fixed = seen[0]
    assert torch.equal(moving, orig) and torch.equal(fixed, recon)  # the original moves, paired
    with pytest.raises(InputError, match="matrix of shape"):
        M.registered_psnr(recon, orig, lambda m, f: Registration(m, None, None))


def test_registered_psnr_rejects_out_of_bounds_and_sub_half_pixel_warps():
    orig = imgs(3, s=32)
    plain = M.psnr(orig.roll(5, dims=-1), orig)
    for dx in (5, -4.5, 0.4):  # beyond 1/8 of 32 px = 4 px, or below 0.5 px: identity
        register, _ = shift_by(dx)
        assert torch.equal(M.registered_psnr(orig.roll(5, dims=-1), orig, register), plain)
    register, _ = shift_by(4)  # on the bound: accepted
    assert (M.registered_psnr(orig.roll(4, dims=-1), orig, register) > plain + 3).all()


def test_registered_psnr_keeps_identity_only_when_asked():
    orig = imgs(3, seed=5, s=32)
    recon = (orig + 0.05 * torch.randn_like(orig)).clamp(0, 1)
    misalign, _ = shift_by(3)  # an in-bounds estimate that makes things worse
    plain = M.psnr(recon, orig)
    assert torch.equal(M.registered_psnr(recon, orig, misalign), plain)
    assert (M.registered_psnr(recon, orig, misalign, keep_identity=False) < plain - 1).all()


def tiny_model(seed=0):
    torch.manual_seed(seed)
    body = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 16, 3), bn=nn.BatchNorm2d(16), relu=nn.ReLU(),
                                     pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(16, 5)))
    return ImageClassifier(body, "fc", (0.5,) * 3, (0.25,) * 3, "tiny", 16).eval()


def test_feature_distance_and_iip():
    model = tiny_model()
    pool = imgs(40, seed=3)
    f = M.penultimate_features(model, pool, batch=7)  # chunked == one pass
    with torch.no_grad():
        direct = model.body.flat(model.body.pool(model.body.relu(model.body.bn(model.body.conv(model.normalize(pool))))))
    torch.testing.assert_close(f, direct)
    d = M.feature_distance(model, pool[:4], pool[4:8])
    torch.testing.assert_close(d, (direct[:4] - direct[4:8]).norm(dim=1))
    assert torch.all(M.feature_distance(model, pool[:4], pool[:4]) == 0)
    idx = torch.tensor([5, 0, 39, 17])
    res = M.identifiability_precision(model, pool[idx], idx, pool, batch=16)
    assert res["iip"] == 1.0 and res["hits"].all() and torch.equal(res["nearest"], idx)
    wrong = M.identifiability_precision(model, pool[idx], torch.tensor([6, 0, 38, 17]), pool_features=f)
    assert wrong["iip"] == 0.5 and wrong["hits"].tolist() == [False, True, False, True]


def test_match_by_labels():
    rec, true = torch.tensor([1, 3, 3, 7]), torch.tensor([3, 7, 1, 3])
    orig = imgs(4)
    recon = orig[torch.tensor([2, 3, 0, 1])] + 0.01  # recon i is a noisy copy of orig perm[i]
    perm = M.match_by_labels(rec, true, recon, orig)
    assert perm.tolist() == [2, 3, 0, 1]
    assert torch.equal(true[perm], rec)
    # a wrong recovered label (5) still gets the remaining original, chosen by MSE
    perm = M.match_by_labels(torch.tensor([1, 3, 5, 7]), true, recon, orig)
    assert sorted(perm.tolist()) == [0, 1, 2, 3] and perm.tolist() == [2, 3, 0, 1]


def test_evaluate_reconstruction_keys():
    orig, model = imgs(3), tiny_model()
    register, _ = shift_by(0)
    out = M.evaluate_reconstruction(orig, orig, model=model, registration=register, feature_model="attacked")
    assert out["psnr"] == M.PSNR_CAP_DB and out["psnr_registered"] == M.PSNR_CAP_DB
    assert out["fft2d"] == pytest.approx(0, abs=1e-6) and out["ssim"] == pytest.approx(1, abs=1e-6)
    assert out["feature_dist"] == 0 and out["lpips"] is None
    assert len(out["per_image"]["psnr"]) == 3 and out["n"] == 3
    bare = M.evaluate_reconstruction(orig, orig.flip(0), feature_model=None)
    assert set(bare) == {"fft2d", "psnr", "ssim", "feature_dist", "lpips", "per_image", "n"}
    assert bare["feature_dist"] is None and "feature_dist" not in bare["per_image"]
    with pytest.raises(InputError, match="same shape"):
        M.evaluate_reconstruction(orig, orig[:2])


def test_lpips_unavailable_without_backbone(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(M.LPIPSUnavailable, match=f"put alexnet-owt-7be5be79.pth in {tmp_path}"):
        M.lpips_metric()
    assert issubclass(M.LPIPSUnavailable, MissingAssetError)


def test_lpips_loading_path_with_fake_backbone(tmp_path, monkeypatch):
    """NOT a real LPIPS score: a randomly initialised AlexNet saved as the cache file, to check
    that the backbone is filled from the file (and nothing is downloaded)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(123)
    fake = torchvision.models.alexnet(weights=None).state_dict()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(fake, tmp_path / "hub" / "checkpoints" / M.ALEXNET_FILE)
    captured = {}
    real_load = perceptual._load_alexnet_backbone
    monkeypatch.setattr(perceptual, "_load_alexnet_backbone", lambda net, path: (captured.setdefault("net", net),
                                                                                 real_load(net, path)))
    score = M.lpips_metric()
    net = captured["net"].net
    assert torch.equal(getattr(net.slice1, "0").weight, fake["features.0.weight"])
    assert torch.equal(getattr(net.slice5, "10").bias, fake["features.10.bias"])
    x = imgs(2, s=32)
    out = score(x, x)
    assert out.shape == (2,) and torch.allclose(out, torch.zeros(2), atol=1e-6)
    assert (score(x, x.flip(0)) > 0).all()


def test_lpips_rejects_foreign_backbone_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "hub" / "checkpoints" / M.ALEXNET_FILE)
    with pytest.raises(InputError, match=r"features.0.weight of shape \(64, 3, 11, 11\), found \(3,\)"):
        M.lpips_metric()
