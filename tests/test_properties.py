"""Property-based tests (hypothesis) of label recovery, image metrics and registration on random
shapes and values: no crash, outputs in their documented ranges, and invariants that must hold
for every input. Few examples each and no deadline, so the file stays fast on 2 CPU cores."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gradinv_lib.attack.labels import label_counts_from_fc, recover_labels
from gradinv_lib.metrics import PSNR_CAP_DB, fft2d_distance, pixel_correlation_nn, psnr, registered_psnr, ssim
from gradinv_lib.registration import DEFAULT_BOUNDS, REGISTRATIONS, register_original_onto

FEW = settings(max_examples=15, deadline=None)
seeds = st.integers(0, 2**31 - 1)


def fc_gradient(batch_labels, num_classes, features, seed):
    """Per-image CE gradients of a final layer z = W o + b (W: N x M) on non-negative features
    (post-ReLU pooling): dW_i = (p_i - onehot(y_i)) o_i^T, db_i = p_i - onehot(y_i), the
    structure eq. 8 relies on. Returns (dW_i (B, N, M), db_i (B, N), W, b)."""
    gen = torch.Generator().manual_seed(seed)
    o = torch.rand(len(batch_labels), features, generator=gen, dtype=torch.float64)
    W = torch.randn(num_classes, features, generator=gen, dtype=torch.float64)
    b = torch.randn(num_classes, generator=gen, dtype=torch.float64)
    err = torch.softmax(o @ W.T + b, dim=1) - F.one_hot(torch.as_tensor(batch_labels), num_classes)
    return err[:, :, None] * o[:, None, :], err, W, b


@st.composite
def distinct_batches(draw):
    n = draw(st.integers(2, 60))
    b = draw(st.integers(1, n))
    labels = draw(st.lists(st.integers(0, n - 1), min_size=b, max_size=b, unique=True))
    return labels, n, draw(st.integers(1, 24)), draw(seeds)


@st.composite
def image_pairs(draw, min_side=1):
    n, c = draw(st.integers(1, 3)), draw(st.sampled_from([1, 3]))
    h, w = draw(st.integers(min_side, 24)), draw(st.integers(min_side, 24))
    gen = torch.Generator().manual_seed(draw(seeds))
    a, b = torch.rand(2, n, c, h, w, generator=gen)
    return a, b


# ----------------------------------------------------------------------------- label recovery
@FEW
@given(distinct_batches(), st.data())
def test_label_recovery_is_well_formed_and_ignores_batch_order_and_scale(batch, data):
    labels, n, m, seed = batch
    per_image, _, _, _ = fc_gradient(labels, n, m, seed)
    g = per_image.mean(0)
    for rule in ("min", "sum"):
        got = recover_labels(g, len(labels), rule)
        assert got.dtype == torch.int64 and got.shape == (len(labels),)
        assert got.tolist() == sorted(set(got.tolist())) and 0 <= got.min() and got.max() < n
        order = torch.as_tensor(data.draw(st.permutations(range(len(labels)))))
        assert torch.equal(recover_labels(per_image[order].mean(0), len(labels), rule), got)
        assert torch.equal(recover_labels(g * 1e-3, len(labels), rule), got)  # a learning-rate scale


@FEW
@given(distinct_batches())
def test_single_image_label_is_always_recovered(batch):
    """With one image the present row is (p_y - 1) o <= 0 and every other row p_n o >= 0: the
    min rule is exact (iDLG's observation, eq. 8 with B = 1)."""
    labels, n, m, seed = batch
    per_image, _, _, _ = fc_gradient(labels[:1], n, m, seed)
    assert recover_labels(per_image.mean(0), 1).tolist() == labels[:1]


@FEW
@given(distinct_batches())
def test_label_counts_are_positive_and_sum_to_the_batch(batch):
    labels, n, m, seed = batch
    dW, db, W, b = fc_gradient(labels, n, m, seed)
    counts = label_counts_from_fc(dW.mean(0), db.mean(0), W, b, len(labels))
    assert counts.dtype == torch.int64 and counts.shape == (n,)
    assert counts.sum().item() == len(labels) and counts.min() >= 0


# ----------------------------------------------------------------------------- metrics
@FEW
@given(image_pairs())
def test_psnr_range_symmetry_and_cap(pair):
    a, b = pair
    p = psnr(a, b)
    assert p.shape == (a.shape[0],) and torch.isfinite(p).all()
    assert (p >= 0).all() and (p <= PSNR_CAP_DB).all()  # pixels in [0, 1]: MSE <= 1
    assert torch.equal(p, psnr(b, a))
    assert torch.equal(psnr(a, a), torch.full_like(p, PSNR_CAP_DB))


@FEW
@given(image_pairs(), st.floats(0.05, 4.0))
def test_fft2d_range_identity_and_scale_blindness(pair, scale):
    a, b = pair
    d = fft2d_distance(a, b)
    assert d.shape == (a.shape[0],) and (d >= 0).all() and (d <= 2).all()
    assert (d <= 1 + 1e-6).all()  # magnitudes are >= 0, so the cosine is >= 0
    assert fft2d_distance(a, a).abs().max() < 1e-6
    assert (fft2d_distance(a * scale, a) < 1e-6).all()  # cosine: blind to brightness scale
    offset = torch.linspace(-0.3, 0.3, a.shape[1])[:, None, None]
    assert (fft2d_distance(a + offset, a) < 1e-6).all()  # DC dropped: blind to each channel's mean


@FEW
@given(image_pairs(min_side=2), st.floats(0.2, 3.0), st.floats(-0.5, 0.5))
def test_pixel_correlation_ignores_per_channel_gain_and_offset(pair, gain, offset):
    a, b = pair
    gallery = torch.cat([a, b])
    out = pixel_correlation_nn(gain * a + offset, gallery, torch.arange(a.shape[0]))
    assert out["hit"] == 1.0 and torch.equal(out["nearest"], torch.arange(a.shape[0]))


@FEW
@given(image_pairs(min_side=11))
def test_ssim_is_at_most_one_and_one_for_identical_images(pair):
    a, b = pair
    s = ssim(a, b)
    assert s.shape == (a.shape[0],) and (s <= 1 + 1e-6).all() and (s >= -1 - 1e-6).all()
    torch.testing.assert_close(ssim(a, a), torch.ones_like(s), atol=1e-6, rtol=0)
    torch.testing.assert_close(s, ssim(b, a), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- registration
def smooth_images(n, c, h, w, seed):
    """Random images with real structure: low-resolution noise upsampled bicubically, in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, c, max(h // 4, 2), max(w // 4, 2), generator=gen)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


@settings(max_examples=8, deadline=None)
@given(st.sampled_from(sorted(REGISTRATIONS)), st.integers(1, 2), st.sampled_from([1, 3]),
       st.integers(16, 40), st.integers(16, 40), seeds)
def test_registering_an_image_onto_itself_is_the_identity(method, n, c, h, w, seed):
    x = smooth_images(n, c, h, w, seed)
    reg = REGISTRATIONS[method](x, x)
    assert reg.warped.shape == x.shape and reg.matrix.shape == (n, 2, 3)
    eye = torch.eye(2, 3, dtype=reg.matrix.dtype).expand(n, 2, 3)
    assert (reg.matrix[:, :, :2] - eye[:, :, :2]).abs().max() < 0.02, reg.matrix
    assert (reg.matrix[:, :, 2]).abs().max() < 0.25, reg.matrix  # pixels
    assert (reg.warped - x).abs().mean() < 0.01
    assert (registered_psnr(x, x, REGISTRATIONS[method]) > 35).all()


@settings(max_examples=8, deadline=None)
@given(st.sampled_from(["translation", "similarity", "affine"]), st.integers(1, 3), st.integers(16, 40), seeds,
       st.booleans())
def test_registered_psnr_never_below_plain_and_warps_stay_in_bounds(method, n, side, seed, smooth):
    gen = torch.Generator().manual_seed(seed)
    orig = smooth_images(n, 3, side, side, seed)
    recon = smooth_images(n, 3, side, side, seed + 1) if smooth else torch.rand(n, 3, side, side, generator=gen)
    reg = register_original_onto(recon, orig, REGISTRATIONS[method])
    assert DEFAULT_BOUNDS.within(reg.matrix, (side, side)).all()
    assert torch.equal(reg.warped[~reg.accepted], orig[~reg.accepted])
    assert (registered_psnr(recon, orig, REGISTRATIONS[method]) >= psnr(recon, orig)).all()

