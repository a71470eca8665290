"""Tests for gradinv_lib.registration (registered group consistency, Yin et al. 2021 sec. 3.4)."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F

from gradinv_lib.errors import InputError
from gradinv_lib.registration import (
    REGISTRATIONS,
    ConsensusSchedule,
    Registration,
    estimate_rotation_scale,
    lazy_consensus,
    phase_correlation_shift,
    register_similarity,
    register_translation,
    registered_consensus,
    similarity_matrix,
    warp_affine,
    warp_translate,
)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / F.mse_loss(a, b)))


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """skimage's astronaut, binned to 256x256, in [0, 1]. Shape: (3, 256, 256)."""
    skdata = pytest.importorskip("skimage.data")
    img = torch.from_numpy(skdata.astronaut()).permute(2, 0, 1).float() / 255.0
    return F.interpolate(img[None], size=(256, 256), mode="area")[0]


def _crop(photo: torch.Tensor, x0: int, y0: int, size: int = 64) -> torch.Tensor:
    return photo[None, :, y0 : y0 + size, x0 : x0 + size].contiguous()


# ------------------------------------------------------------------ phase correlation


@pytest.mark.parametrize("dx,dy", [(3, -5), (10, 7), (-12, 0), (0, 0)])
def test_phase_correlation_integer_shift_exact(photo, dx, dy):
    # fixed(x) = moving(x - d): crop the same photo at offsets (true content, no wrap-around)
    fixed = _crop(photo, 100, 80)
    moving = _crop(photo, 100 + dx, 80 + dy)
    shift = phase_correlation_shift(moving, fixed)
    assert torch.allclose(shift.round(), torch.tensor([[float(dx), float(dy)]]))
    assert (shift - torch.tensor([[dx, dy]])).abs().max() < 0.1
    reg = register_translation(moving, fixed)
    assert (reg.params - torch.tensor([[dx, dy]])).abs().max() < 0.05


def test_phase_correlation_wraps_to_half_range(photo):
    base = _crop(photo, 60, 60)
    shifted = torch.roll(base, shifts=(-20, 25), dims=(-2, -1))  # periodic shift, dy=-20, dx=25
    shift = phase_correlation_shift(base, shifted, window=False)
    assert torch.allclose(shift, torch.tensor([[25.0, -20.0]]), atol=1e-3)
    far = torch.roll(base, shifts=(0, 40), dims=(-2, -1))  # dx=40 == -24 mod 64
    assert torch.allclose(phase_correlation_shift(base, far, window=False), torch.tensor([[-24.0, 0.0]]), atol=1e-3)


@pytest.mark.parametrize("sx,sy", [(0.3, -0.7), (2.5, 1.25), (-4.6, 0.4)])
def test_phase_correlation_subpixel(photo, sx, sy):
    src = _crop(photo, 60, 60, size=96)
    moved = warp_translate(src, torch.tensor([[sx, sy]]))
    moving, fixed = src[..., 16:80, 16:80], moved[..., 16:80, 16:80]
    truth = torch.tensor([[sx, sy]])
    assert (phase_correlation_shift(moving, fixed) - truth).abs().max() < 0.1
    assert (register_translation(moving, fixed).params - truth).abs().max() < 0.05


# ------------------------------------------------------------------ similarity


@pytest.mark.parametrize("angle,scale", [(10.0, 1.1), (-25.0, 0.9), (3.0, 1.0)])
def test_similarity_recovers_rotation_and_scale(photo, angle, scale):
    src = _crop(photo, 40, 40, size=128)
    truth = similarity_matrix(torch.tensor([angle]), torch.tensor([scale]), torch.tensor([[2.0, -3.0]]), (128, 128))
    fixed = warp_affine(src, truth)[..., 32:96, 32:96]
    moving = src[..., 32:96, 32:96]
    reg = register_similarity(moving, fixed)
    est_angle, est_scale, dx, dy = reg.params[0].tolist()
    assert abs(est_angle - angle) < 0.3
    assert abs(est_scale - scale) < 0.01
    assert abs(dx - 2.0) < 0.2 and abs(dy + 3.0) < 0.2
    inner = (slice(None), slice(None), slice(12, 52), slice(12, 52))  # away from filled borders
    before = F.mse_loss(moving[inner], fixed[inner])
    after = F.mse_loss(reg.warped[inner], fixed[inner])
    assert after < before / 20, (float(before), float(after))


