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
    from gradinv_lib.data import load_pool
    from gradinv_lib.federated.client import simulate_client
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
    from gradinv_lib.cli.reproduce import reproduce
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


# ----------------------------------------------------------------------------- Tables 2-4, Fig. 5
def test_paired_directions_and_their_statements():
    from gradinv_lib.studies.aggregate import claim_lines, mark_directions
    from gradinv_lib.studies.tables import summarise
    batch_rows = []
    for seed, hardness in enumerate([0.0, 5.0, -3.0]):  # batches differ far more than the rows
        batch_rows += [{"row": "base", "batch_seed": seed, "psnr": 10 + hardness, "fft2d": 0.5},
                       {"row": "better", "batch_seed": seed, "psnr": 11 + hardness + 0.1 * seed, "fft2d": 0.5 + 0.01 * (seed - 1)},
                       {"row": "worse", "batch_seed": seed, "psnr": 9 + hardness, "fft2d": 0.6}]
    rows = summarise(batch_rows, metrics=("psnr", "fft2d"))
    assert [r["batches"] for r in rows] == [3, 3, 3] and rows[0]["psnr_std"] == pytest.approx(4.0414, abs=1e-3)
    mark_directions(rows, batch_rows, [("better", "base"), ("worse", "base")], metrics=("psnr", "fft2d"))
    by = {r["row"]: r for r in rows}
    # unpaired, the spread over batches (4 dB) would hide the 1 dB gain; paired it holds
    assert by["better"]["direction"]["psnr"][0] == "yes" and by["worse"]["direction"]["psnr"][0] == "no"
    assert by["better"]["direction"]["fft2d"][0] == "within spread" and by["worse"]["direction"]["fft2d"][0] == "no"
    lines = claim_lines(rows)
    assert len(lines) == 2 and "holds beyond the spread for PSNR" in lines[0] and "reversed" in lines[1]
    table = markdown_table(rows, {"row": "row", "psnr": "PSNR"})
    assert "| base | 10.667 ± 4.041 |" in table


def test_display_columns_leave_out_what_no_row_has():
    from gradinv_lib.studies.tables import display_columns
    rows = [{"row": "a", "psnr": 1.0, "lpips": None, "paper_lpips": 0.5, "paper_psnr": 9.0}]
    columns = display_columns(rows, status="status")
    assert "lpips" not in columns and "paper_lpips" not in columns   # no LPIPS: nor its paper value
    assert list(columns)[:2] == ["row", "psnr"] and "paper_psnr" in columns


@pytest.fixture(scope="module")
def tiny_tables(tmp_path_factory):
    """Table 2 (two objectives) and Table 4 (DLG beside the full method) on 2 batches of 2,
    3 iterations, in sibling folders as ``gradinv reproduce`` writes them."""
    import gradinv_lib.studies.runs as runs
    from gradinv_lib.studies import ablation, comparison
    root = tmp_path_factory.mktemp("figures")
    saved = runs.lite0_features
    runs.lite0_features = lambda images, *a, **k: images.flatten(1)[:, :64]   # cheap gallery features
    runs._GALLERY.clear()
    try:
        ctx2 = StudyContext("02_ablation", output_dir=root / "02_ablation")
        t2 = ablation.ablation_table(ctx2, batch_size=2, iterations=3, seeds=2, rows=["grad", "group_registered"],
                                     batches=2, executor="local")
        ctx4 = StudyContext("03_comparison", output_dir=root / "03_comparison")
        t4 = comparison.table4(ctx4, batch_size=2, iterations=3, seeds=2, batches=2,
                               attacks=["dlg", "gradinversion_bn_exact"], executor="local")
    finally:
        runs.lite0_features = saved
        runs._GALLERY.clear()
    return t2, t4


def test_table2_has_reference_rows_spread_over_batches_and_directions(tiny_tables):
    t2, _ = tiny_tables
    rows = {r["row"]: r for r in t2["rows"]}
    assert list(rows) == ["noise start", "mean colour", "grad", "group_registered"]
    assert t2["settings"]["iterations"] == 3 and t2["settings"]["batches"] == 2
    assert all(r["batches"] == 2 and r["psnr_std"] is not None for r in rows.values())
    per_batch = [b for b in t2["batch_rows"] if b["row"] == "grad"]
    assert len(per_batch) == 2 and {b["batch_seed"] for b in per_batch} == {0, 1}
    assert rows["grad"]["psnr"] == pytest.approx(sum(b["psnr"] for b in per_batch) / 2)
    assert all(0 <= b["pixel_nn_hit"] <= 1 and 0 <= b["pixel_nn_sibling"] <= 1 for b in per_batch)
    assert rows["mean colour"]["fft2d"] == pytest.approx(1.0)   # a flat image has no spectrum without DC
    assert rows["grad"]["direction_worse"] == "noise start" and rows["group_registered"]["direction_worse"] == "grad"
    assert set(v[0] for v in rows["group_registered"]["direction"].values()) <= {"yes", "no", "within spread"}
    assert rows["noise start"]["paper_psnr"] == 9.964 and rows["group_registered"]["paper_fft2d"] == 0.175


def test_table4_reuses_table2_runs_and_compares_everything_with_bn_exact(tiny_tables):
    _, t4 = tiny_tables
    rows = {r["row"]: r for r in t4["rows"]}
    assert list(rows) == ["noise start", "mean colour", "gradinversion_bn_exact", "dlg"]
    assert rows["gradinversion_bn_exact"]["reused"] == 2 and rows["dlg"]["reused"] == 0
    for name in ("noise start", "mean colour", "dlg"):
        assert rows[name]["direction_better"] == "gradinversion_bn_exact" and rows[name]["direction_text"]
    assert rows["dlg"]["needs_true_labels"] is False and rows["dlg"]["paper_fft2d"] == 0.602
    assert t4["settings"]["iterations"] == 3


def test_fig5_hard_sample_is_not_near_flat(tmp_path):
    from gradinv_lib.studies.comparison import hard_sample
    ctx = StudyContext("03_comparison", output_dir=tmp_path)
    chosen = hard_sample(ctx)
    stds = ctx.dataset().images.flatten(1).std(dim=1)
    assert chosen["pixel_std"] >= chosen["pool_median_pixel_std"] == pytest.approx(float(stds.median()))
    assert chosen["pixel_std"] > 2 * float(stds.min()) and "median" in chosen["criterion"]
