"""Study helpers behind the notebooks: cached results with provenance, the vulnerable population,
per-image gradient norms, the gallery, and ``gradinv reproduce`` (stamps, failures, --only)."""

from __future__ import annotations

import json

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook

from gradinv_lib import paper_results
from gradinv_lib.errors import InputError, MissingAssetError
from gradinv_lib.studies.common import StudyContext, load_results, markdown_table, save_results
from gradinv_lib.studies.identifiability import per_image_gradient_norms, vulnerable_population


def test_paper_results_are_consistent_across_tables():
    # Table 4's BN_exact row, Table 2's last row and Table 3's MoCo row are one configuration.
    full = paper_results.TABLE2_ABLATION["group_registered"]
    for key in ("fft2d", "psnr", "lpips"):
        assert paper_results.TABLE4_COMPARISON["gradinversion_bn_exact"][key] == full[key]
        assert paper_results.TABLE3_NETWORK_STRENGTH["resnet50_moco"][key] == full[key]
        assert paper_results.TABLE4_COMPARISON["noise"][key] == paper_results.TABLE2_ABLATION["noise"][key]
    for batch, splits in paper_results.TABLE1_LABEL_ACCURACY.items():
        assert all(s["min"] >= s["sum"] for s in splits.values()), batch


def test_results_round_trip_with_provenance(tmp_path):
    ctx = StudyContext("nb", output_dir=tmp_path)
    rows = [{"a": 1, "b": 0.5, "nested": {"x": 1}}, {"a": 2, "b": None, "c": "z"}]
    save_results(ctx, "r", rows, {"k": 3}, started=0.0)
    record = load_results(tmp_path, "r")
    assert record["rows"] == rows and record["settings"] == {"k": 3}
    assert record["provenance"]["torch"] == torch.__version__ and record["context"]["profile"] == "quick"
    assert (tmp_path / "r.csv").read_text().splitlines() == ["a,b,c", "1,0.5,", "2,,z"]
    with pytest.raises(MissingAssetError, match="run the study"):
        load_results(tmp_path, "absent")


def test_markdown_table_marks_missing_values():
    text = markdown_table([{"m": "x", "v": 0.12345, "p": None}], {"m": "method", "v": "ours", "p": "paper"})
    assert text.splitlines() == ["| method | ours | paper |", "|---|---|---|", "| x | 0.123 | - |"]


def test_vulnerable_population_keeps_the_largest_norm_per_class():
    norms = torch.tensor([1.0, 5.0, 2.0, 0.5, 3.0, 4.0])
    labels = torch.tensor([0, 0, 1, 1, 2, 3])
    assert vulnerable_population(norms, labels).tolist() == [1, 2, 4, 5]       # one per class
    assert vulnerable_population(norms, labels, fraction=0.5).tolist() == [1, 5]  # largest two


def test_per_image_gradient_norms_match_the_client_gradient():
    from gradinv_lib.client import simulate_client
    from gradinv_lib.data import load_pool
    from gradinv_lib.models import build_model
    model = build_model("efficientnet_lite0")
    pool = load_pool(32)
    images, labels = pool.images[:3], pool.labels[:3]
    norms = per_image_gradient_norms(model, images, labels)
    update = simulate_client(model, images[1:2], labels[1:2], bn_mode="eval")  # the norms use eval-mode BN
    expected = torch.sqrt(sum((g.double() ** 2).sum() for g in update.gradients.values()))
    assert norms.shape == (3,) and (norms > 0).all()
    assert norms[1].item() == pytest.approx(expected.item(), rel=1e-4)


# ----------------------------------------------------------------------------- reproduce
def _write_notebook(path, body: str):
    cells = [new_code_cell('PROFILE = "quick"\nOUTPUT_DIR = None', metadata={"tags": ["parameters"]}),
             new_code_cell(body)]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_reproduce_reports_failures_skips_current_and_writes_gallery(tmp_path, monkeypatch):
    pytest.importorskip("papermill")
    from gradinv_lib.reproduce import reproduce
    monkeypatch.setenv("GRADINV_ROOT", str(tmp_path))
    (tmp_path / "notebooks").mkdir()
    out = tmp_path / "figures" / "quick" / "00_ok"
    _write_notebook(tmp_path / "notebooks" / "00_ok.ipynb",
                    f"from pathlib import Path\nPath({str(out)!r}).mkdir(parents=True, exist_ok=True)\n"
                    f"Path({str(out)!r}, 'done.txt').write_text(PROFILE)")
    _write_notebook(tmp_path / "notebooks" / "01_bad.ipynb", "raise ValueError('the notebook broke')")
    lines = []
    first = {o.name: o for o in reproduce("quick", progress=False, echo=lines.append)}
    assert first["00_ok"].status == "ran" and (out / "done.txt").read_text() == "quick"
    assert first["01_bad"].status == "failed" and "ValueError: the notebook broke" in first["01_bad"].error
    assert (tmp_path / "notebooks" / "executed" / "quick" / "01_bad.ipynb").exists()
    assert any("FAILED" in line for line in lines)
    assert (tmp_path / "figures" / "README.md").read_text().startswith("# Figures")
    again = {o.name: o.status for o in reproduce("quick", only=["00"], progress=False, echo=lines.append)}
    assert again == {"00_ok": "current"}
    forced = {o.name: o.status for o in reproduce("quick", only=["00_ok"], force=True, progress=False,
                                                   echo=lines.append)}
    assert forced == {"00_ok": "ran"}
    with pytest.raises(InputError, match="--only"):
        reproduce("quick", only=["99"], progress=False, echo=lines.append)


def test_gallery_puts_ours_beside_the_paper(tmp_path):
    from gradinv_lib.studies.gallery import write_gallery
    ctx = StudyContext("01_label_recovery", output_dir=tmp_path / "figures" / "quick" / "01_label_recovery")
    save_results(ctx, "table1_label_recovery", [{"batch_size": 8, "rule": "min", "accuracy_pct": 97.5,
                                                 "paper_train_pct": 99.06, "paper_val_pct": 99.47, "trials": 5}])
    text = write_gallery("quick", root=tmp_path).read_text()
    assert "| 8 | min | 97.500 | 99.060 | 99.470 | 5 |" in text
    assert f"torch {torch.__version__}" in text
    assert json.loads((tmp_path / "figures" / "quick" / "01_label_recovery" /
                       "table1_label_recovery.json").read_text())["rows"][0]["accuracy_pct"] == 97.5