def test_log_polar_estimate_is_close(photo):
    src = _crop(photo, 40, 40, size=128)
    truth = similarity_matrix(torch.tensor([10.0]), torch.tensor([1.1]), torch.zeros(1, 2), (128, 128))
    fixed = warp_affine(src, truth)[..., 32:96, 32:96]
    angle, scale = estimate_rotation_scale(src[..., 32:96, 32:96], fixed)
    assert abs(float(angle) - 10.0) < 1.0 and abs(float(scale) - 1.1) < 0.02


def test_brightness_change_does_not_bias_translation(photo):
    fixed = _crop(photo, 100, 80)
    moving = 0.6 * _crop(photo, 104, 77) + 0.2
    assert (register_translation(moving, fixed).params - torch.tensor([[4.0, -3.0]])).abs().max() < 0.05


# ------------------------------------------------------------------ registry-wide properties


@pytest.mark.parametrize("name", sorted(REGISTRATIONS))
def test_identity_input_gives_identity_transform(photo, name):
    img = _crop(photo, 90, 70)
    reg = REGISTRATIONS[name](img, img.clone())
    assert isinstance(reg, Registration)
    assert torch.allclose(reg.matrix, torch.eye(2, 3)[None], atol=1e-3)
    assert torch.allclose(reg.warped, img, atol=1e-3)


@pytest.mark.parametrize("name", sorted(REGISTRATIONS))
def test_batched_equals_per_image(photo, name):
    fixed = torch.cat([_crop(photo, 100, 80), _crop(photo, 30, 120), _crop(photo, 150, 40)])
    moving = torch.cat([_crop(photo, 103, 78), _crop(photo, 25, 121), _crop(photo, 150, 46)])
    batched = REGISTRATIONS[name](moving, fixed)
    for i in range(3):
        single = REGISTRATIONS[name](moving[i : i + 1], fixed[i : i + 1])  # N=1 works
        assert single.warped.shape == (1, 3, 64, 64)
        assert torch.allclose(batched.matrix[i], single.matrix[0], atol=1e-3)
        assert torch.allclose(batched.warped[i], single.warped[0], atol=1e-3)


@pytest.mark.parametrize("name", ["translation", "similarity", "affine"])
def test_registration_at_224_px(photo, name):
    fixed = photo[None, :, 10:234, 20:244]
    moving = photo[None, :, 16:240, 11:235]  # fixed(x) = moving(x - (-9, 6))
    reg = REGISTRATIONS[name](moving, fixed)
    assert reg.warped.shape == fixed.shape
    assert (reg.matrix[0, :, 2] - torch.tensor([-9.0, 6.0])).abs().max() < 0.2
    inner = (slice(None), slice(None), slice(20, 204), slice(20, 204))
    assert _psnr(reg.warped[inner], fixed[inner]) > 40.0


# ------------------------------------------------------------------ consensus


def test_registered_consensus_beats_lazy_mean(photo):
    offsets = [(0, 0), (3, -2), (-4, 1), (2, 4), (-1, -3), (5, 2), (-3, -4), (1, 3)]
    base = [(40, 60), (120, 100), (70, 150)]
    seeds = torch.stack(
        [torch.cat([_crop(photo, x + dx, y + dy) for x, y in base]) for dx, dy in offsets]
    )  # (G=8, B=3, 3, 64, 64)
    original = torch.cat([_crop(photo, x + 0, y + 0) for x, y in base])  # the mean offset is (0.375, 0.125)
    lazy = lazy_consensus(seeds)
    reg = registered_consensus(seeds, "translation")
    assert reg.shape == (3, 3, 64, 64)
    inner = (slice(None), slice(None), slice(8, 56), slice(8, 56))
    # the registered stack lands on the blurry mean, whose effective centre sits a fraction of a pixel
    # from the original's; compare up to that shared offset (bilinear resampling caps the PSNR ~29 dB)
    aligned = register_translation(reg, original).warped
    psnr_lazy, psnr_reg = _psnr(lazy[inner], original[inner]), _psnr(aligned[inner], original[inner])
    assert psnr_reg > psnr_lazy + 8.0, (psnr_lazy, psnr_reg)  # measured: 18.7 dB -> 28.7 dB
    assert psnr_reg > 26.0


