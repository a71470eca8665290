"""``gradinv invert --update`` on real clients' update files: a Flower-style .npz of local weights
attacked end to end, and every malformed file refused with exit 2 and one stderr line naming the
tensor or option and what was expected."""

import json

import numpy as np
import pytest
import torch
from test_update_formats import LABELS, LR, client_images, local_weights, quick_model, save_npz_list, user_names

from gradinv_lib.cli.app import main
from gradinv_lib.federated.client import simulate_client

MODEL = ["--model", "lenet_bn", "--weights", "random", "--dataset", "cifar10", "--device", "cpu"]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """One FedSGD client of the CLI's model and the files a researcher would bring of it."""
    folder = tmp_path_factory.mktemp("client")
    model = quick_model()
    update = simulate_client(model, client_images(), LABELS)
    grads, local = user_names(update.gradients), local_weights(model, update)
    paths = {"grads": folder / "grads.pt", "delta": folder / "delta.pt"}
    torch.save(grads, paths["grads"])
    torch.save({n: -LR * g for n, g in grads.items()}, paths["delta"])
    paths["local"] = save_npz_list(local, folder / "local.npz")
    paths["global"] = save_npz_list(model.body.state_dict(), folder / "global.npz")
    return folder, grads, local, paths


def run(capsys, tmp_path, update, *extra):
    """``gradinv invert`` in-process on ``update``: (exit code, stderr lines)."""
    capsys.readouterr()
    code = main(["invert", *MODEL, "--update", str(update), "--iterations", "1", "--seeds", "1",
                 "--bn", "running", "--no-progress", "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def test_flower_npz_with_global_weights_and_client_lr_is_attacked(client, tmp_path, capsys):
    _, _, _, paths = client
    code, err = run(capsys, tmp_path, paths["local"], "--global-weights", paths["global"],
                    "--client-lr", str(LR), "--batch-size", "4", "--weights", "random")
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "result.json").read_text())
    assert record["labels"]["recovered"] == LABELS.tolist()
    assert record["weights"].startswith("global weights")


def malformed(client, case):
    """(update file, extra options, expected text) of one malformed case."""
    folder, grads, local, paths = client
    path = folder / f"{case}.pt"
    extra = ["--batch-size", "4"]
    if case == "unknown name":
        torch.save({**grads, "conv9.weight": torch.zeros(3)}, path)
        return path, extra, "tensor 'conv9.weight': expected a parameter or buffer name"
    if case == "missing parameter":
        torch.save({k: v for k, v in grads.items() if k != "fc.bias"}, path)
        return path, extra, "found no 'fc.bias'"
    if case == "wrong shape":
        torch.save({**grads, "fc.weight": grads["fc.weight"].T.contiguous()}, path)
        return path, extra, "'fc.weight': expected shape (10, "
    if case == "npz order":
        arrays = list(local.values())
        arrays[0], arrays[1] = arrays[1], arrays[0]
        np.savez(folder / "order.npz", *[a.numpy() for a in arrays])
        return folder / "order.npz", [*extra, "--client-lr", str(LR)], "arr_0 (state_dict entry 0, "
    if case == "npz length":
        np.savez(folder / "short.npz", *[a.numpy() for a in list(local.values())[:-1]])
        return folder / "short.npz", [*extra, "--client-lr", str(LR)], "expected a list of"
    if case == "missing lr":
        return paths["local"], extra, "lr: a weights update needs the client's learning rate"
    if case == "missing batch size":
        return paths["grads"], [], "batch_size: expected the client's batch size"
    if case == "nan":
        torch.save({**grads, "features.0.weight": torch.full_like(grads["features.0.weight"], float("nan"))}, path)
        return path, extra, "'features.0.weight': expected finite values, found NaN or inf"
    if case == "flipped sign":  # a delta read as gradients
        return paths["delta"], [*extra, "--format", "gradients"], "the sign looks flipped"
    if case == "wrong scale":  # the client's lr was 0.1
        return paths["local"], [*extra, "--client-lr", "0.001"], "L1 norm of 1 mean cross-entropy step"
    if case == "weights read as delta":
        return paths["local"], [*extra, "--client-lr", str(LR), "--format", "delta"], "local weights?"
    if case == "unreadable":
        path.write_bytes(b"\x80\x02not a torch file" * 10)
        return path, extra, "cannot be read by torch.load"
    if case == "unreadable npz":
        (folder / "bad.npz").write_bytes(b"PK\x03\x04garbage")
        return folder / "bad.npz", extra, "cannot be read by numpy .npz"
    if case == "unreadable safetensors":
        (folder / "bad.safetensors").write_bytes(b"\x00" * 16)
        return folder / "bad.safetensors", extra, "cannot be read by safetensors"
    if case == "not tensors":
        torch.save({"fc.weight": [0.0, 1.0]}, path)  # (a nested {'state_dict': ...} is read)
        return path, extra, "nor a name -> tensor mapping or a list of tensors"
    if case == "pickled module":  # issue 21 item 6: no raw torch message, a hint instead
        torch.save(torch.nn.Linear(2, 2), path)
        return path, extra, "holds a pickled torch.nn.modules.linear.Linear (a whole nn.Module?), which is never unpickled"
    if case == "text npz":
        (folder / "text.npz").write_text("fc.weight 0.1 0.2\n")
        return folder / "text.npz", extra, "expected a numpy .npz file (a zip archive), found other content (text?)"
    if case == "text pt":
        (folder / "text.pt").write_text("fc.weight 0.1 0.2\n")
        return folder / "text.pt", extra, "expected a torch.load file (a zip archive or a pickle), found other content"
    if case == "missing file":
        return folder / "absent.pt", extra, "client update file not found"
    if case == "missing global weights":
        return paths["local"], [*extra, "--client-lr", str(LR), "--global-weights",
                                str(folder / "absent.npz")], "global weights file not found"
    if case == "unknown format":
        return paths["grads"], [*extra, "--format", "tff"], "format: expected auto or one of"
    if case == "bn exact without statistics":
        return paths["grads"], [*extra, "--bn", "exact"], "use bn_target='running' (--bn running"
    raise AssertionError(case)


CASES = ["unknown name", "missing parameter", "wrong shape", "npz order", "npz length", "missing lr",
         "missing batch size", "nan", "flipped sign", "wrong scale", "weights read as delta",
         "unreadable", "unreadable npz", "unreadable safetensors", "not tensors", "pickled module",
         "text npz", "text pt", "missing file",
         "missing global weights", "unknown format", "bn exact without statistics"]


@pytest.mark.parametrize("case", CASES)
def test_malformed_update_is_one_line_and_exit_2(client, tmp_path, capsys, case):
    path, extra, expected = malformed(client, case)
    code, err = run(capsys, tmp_path, path, *extra)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("gradinv invert: error: ") and expected in err[0], err[0]


def test_update_options_without_update_are_refused(capsys, tmp_path):
    code = main(["invert", *MODEL, "--global-weights", "g.npz", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--global-weights reads a saved --update FILE" in err[0]


def test_nested_state_dict_is_read_as_the_weights_loader_reads_it(client, tmp_path, capsys):
    """{'state_dict': ..., 'epoch': ...} with DataParallel's 'module.' prefix: read, not refused."""
    folder, grads, _, _ = client
    torch.save({"state_dict": {f"module.{n}": g for n, g in grads.items()}, "epoch": 3}, folder / "nested.pt")
    code, err = run(capsys, tmp_path, folder / "nested.pt", "--batch-size", "4")
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "result.json").read_text())["labels"]["recovered"] == LABELS.tolist()
