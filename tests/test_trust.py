"""Bad inputs get clear errors at the entry points users call (library functions and the CLI):
each error is a GradInvError whose message says what was expected and what was found, and the
CLI prints it as ONE line and exits 2. Also: attacking a saved update from the CLI, and
same-seed determinism of label recovery and reconstruction."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
from conftest import tiny_classifier
from torch import nn

from gradinv_lib.attack.batch_labels import recover_batch_labels
from gradinv_lib.attack.config import InversionConfig
from gradinv_lib.attack.labels import evaluate_label_recovery, recover_labels, recover_labels_from_update
from gradinv_lib.attack.pipeline import build_objective, gradinversion
from gradinv_lib.cli.app import main
from gradinv_lib.data import embedded_cifar10, sample_batch
from gradinv_lib.errors import GradInvError, InputError, MissingAssetError
from gradinv_lib.experiments.run import attack_batch, load_originals
from gradinv_lib.federated.client import ClientUpdate, load_update, save_update, simulate_client
from gradinv_lib.metrics import LPIPSUnavailable, lpips_metric, psnr
from gradinv_lib.models import build_model
from gradinv_lib.models.base import ImageClassifier
from gradinv_lib.runtime.checkpoint import FILENAME, FORMAT, load_checkpoint

TINY = InversionConfig(iterations=2, seeds=1, group="none", warmup=0, log_every=1)
CIFAR = ["--model", "resnet18_cifar", "--dataset", "cifar10", "--resolution", "32", "--device", "cpu"]


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def cifar_model():
    return build_model("resnet18_cifar", weights="random")


@pytest.fixture(scope="module")
def cifar_batch():
    return sample_batch(embedded_cifar10(), 2, seed=0)


@pytest.fixture(scope="module")
def update_file(cifar_model, cifar_batch, tmp_path_factory):
    """A real client update of resnet18_cifar on two CIFAR-10 images, saved to disk."""
    path = tmp_path_factory.mktemp("upd") / "update.pt"
    save_update(simulate_client(cifar_model, cifar_batch.images, cifar_batch.labels), path)
    return path


def altered(path, tmp_path, change) -> str:
    """A copy of the update at ``path`` with ``change(update)`` applied, saved beside the tests."""
    update = load_update(path)
    change(update)
    out = tmp_path / "altered.pt"
    save_update(update, out)
    return str(out)


def cli_error(capsys, *argv) -> str:
    """Run the CLI in-process; assert exit 2 and exactly one stderr line, no traceback; the line."""
    capsys.readouterr()
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"gradinv {argv[0]}: error: ")
    return lines[0]


def invert_update(capsys, tmp_path, update, *extra) -> str:
    return cli_error(capsys, "invert", *CIFAR, "--update", str(update), "--iterations", "1",
                     "--no-progress", "--out", str(tmp_path / "out"), *extra)


# ----------------------------------------------------------------------------- client updates
def test_update_that_does_not_fit_the_model_names_the_tensor(cifar_model, update_file, tmp_path, capsys):
    upd = load_update(update_file)
    grads = dict(upd.gradients)
    grads["body.layer1.0.conv1.weight"] = grads["body.layer1.0.conv1.weight"][:, :32]
    wrong_shape = ClientUpdate(grads, upd.bn_stats, 2, (3, 32, 32), upd.model_name)
    with pytest.raises(InputError, match=r"'body.layer1.0.conv1.weight'.*expected shape "
                                         r"\(64, 64, 3, 3\), found \(64, 32, 3, 3\)"):
        gradinversion(cifar_model, wrong_shape, TINY)
    grads = {("body.classifier.weight" if k == "body.fc.weight" else k): v for k, v in upd.gradients.items()}
    with pytest.raises(InputError, match="'body.classifier.weight'.*no trainable parameter"):
        gradinversion(cifar_model, ClientUpdate(grads, upd.bn_stats, 2, (3, 32, 32), "x"), TINY)
    grads = dict(upd.gradients, **{"body.fc.bias": torch.zeros(10, dtype=torch.long)})
    with pytest.raises(InputError, match="'body.fc.bias'.*floating dtype, found torch.int64"):
        gradinversion(cifar_model, ClientUpdate(grads, upd.bn_stats, 2, (3, 32, 32), "x"), TINY)

    # CLI: the same update attacked with another architecture, or altered on disk.
    line = invert_update(capsys, tmp_path, update_file, "--model", "efficientnet_lite0")
    assert "has no trainable parameter" in line and "made by 'resnet18_cifar'" in line
    line = invert_update(capsys, tmp_path, altered(update_file, tmp_path, lambda u: u.gradients.update(
        {"body.fc.weight": u.gradients["body.fc.weight"][:5]})))
    assert "'body.fc.weight'" in line and "expected shape (10, 512), found (5, 512)" in line
    line = invert_update(capsys, tmp_path, altered(update_file, tmp_path, lambda u: u.gradients.pop(
        "body.conv1.weight")))
    assert "lacks gradients" in line and "'body.conv1.weight'" in line


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_gradients_are_refused(cifar_model, update_file, tmp_path, capsys, bad):
    upd = load_update(update_file)
    upd.gradients["body.fc.weight"] = upd.gradients["body.fc.weight"].clone()
    upd.gradients["body.fc.weight"][3, 7] = bad
    with pytest.raises(InputError, match="'body.fc.weight'.*expected finite values, found NaN or inf"):
        gradinversion(cifar_model, upd, TINY)
    with pytest.raises(InputError, match="expected finite values, found NaN or inf"):
        recover_labels_from_update(upd, cifar_model)
    path = tmp_path / "nan.pt"
    save_update(upd, path)
    assert "expected finite values, found NaN or inf" in invert_update(capsys, tmp_path, path)


def test_update_of_wrong_image_shape_is_refused(update_file, tmp_path, capsys):
    def gray(u):
        u.image_shape = (1, 32, 32)
    line = invert_update(capsys, tmp_path, altered(update_file, tmp_path, gray))
    assert "image_shape: expected (3, H, W)" in line and "found (1, 32, 32)" in line


def test_truncated_or_foreign_update_file(update_file, tmp_path, capsys):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(update_file.read_bytes()[:5000])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": [0.0, 1.0]}, foreign)  # (a nested {'state_dict': ...} is read as weights)
    for path, message in [(truncated, "cannot be read by torch.load"),
                          (foreign, "expected format tag 'gradinv-client-update', found None")]:
        with pytest.raises(InputError, match=message):
            load_update(path)
        line = invert_update(capsys, tmp_path, path)
        assert "not a gradinv client update" in line and message in line
    with pytest.raises(MissingAssetError, match="expected a file at"):
        load_update(tmp_path / "absent.pt")
    assert "client update file not found" in invert_update(capsys, tmp_path, tmp_path / "absent.pt")


# ----------------------------------------------------------------------------- models
def test_model_without_final_linear_layer():
    body = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), pool=nn.AdaptiveAvgPool2d(1),
                                     flat=nn.Flatten(), head=nn.Conv2d(4, 10, 1)))
    with pytest.raises(InputError, match=r"body.head to be an nn.Linear.*found Conv2d"):
        ImageClassifier(body, "head", (0.5,) * 3, (0.5,) * 3, "nolinear", 16)
    with pytest.raises(InputError, match=r"body.fc to be an nn.Linear.*found no such module"):
        ImageClassifier(body, "fc", (0.5,) * 3, (0.5,) * 3, "nolinear", 16)


def test_bn_prior_on_a_model_without_batchnorm():
    model = tiny_classifier(bn=False)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    update = simulate_client(model, images, torch.tensor([1, 4]))
    with pytest.warns(UserWarning, match="no BatchNorm layers: the BN prior is off"):  # documented
        assert gradinversion(model, update, TINY.replace(bn_target="exact")).config.bn_target == "none"
    with pytest.raises(InputError, match="bn_target='running'"):  # building the objective by hand
        build_objective(model, update, TINY.replace(bn_target="running"))
    assert gradinversion(model, update, TINY.replace(bn_target="none")).images.shape == (1, 2, 3, 16, 16)


def test_gradients_only_update_with_bn_exact_says_what_is_missing(cifar_model, update_file, tmp_path, capsys):
    def strip(u):
        u.bn_stats = {}
    path = altered(update_file, tmp_path, strip)
    with pytest.raises(InputError, match="bn_target='exact' needs the client batch's BN statistics"):
        gradinversion(cifar_model, load_update(path), TINY.replace(bn_target="exact"))
    line = invert_update(capsys, tmp_path, path, "--bn", "exact")
    assert "carries none; use bn_target='running'" in line


def test_missing_weights_data_and_lpips_backbone(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    with pytest.raises(MissingAssetError, match="resnet18-f37072fd.pth"):
        build_model("resnet18", weights="default")
    assert "resnet18-f37072fd.pth" in cli_error(capsys, "invert", "--model", "resnet18", "--weights",
                                                "default", "--dataset", "cifar10", "--no-progress")
    with pytest.raises(LPIPSUnavailable, match="put alexnet-owt-7be5be79.pth in"):
        lpips_metric()
    with pytest.raises(MissingAssetError, match="expected a file at"):
        build_model("resnet18_cifar", weights=tmp_path / "nope.pth")
    assert "expected a file at" in cli_error(capsys, "invert", *CIFAR, "--weights", str(tmp_path / "nope.pth"))
    line = cli_error(capsys, "recover-labels", "--model", "resnet18_cifar", "--dataset", "imagenet",
                     "--imagenet", str(tmp_path / "no_imagenet"))
    assert "expected an ImageNet folder at" in line and "found no such directory" in line


def test_foreign_weights_file(tmp_path, capsys):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="expected a torch checkpoint of tensors"):
        build_model("resnet18_cifar", weights=junk)
    assert "expected a torch checkpoint of tensors" in cli_error(capsys, "invert", *CIFAR, "--weights", str(junk))
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, other)
    line = cli_error(capsys, "recover-labels", *CIFAR, "--weights", str(other))
    assert "expected a state dict matching" in line and "mismatching keys or shapes" in line


def test_cuda_asked_for_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    line = cli_error(capsys, "invert", "--model", "resnet18_cifar", "--dataset", "cifar10",
                     "--device", "cuda")
    assert "expected a device this machine has, found 'cuda'" in line


# ----------------------------------------------------------------------------- labels
def test_batch_larger_than_the_classes_for_the_min_rule(cifar_model, update_file, tmp_path, capsys):
    g = torch.randn(10, 32)
    with pytest.raises(InputError, match=r"batch_size: expected an integer in \[1, num_classes=10\].*found 11"):
        recover_labels(g, 11)
    line = cli_error(capsys, "recover-labels", *CIFAR, "--batch-size", "11", "--trials", "2")
    assert "11" in line and "distinct labels" in line

    eleven = dataclasses.replace(load_update(update_file), batch_size=11)
    with pytest.raises(InputError, match=r"num_classes=10\].*found 11"):
        gradinversion(cifar_model, eleven, TINY.replace(label_rule="min"))
    # the default rule counts labels: 11 images of 10 classes repeat one (issue 21)
    assert len(recover_batch_labels(eleven, cifar_model, warn=False).labels) == 11


def test_repeated_labels_documented_behaviour():
    """With repeated labels the min rule still returns batch_size DISTINCT classes (it assumes
    distinct labels, as the paper does): every present class, filled up with the absent classes
    whose rows are least positive. ``recover_label_multiset`` is the tool for repeats."""
    model = tiny_classifier(classes=10)
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    update = simulate_client(model, images, torch.tensor([2, 2, 2, 7]))
    got = recover_labels_from_update(update, model)
    assert got.tolist() == sorted(set(got.tolist())) and len(got) == 4
    assert {2, 7} <= set(got.tolist())
    assert "distinct labels" in recover_labels.__doc__


def test_user_given_labels_are_checked(cifar_model, update_file):
    update = load_update(update_file)
    with pytest.raises(InputError, match=r"labels: expected classes in \[0, 10\), found range \[3, 12\]"):
        gradinversion(cifar_model, update, TINY, labels=torch.tensor([3, 12]))
    with pytest.raises(InputError, match=r"labels: expected shape \(2,\), found \(3,\)"):
        gradinversion(cifar_model, update, TINY, labels=torch.tensor([1, 2, 3]))


# ----------------------------------------------------------------------------- images
@pytest.mark.parametrize("images, message", [
    (torch.rand(2, 1, 32, 32), r"expected shape \(B, 3, H, W\), found \(2, 1, 32, 32\)"),
    (torch.rand(3, 32, 32), r"expected shape \(B, 3, H, W\), found \(3, 32, 32\)"),
    (torch.rand(2, 3, 32, 32) * 255, r"expected pixel values in \[0, 1\], found range"),
    (torch.full((2, 3, 32, 32), float("nan")), "expected finite values"),
])
def test_images_of_wrong_shape_range_or_channels(cifar_model, update_file, tmp_path, capsys, images, message):
    labels = torch.tensor([1, 2])[: images.shape[0]] if images.dim() == 4 else torch.tensor([1, 2])
    with pytest.raises(InputError, match=message):
        attack_batch(cifar_model, images, labels, TINY, progress=False)
    update = load_update(update_file)
    path = tmp_path / "originals.pt"
    torch.save(images, path)
    with pytest.raises(InputError, match=message):
        load_originals(path, update, 10)
    assert "originals file" in invert_update(capsys, tmp_path, update_file, "--originals", str(path))


def test_originals_of_another_batch_size_and_metric_shapes(update_file, tmp_path, capsys):
    path = tmp_path / "three.pt"
    torch.save({"images": torch.rand(3, 3, 32, 32)}, path)
    line = invert_update(capsys, tmp_path, update_file, "--originals", str(path))
    assert "expected images of shape (2, 3, 32, 32)" in line and "found (3, 3, 32, 32)" in line
    with pytest.raises(InputError, match="same shape"):
        psnr(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 9))
    assert "--originals scores an attack on a saved --update" in cli_error(
        capsys, "invert", *CIFAR, "--originals", str(path))


# ----------------------------------------------------------------------------- checkpoints
def test_truncated_or_foreign_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    cases = [(b"PK\x03\x04 truncated", "not a readable gradinv checkpoint"),
             ({"format": "something-else"}, "is not a gradinv checkpoint"),
             ({"format": FORMAT, "version": 7}, "expected checkpoint version 1, found 7"),
             ({"format": FORMAT, "version": 1, "iteration": 3}, "expected a complete gradinv checkpoint")]
    for content, message in cases:
        if isinstance(content, bytes):
            (ckpt / FILENAME).write_bytes(content)
        else:
            torch.save(content, ckpt / FILENAME)
        with pytest.raises(InputError, match=message):
            load_checkpoint(ckpt)
        line = cli_error(capsys, "invert", *CIFAR, "--iterations", "1", "--no-progress", "--checkpoint",
                         str(ckpt), "--resume", "--out", str(tmp_path / "out"))
        assert message in line
    assert "--resume needs --checkpoint DIR" in cli_error(capsys, "invert", *CIFAR, "--resume")


def test_every_error_is_one_line_in_a_real_process(tmp_path):
    """The installed entry point, as a user runs it: a foreign update file gives exit 2, one
    line on stderr, no traceback."""
    foreign = tmp_path / "foreign.pt"
    foreign.write_text("hello")
    proc = subprocess.run([sys.executable, "-m", "gradinv_lib.cli", "invert", *CIFAR, "--update",
                           str(foreign), "--no-progress"], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "not a gradinv client update" in proc.stderr


def test_input_errors_are_gradinv_errors():
    assert issubclass(InputError, GradInvError) and issubclass(MissingAssetError, GradInvError)


# ----------------------------------------------------------------------------- saved updates
def test_cli_attacks_a_saved_update_with_and_without_originals(update_file, cifar_batch, tmp_path, capsys):
    common = ["invert", *CIFAR, "--update", str(update_file), "--iterations", "2", "--seeds", "1",
              "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "blind")]) == 0
    record = json.loads((tmp_path / "blind" / "result.json").read_text())
    assert "metrics" not in record and (tmp_path / "blind" / "grid.png").stat().st_size > 0
    assert record["labels"]["true"] == sorted(cifar_batch.labels.tolist())  # stored in the update
    assert record["labels"]["recovered"] == sorted(cifar_batch.labels.tolist())
    assert torch.load(tmp_path / "blind" / "tensors.pt", weights_only=True)["originals"] is None

    originals = tmp_path / "originals.pt"
    torch.save({"images": cifar_batch.images, "labels": cifar_batch.labels}, originals)
    assert main([*common, "--originals", str(originals), "--out", str(tmp_path / "scored")]) == 0
    scored = json.loads((tmp_path / "scored" / "result.json").read_text())
    assert 0 < scored["metrics"]["psnr"] < 100 and scored["labels"]["accuracy"] == 1.0
    blind = torch.load(tmp_path / "blind" / "tensors.pt", weights_only=True)
    with_orig = torch.load(tmp_path / "scored" / "tensors.pt", weights_only=True)
    assert torch.equal(blind["consensus"], with_orig["consensus"])  # scoring never changes the attack


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_labels_and_same_reconstruction(cifar_model, tmp_path, capsys):
    data = embedded_cifar10()
    runs = [evaluate_label_recovery(cifar_model, data, batch_size=4, trials=5, seed=s) for s in (7, 7)]
    assert runs[0] == runs[1]
    common = ["invert", *CIFAR, "--batch-size", "2", "--iterations", "2", "--seeds", "2",
              "--group", "lazy", "--no-progress", "--seed"]
    for name, seed in [("a", "5"), ("b", "5"), ("c", "6")]:
        assert main([*common, seed, "--out", str(tmp_path / name)]) == 0
    a, b, c = (torch.load(tmp_path / n / "tensors.pt", weights_only=True) for n in "abc")
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])
    assert a["history"] == b["history"]
    assert not torch.equal(a["start"], c["start"])  # the seed does change the run


@pytest.mark.parametrize("argv, message", [
    (["recover-labels", "--trials", "0"], "trials: expected a positive integer, found 0"),
    (["recover-labels", "--batch-size", "0", "--trials", "2"], "expected a positive integer batch_size, found 0"),
    (["invert", "--iterations", "0"], "iterations must be >= 1, got 0"),
    (["invert", "--checkpoint-every", "-2"], "checkpoint_every must be >= 0"),
    (["invert", "--batch-size", "11"], "needs 11 distinct labels"),
    (["invert", "--model", "nosuch"], "--model: expected one of"),
])
def test_bad_numbers_on_the_command_line(capsys, argv, message):
    assert message in cli_error(capsys, argv[0], *CIFAR, *argv[1:], "--no-progress"
                                if argv[0] == "invert" else "--json")
