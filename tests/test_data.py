"""Data layer: embedded foolbox photos, preprocessing, the pseudo-labelled pool, the batch sampler
and the local ImageNet folder layouts (synthetic folders in tmp_path)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gradinv_lib.data import (
    ImageNetFolder,
    LabelledImages,
    crop_box,
    embedded_cifar10,
    embedded_imagenet,
    imagenet_root,
    load_pool,
    load_rgb,
    preprocess,
    read_manifest,
    sample_batch,
)
from gradinv_lib.data import pool as pool_mod
from gradinv_lib.errors import InputError, MissingAssetError


@pytest.fixture(scope="module")
def pool32():
    return load_pool(resolution=32)


@pytest.fixture(scope="module")
def manifest():
    return read_manifest()


def _random_image(width, height, seed=0):
    arr = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(arr), arr


def _toy_set(labels):
    n = len(labels)
    return LabelledImages(torch.rand(n, 3, 4, 4), torch.tensor(labels), [f"im{i}" for i in range(n)],
                          torch.zeros(n, dtype=torch.bool), "toy")


# ---------------------------------------------------------------- embedded foolbox images

def test_embedded_imagenet_has_20_images_19_labels():
    data = embedded_imagenet(resolution=64)
    assert len(data) == 20 and data.images.shape == (20, 3, 64, 64)
    assert data.images.dtype == torch.float32
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0 and data.images.std() > 0.1
    assert len(set(data.labels.tolist())) == 19
    assert data.labels.tolist().count(609) == 2
    assert not data.pseudo.any()
    assert data.ids[0] == "imagenet_00_243.jpg" and data.labels[0] == 243


def test_embedded_cifar10_native_32px():
    data = embedded_cifar10()
    assert data.images.shape == (20, 3, 32, 32)
    assert set(data.labels.tolist()) <= set(range(10)) and data.labels[0] == 3
    assert not data.pseudo.any()


# ---------------------------------------------------------------- preprocessing

def test_preprocess_is_exact_centre_crop_when_no_resize_needed():
    # shorter side 256 == round(224 * 256/224): the resize is the identity, the crop is centred.
    img, arr = _random_image(400, 256)
    out = preprocess(img, 224)
    expected = torch.from_numpy(arr[16:240, 88:312]).permute(2, 0, 1).float() / 255
    assert out.shape == (3, 224, 224)
    assert torch.allclose(out, expected, atol=1e-5)


def test_preprocess_small_resolution_keeps_centre_content():
    # left third red, middle green, right third blue: the centre crop of a 3:1 image is all green
    arr = np.zeros((100, 300, 3), dtype=np.uint8)
    arr[:, :100, 0] = arr[:, 100:200, 1] = arr[:, 200:, 2] = 255
    out = preprocess(Image.fromarray(arr), 32)
    assert out.shape == (3, 32, 32)
    assert out[1].min() > 0.99 and out[0].max() < 0.01 and out[2].max() < 0.01


def test_crop_box_and_flip_match_pixels():
    img, arr = _random_image(50, 40)
    out = crop_box(img, (10, 5, 30, 25), hflip=True, resolution=20)
    expected = torch.from_numpy(arr[5:25, 10:30]).permute(2, 0, 1).float().flip(-1) / 255
    assert torch.allclose(out, expected, atol=1e-5)
    with pytest.raises(InputError, match="square crop box inside the 50x40 image"):
        crop_box(img, (30, 0, 60, 30), False, 20)


def test_load_rgb_errors(tmp_path):
    with pytest.raises(MissingAssetError, match="expected an image file at .*nope.png, found nothing"):
        load_rgb(tmp_path / "nope.png")
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(InputError, match="PIL cannot read"):
        load_rgb(tmp_path / "notes.jpg")
    Image.fromarray(np.zeros((5, 7), dtype=np.uint8)).save(tmp_path / "grey.png")
    assert load_rgb(tmp_path / "grey.png").mode == "RGB"


def test_labelled_images_subset_and_validation():
    data = _toy_set([5, 6, 7])
    sub = data.subset([2, 0])
    assert sub.labels.tolist() == [7, 5] and sub.ids == ["im2", "im0"] and len(sub) == 2
    with pytest.raises(InputError, match="length 3"):
        LabelledImages(torch.rand(3, 3, 4, 4), torch.tensor([1, 2]), ["a", "b", "c"],
                       torch.zeros(3, dtype=torch.bool), "bad")


# ---------------------------------------------------------------- pseudo-labelled pool

def test_pool_has_enough_distinct_labels(pool32):
    assert pool32.images.shape[1:] == (3, 32, 32)
    assert len(pool32.distinct_labels()) >= 96  # Table 1 needs batches of 96 distinct labels


def test_pool_pseudo_flags_as_documented(pool32, manifest):
    gt = embedded_imagenet(resolution=32)
    n_gt = len(gt)
    # the 20 foolbox photos come first with their ground-truth labels, not pseudo
    assert pool32.labels[:n_gt].tolist() == gt.labels.tolist()
    assert not pool32.pseudo[:n_gt].any()
    assert torch.allclose(pool32.images[:n_gt], gt.images)
    # every other entry is a pseudo-labelled crop, one per label, never a ground-truth label
    crops = pool32.labels[n_gt:].tolist()
    assert pool32.pseudo[n_gt:].all()
    assert len(crops) == len(set(crops)) and not set(crops) & set(gt.labels.tolist())
    entries = manifest["entries"]
    assert all((e["box"] is None) == (not e["pseudo"]) for e in entries)
    assert all(e["confidence"] >= manifest["min_confidence"] for e in entries if e["pseudo"])
    assert manifest["model"] == "efficientnet_lite0" and manifest["weights_file"].endswith(".pth")
    assert manifest["n_labels"] == len(pool32.distinct_labels())


def test_pool_manifest_errors_and_roundtrip(tmp_path, manifest):
    assert read_manifest(pool_mod.write_manifest(manifest, tmp_path / "copy.json")) == manifest
    with pytest.raises(MissingAssetError, match="pool manifest at .*missing.json"):
        load_pool(manifest_path=tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="expected JSON"):
        load_pool(manifest_path=tmp_path / "bad.json")
    (tmp_path / "entry.json").write_text(json.dumps({"entries": [{"source": "skimage:astronaut.png"}]}))
    with pytest.raises(InputError, match="malformed entry"):
        load_pool(manifest_path=tmp_path / "entry.json")


def test_crop_grid_is_deterministic_and_inside():
    boxes = pool_mod.crop_grid(512, 300)
    assert boxes == pool_mod.crop_grid(512, 300)
    assert all(0 <= l < r <= 512 and 0 <= t < b <= 300 and r - l == b - t for l, t, r, b in boxes)
    assert (0, 0, 300, 300) in boxes and (212, 0, 512, 300) in boxes


def test_pool_labels_agree_with_lite0(manifest):
    models = pytest.importorskip("gradinv_lib.models")
    model = models.build_model("efficientnet_lite0")
    crops = sorted((e for e in manifest["entries"] if e["pseudo"]), key=lambda e: -e["confidence"])[:4]
    crops += [e for e in manifest["entries"] if e["pseudo"]][:2]  # and two of any confidence
    cache = {}
    images = torch.stack([pool_mod.render_entry(e, manifest["label_resolution"], cache) for e in crops])
    labels, conf = pool_mod.predict(model, images)
    assert labels.tolist() == [e["label"] for e in crops]
    assert torch.allclose(conf, torch.tensor([e["confidence"] for e in crops]), atol=2e-3)


# ---------------------------------------------------------------- sampler

def test_sampler_distinct_labels_and_reproducible(pool32):
    a = sample_batch(pool32, 48, seed=1)
    assert len(a) == 48 and len(set(a.labels.tolist())) == 48
    b = sample_batch(pool32, 48, seed=1)
    assert a.ids == b.ids and torch.equal(a.images, b.images)
    c = sample_batch(pool32, 48, seed=2)
    assert a.ids != c.ids
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert sample_batch(pool32, 8, seed=g1).ids == sample_batch(pool32, 8, seed=g2).ids


def test_sampler_chooses_uniformly_among_a_labels_images():
    data = _toy_set([0, 0, 1])
    seen = {tuple(sorted(sample_batch(data, 2, seed=s).ids)) for s in range(30)}
    assert seen == {("im0", "im2"), ("im1", "im2")}


def test_sampler_too_large_batch_names_both_numbers():
    with pytest.raises(InputError, match=r"batch_size 4 .*only 3 distinct labels"):
        sample_batch(_toy_set([0, 1, 2, 2]), 4, seed=0)


def test_sampler_repeated_labels():
    data = _toy_set([0, 0, 0, 1, 2, 3])
    batch = sample_batch(data, 5, seed=0, distinct_labels=False, repeats=2)
    counts = sorted(batch.labels.bincount().tolist(), reverse=True)
    assert counts[:3] == [2, 2, 1] and sum(counts) == 5
    label0 = [i for i, lab in zip(batch.ids, batch.labels.tolist()) if lab == 0]
    assert len(label0) == len(set(label0))  # distinct images while the label has enough
    plain = sample_batch(data, 6, seed=0, distinct_labels=False)
    assert sorted(plain.ids) == sorted(data.ids)
    with pytest.raises(InputError, match="repeats=1 with distinct_labels=True"):
        sample_batch(data, 4, seed=0, repeats=2)


# ---------------------------------------------------------------- local ImageNet folder

WNIDS = ["n01440764", "n01443537", "n01484850"]


def _write_jpeg(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    _random_image(40, 30, seed)[0].save(path, "JPEG")


def test_imagenet_class_folders(tmp_path):
    for c, wnid in enumerate(WNIDS):
        for k in range(2):
            _write_jpeg(tmp_path / "val" / wnid / f"img{k}.JPEG", seed=10 * c + k)
    with pytest.raises(InputError, match="expected 1000 class folders .* found 3"):
        ImageNetFolder(tmp_path)
    ds = ImageNetFolder(tmp_path, split="val", resolution=16, classes=WNIDS[::-1])
    assert ds.layout == "folders" and len(ds) == 6
    assert ds.labels.tolist() == [2, 2, 1, 1, 0, 0]
    image, label = ds[0]
    assert image.shape == (3, 16, 16) and label == 2
    batch = ds.as_labelled([0, 5])
    assert batch.labels.tolist() == [2, 0] and batch.ids == ["img0.JPEG", "img1.JPEG"]


def _flat_folder(root, n=3):
    for i in range(1, n + 1):
        _write_jpeg(root / f"ILSVRC2012_val_{i:08d}.JPEG", seed=i)


def test_imagenet_flat_with_simple_labels(tmp_path):
    _flat_folder(tmp_path)
    (tmp_path / "val_labels.txt").write_text(
        "filename,index\nILSVRC2012_val_00000001.JPEG,65\nILSVRC2012_val_00000002.JPEG,970\n"
        "ILSVRC2012_val_00000003.JPEG 0\n")
    ds = ImageNetFolder(tmp_path, resolution=8)
    assert ds.layout == "flat" and ds.labels.tolist() == [65, 970, 0]
    assert ds[1][0].shape == (3, 8, 8)


def test_imagenet_flat_with_devkit_ground_truth(tmp_path):
    from scipy.io import savemat

    _flat_folder(tmp_path)
    # ILSVRC ids 1..3 name wnids in non-sorted order; id 4 is an inner (non-leaf) synset
    synsets = np.array(
        [(1, "n0300", 0), (2, "n0100", 0), (3, "n0200", 0), (4, "n0900", 3)],
        dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    savemat(tmp_path / "meta.mat", {"synsets": synsets})
    (tmp_path / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n2\n3\n")
    ds = ImageNetFolder(tmp_path)
    assert ds.labels.tolist() == [2, 0, 1]  # sorted-wnid order, not ILSVRC ids


def test_imagenet_layout_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("GRADINV_IMAGENET", raising=False)
    with pytest.raises(MissingAssetError, match="GRADINV_IMAGENET"):
        imagenet_root()
    with pytest.raises(MissingAssetError, match="no such directory"):
        imagenet_root(tmp_path / "absent")
    monkeypatch.setenv("GRADINV_IMAGENET", str(tmp_path))
    assert imagenet_root() == tmp_path
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(MissingAssetError, match="no class folders and no ILSVRC2012_val_.*JPEG files in"):
        ImageNetFolder()
    _flat_folder(tmp_path, n=2)
    with pytest.raises(MissingAssetError, match="no labels file"):
        ImageNetFolder()
    (tmp_path / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n2\n")
    with pytest.raises(MissingAssetError, match="no devkit meta.mat"):
        ImageNetFolder()
    (tmp_path / "val_labels.csv").write_text("ILSVRC2012_val_00000001.JPEG,3\n")
    with pytest.raises(InputError, match="label for every image .* 1 without one"):
        ImageNetFolder()
    (tmp_path / "val_labels.csv").write_text("ILSVRC2012_val_00000001.JPEG,3\nILSVRC2012_val_00000002.JPEG,1000\n")
    with pytest.raises(InputError, match=r"index in \[0, 1000\)"):
        ImageNetFolder()