def test_consensus_is_detached_and_given_coarse_is_used(photo):
    seeds = torch.stack([_crop(photo, 50 + d, 60) for d in (0, 2, -2)]).requires_grad_(True)  # (3, 1, 3, 64, 64)
    out = registered_consensus(seeds, "similarity")
    assert not out.requires_grad and not lazy_consensus(seeds).requires_grad
    coarse = _crop(photo, 50, 60)
    out = registered_consensus(seeds, "translation", coarse=coarse)
    assert _psnr(out[:, :, 8:56, 8:56], coarse[:, :, 8:56, 8:56]) > 40.0


def test_schedule_follows_paper():
    sched = ConsensusSchedule()  # 5K of 20K, then every 100
    hits = [t for t in range(20000) if sched.should_register(t, 20000)]
    assert hits[0] == 5000 and hits[1] == 5100 and len(hits) == 150
    assert not sched.should_register(4999, 20000)
    with pytest.raises(Exception):
        sched.every = 5  # frozen
    with pytest.raises(InputError, match="every"):
        ConsensusSchedule(every=0)


# ------------------------------------------------------------------ input errors


def test_wrong_shapes_raise_input_error():
    with pytest.raises(InputError, match=r"\(3, 64, 64\)"):
        register_translation(torch.rand(3, 64, 64), torch.rand(3, 64, 64))
    with pytest.raises(InputError, match=r"\(2, 3, 64, 64\) and \(2, 3, 32, 32\)"):
        REGISTRATIONS["similarity"](torch.rand(2, 3, 64, 64), torch.rand(2, 3, 32, 32))
    with pytest.raises(InputError, match=r"\(8, 3, 64, 64\)"):
        registered_consensus(torch.rand(8, 3, 64, 64))
    with pytest.raises(InputError, match="dtype"):
        phase_correlation_shift(torch.zeros(1, 1, 16, 16, dtype=torch.long), torch.zeros(1, 1, 16, 16))
    with pytest.raises(InputError, match="method"):
        registered_consensus(torch.rand(2, 1, 3, 16, 16), method="ransac-flow")
    with pytest.raises(InputError, match=r"\(1, 3\)"):
        warp_translate(torch.rand(1, 3, 16, 16), torch.zeros(1, 3))
    with pytest.raises(InputError, match="coarse"):
        registered_consensus(torch.rand(2, 1, 3, 16, 16), coarse=torch.rand(2, 3, 16, 16))


# ------------------------------------------------------------------ timing (printed, not asserted)


def test_timing_print(photo):
    imgs = F.interpolate(photo[None], size=(80, 80), mode="area").expand(64, 3, 80, 80)
    moving, fixed = imgs[..., 8:72, 8:72].contiguous(), imgs[..., 5:69, 10:74].contiguous()
    seeds = moving.reshape(8, 8, 3, 64, 64)
    for label, fn in [
        ("translation", lambda: REGISTRATIONS["translation"](moving, fixed)),
        ("similarity", lambda: REGISTRATIONS["similarity"](moving, fixed)),
        ("consensus/translation", lambda: registered_consensus(seeds, "translation")),
    ]:
        fn()
        start = time.perf_counter()
        fn()
        ms = 1000 * (time.perf_counter() - start)
        print(f"\n[registration timing] {label} on 64x3x64x64: {ms:.1f} ms ({torch.get_num_threads()} threads)")
    assert math.isfinite(ms)
