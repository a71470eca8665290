"""Identification metrics: IIP on (pretrained) features, pixel-correlation nearest neighbours,
sibling crops counted apart, and the pool's source-photo groups."""

import pytest
import torch
import torch.nn.functional as F

from gradinv_lib import metrics as M
from gradinv_lib.data import load_pool, read_manifest
from gradinv_lib.errors import InputError, MissingAssetError
from gradinv_lib.metrics import features as feature_module
from gradinv_lib.metrics.features import lite0_input_side
from gradinv_lib.models import weights


def imgs(n, s=16, seed=0):
    return torch.rand(n, 3, s, s, generator=torch.Generator().manual_seed(seed))


def test_pixel_correlation_hits_ignore_colour_and_gain():
    gallery = imgs(30, seed=1)
    idx = torch.tensor([4, 0, 29, 11])
    recon = 0.5 * gallery[idx] + torch.tensor([0.3, 0.1, 0.2])[:, None, None]  # other colour, contrast
    out = M.pixel_correlation_nn(recon, gallery, idx)
    assert out["hit"] == 1.0 and out["sibling_hit"] == 0.0 and torch.equal(out["nearest"], idx)
    torch.testing.assert_close(out["similarity"], torch.ones(4, dtype=torch.double))
    flat = gallery[idx].mean(dim=(-2, -1), keepdim=True).expand_as(recon)  # each original's mean colour
    none = M.pixel_correlation_nn(flat, gallery, idx)
    assert none["hit"] == 0.0 and (none["nearest"] == -1).all()  # colour alone identifies nothing
    with pytest.raises(InputError, match="one image shape"):
        M.pixel_correlation_nn(recon[..., :8], gallery, idx)


def test_siblings_are_counted_apart_from_hits():
    gallery = imgs(6, seed=2)
    groups = torch.tensor([0, 0, 1, 1, 2, 3])  # 0/1 and 2/3 are crops of one photo each
    idx = torch.tensor([0, 2, 4, 5])
    recon = gallery[torch.tensor([1, 2, 5, 4])]  # a sibling, a hit, two plain misses
    out = M.pixel_correlation_nn(recon, gallery, idx, groups=groups)
    assert out["hits"].tolist() == [False, True, False, False]
    assert out["sibling_hits"].tolist() == [True, False, False, False]
    assert out["hit"] == 0.25 and out["sibling_hit"] == 0.25
    assert M.pixel_correlation_nn(recon, gallery, idx)["sibling_hit"] == 0.0  # no groups, no siblings
    with pytest.raises(InputError, match="one group id per gallery image"):
        M.pixel_correlation_nn(recon, gallery, idx, groups=groups[:5])
    with pytest.raises(InputError, match=r"indices in \[0, 6\)"):
        M.pixel_correlation_nn(recon, gallery, torch.tensor([0, 2, 4, 6]))


def test_pool_source_groups_follow_the_manifest():
    entries = read_manifest()["entries"]
    pool = load_pool(32)
    groups = M.pool_source_groups()
    assert groups.shape == (len(pool),) == (len(entries),)
    for i in range(len(entries)):  # same group <=> same source photo
        same = [j for j in range(len(entries)) if entries[j]["source"] == entries[i]["source"]]
        assert (groups == groups[i]).nonzero().flatten().tolist() == same
    assert groups.max().item() + 1 == len({e["source"] for e in entries}) < len(entries)
    sub = [pool.ids[k] for k in (7, 3, 90)]
    assert M.pool_source_groups(sub).tolist() == groups[[7, 3, 90]].tolist()
    with pytest.raises(InputError, match="unknown"):
        M.pool_source_groups(["no-such-image.png"])


@pytest.fixture(scope="module")
def lite0():
    try:
        return M.lite0_model()
    except MissingAssetError as exc:
        pytest.skip(str(exc))


def test_lite0_features_resize_small_images_and_are_cached(lite0):
    x = load_pool(32).images[:3]
    f = M.lite0_features(x)
    assert f.shape == (3, 1280) and M.lite0_model() is lite0
    assert [lite0_input_side(s) for s in (32, 100, 112, 224, 300)] == [64, 200, 224, 224, 300]
    big = F.interpolate(x, size=(64, 64), mode="bicubic", align_corners=False).clamp(0, 1)
    torch.testing.assert_close(f, M.penultimate_features(lite0, big), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(M.feature_distance(None, x, x.flip(0)), (f - f.flip(0)).norm(dim=1))


def test_noisy_originals_are_identified_at_the_calibrated_side_not_at_224(lite0, monkeypatch):
    """The calibration behind ``lite0_input_side``: a copy of each pool image with N(0, 0.1)
    noise (a reconstruction's error at ~20 dB) is found among the pool at 2x upsampling, mostly
    not at 7x; each image's flat mean colour is found at neither."""
    pool = load_pool(32).subset(range(0, 110, 2))
    idx = torch.arange(len(pool))
    noisy = (pool.images + 0.1 * torch.randn(pool.images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    flat = pool.images.mean((-2, -1), keepdim=True).expand_as(pool.images).contiguous()
    rates = {}
    for upsampling in (2, 7):
        monkeypatch.setattr(feature_module, "MAX_UPSAMPLING", upsampling)
        gallery = M.lite0_features(pool.images)
        rates[upsampling] = [M.nearest_neighbour_hits(M.lite0_features(x), gallery, idx)["hit"] for x in (noisy, flat)]
    assert rates[2][0] >= 0.4 and rates[2][0] >= 2 * rates[7][0], rates
    assert max(rates[2][1], rates[7][1]) <= 0.1, rates


def test_iip_on_pretrained_features_with_siblings(lite0):
    pool = load_pool(32).subset(range(0, 110, 3))  # 37 images keep the test short
    groups = M.pool_source_groups(pool.ids)
    gallery = M.lite0_features(pool.images)
    idx = torch.tensor([0, 9, 20, 33])
    res = M.identifiability_precision(None, pool.images[idx], idx, pool_features=gallery, groups=groups)
    assert res["iip"] == 1.0 and res["sibling_hit"] == 0.0 and torch.equal(res["nearest"], idx)
    grey = torch.full((4, 3, 32, 32), 0.5)
    assert M.identifiability_precision(None, grey, idx, pool_features=gallery, groups=groups)["iip"] == 0.0
    with pytest.raises(InputError, match="pool_images01 or pool_features"):
        M.identifiability_precision(None, grey, idx)


def test_lite0_missing_weights_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(weights, "LITE0_PACKAGE", "no_such_lite0_package")
    M.lite0_model.cache_clear()
    try:
        with pytest.raises(M.Lite0FeaturesUnavailable, match="pretrained EfficientNet-Lite0 features unavailable"):
            M.lite0_features(imgs(1, s=32))
        with pytest.warns(UserWarning, match="feature_dist left out"):
            out = M.evaluate_reconstruction(imgs(2, s=32), imgs(2, s=32, seed=1))
        assert out["feature_dist"] is None
    finally:
        M.lite0_model.cache_clear()
    assert issubclass(M.Lite0FeaturesUnavailable, MissingAssetError)
