"""The gradinv command line as a user runs it: JSON shapes, the issue's acceptance numbers at
small sizes, and one-line errors with a non-zero exit."""

import json
import subprocess
import sys

import pytest


def gradinv(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "gradinv_lib.cli", *args], capture_output=True,
                          text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_doctor_reports_offline_assets_and_live_lite0_check():
    report = json.loads(gradinv("doctor", "--json").stdout)
    assets = report["assets"]
    assert assets["efficientnet_lite0_weights"]["available"]
    assert assets["embedded_imagenet"]["available"] and assets["embedded_imagenet"]["images"] == 20
    assert assets["embedded_imagenet"]["distinct_labels"] == 19
    assert assets["pseudo_label_pool"]["distinct_labels"] >= 48
    assert report["checks"]["lite0_embedded_top1"] >= 0.9
    for name, info in assets.items():  # every unavailable asset says why
        assert info["available"] or info["reason"], name


def test_recover_labels_json_meets_the_min_rule_bar():
    out = json.loads(gradinv("recover-labels", "--model", "efficientnet_lite0", "--batch-size", "8",
                             "--trials", "50", "--json").stdout)
    assert out["accuracy"] >= 0.99 and out["rule"] == "min" and out["trials"] == 50
    assert out["resolution"] == 224  # the model's own input size, as in Table 1
    out_sum = json.loads(gradinv("recover-labels", "--model", "efficientnet_lite0", "--batch-size", "8",
                                 "--trials", "50", "--rule", "sum", "--json").stdout)
    assert out_sum["rule"] == "sum" and 0 < out_sum["accuracy"] <= out["accuracy"]


def test_invert_json_has_metrics_noise_row_labels_and_files(tmp_path):
    out = json.loads(gradinv("invert", "--model", "resnet18_cifar", "--dataset", "cifar10",
                             "--resolution", "32", "--batch-size", "2", "--seeds", "2",
                             "--iterations", "4", "--out", str(tmp_path), "--json",
                             "--no-progress").stdout)
    for key in ("psnr", "fft2d", "psnr_registered", "ssim", "feature_dist"):
        assert isinstance(out["metrics"][key], float) and isinstance(out["noise_metrics"][key], float)
    assert out["labels"]["accuracy"] == 1.0 and len(out["labels"]["recovered"]) == 2
    assert out["config"]["group"] == "registered" and out["config"]["seeds"] == 2
    assert (tmp_path / "grid.png").stat().st_size > 1000
    assert json.loads((tmp_path / "result.json").read_text())["provenance"]["torch"]


@pytest.mark.parametrize("args, message", [
    (["invert", "--model", "nope"], "--model: expected one of efficientnet_lite0"),
    (["invert", "--resume"], "--resume needs --checkpoint"),
    (["recover-labels", "--batch-size", "500"], "batch_size 500"),
    (["bench", "--device", "cpu", "--amp-check", "5"], "AMP check: expected a CUDA device"),
])
def test_user_errors_are_one_line_and_exit_2(args, message):
    proc = gradinv(*args, check=False)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip() and "Warning" not in l and "warn" not in l]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
