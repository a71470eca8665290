"""The companion notebooks: committed without outputs (nbformat 4.5, stable cell ids), and each
one runs top to bottom through papermill with tiny parameters and records results in range
(marker ``notebooks``). They run inside a throwaway git checkout holding the notebooks and the
committed results: changed parameters write to runs/<notebook>/<hash>/ of the checkout the
notebook runs in, and ``git status`` stays clean."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ALL = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
TINY = {"RESOLUTION": 32, "PDF": False}
TINY_BY_NOTEBOOK = {
    "00_quickstart": {"BATCH_SIZE": 2, "ITERATIONS": 3, "SEEDS": 2, "LIVE_PREVIEW": False},
    "01_label_recovery": {"BATCH_SIZES": [1, 8, 64], "TRIALS": 4, "REPEAT_BATCH": 4, "REPEATS": [1, 2],
                          "REPEAT_TRIALS": 2, "LABEL_RESOLUTION": 64},
    "02_ablation": {"BATCH_SIZE": 2, "ITERATIONS": 2, "SEEDS": 2, "BATCHES": 2,
                    "STRENGTH_MODELS": [["lenet_bn16", "random"], ["lenet_bn", "random"]]},
    "03_comparison": {"BATCH_SIZE": 2, "ITERATIONS": 2, "SEEDS": 2, "BATCHES": 2,
                      "ATTACKS": ["dlg", "gradinversion_bn_exact"], "FIG5_SAMPLE": 0, "FIG5_ITERATIONS": 2},
    "04_batch_scaling": {"BATCH_SIZES": [1, 2], "ITERATIONS": 2, "BATCHES": 2},
    "05_identifiability": {"BATCH_SIZES": [1, 2], "ITERATIONS": 2, "BATCHES_PER_SIZE": 2, "VULNERABLE_SIZES": [2]},
    "06_defences": {"BATCH_SIZE": 2, "BATCHES": 2, "FEDAVG_BATCHES": 1, "ITERATIONS": 2,
                    "STRENGTHS": {"pruning": [0.1], "dp": [0.0, 0.01], "dp_parts": [1, 2, 3], "mixup": [0.5],
                                  "larger_batch": [2], "secure_aggregation": [2], "fedavg": [[2, 2]]}},
}
ROOT = NOTEBOOKS.parent


def _git(checkout: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(checkout), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A git checkout of the notebooks and the committed results (figures/), as a reader's clone."""
    root = tmp_path_factory.mktemp("clone")
    for name in ("pyproject.toml", ".gitignore"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(NOTEBOOKS, root / "notebooks", ignore=shutil.ignore_patterns("executed", "course", ".*"))
    shutil.copytree(ROOT / "figures", root / "figures", ignore=shutil.ignore_patterns("*.pt", "*.pdf"))
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone")
    return root


def test_there_are_notebooks():
    assert {p.stem for p in ALL} >= {"00_quickstart", "01_label_recovery", "02_ablation",
                                     "04_batch_scaling", "05_identifiability", "06_defences"}


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_committed_without_outputs_and_tagged(path):
    nb = nbformat.read(path, as_version=4)
    assert (nb.nbformat, nb.nbformat_minor) == (4, 5) and all(c.get("id") for c in nb.cells), \
        f"{path.name}: expected nbformat 4.5 with cell ids (JupyterLab would otherwise open it as modified)"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        f"{path.name} has outputs: regenerate it with notebooks/make_notebooks.py"
    assert "parameters" in code[0].metadata.get("tags", []), f"{path.name}: first code cell not tagged"
    for name in ("PROFILE", "SEED", "DEVICE", "OUTPUT_DIR"):
        assert f"{name} =" in code[0].source
    assert not any("chdir" in c.source or "sys.path" in c.source for c in code)


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter(path):
    """``papermill --help-notebook`` lists each parameter with its comment as help; a line it
    cannot parse (e.g. a comment holding " = ") is missing there, with a warning."""
    translators = pytest.importorskip("papermill.translators")
    cell = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    names = [line.split("=")[0].strip() for line in cell.source.splitlines() if "=" in line.split("#")[0]]
    parsed = translators.PythonTranslator.inspect(cell)
    assert [p.name for p in parsed] == names and all(p.help for p in parsed), path.name


def _execute(name: str, checkout: Path, tmp_path: Path, monkeypatch) -> Path:
    """Run the notebook of the checkout with changed (tiny) parameters, from its own folder as
    Jupyter does; return the scratch folder it wrote, after checking git status is clean."""
    papermill = pytest.importorskip("papermill")
    monkeypatch.delenv("GRADINV_ROOT", raising=False)
    # The sweeps run in the kernel itself: under heavy load a kernel whose worker processes had
    # ended was twice seen idle while papermill still waited (test_sweeps covers the worker pool);
    # a cell that still hangs fails after execution_timeout instead of stalling the suite. Headless,
    # as `gradinv reproduce` runs them: the widgets are notes (a fresh-clone reproduce hung 830 s on
    # the explorer's cell, kernel idle; test_browser runs them with their widgets in JupyterLab).
    monkeypatch.setenv("GRADINV_EXECUTOR", "local")
    monkeypatch.setenv("GRADINV_HEADLESS", "1")
    before = set((checkout / "runs" / name).glob("*"))
    papermill.execute_notebook(str(checkout / "notebooks" / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"),
                               parameters={**TINY, **TINY_BY_NOTEBOOK[name]}, progress_bar=False,
                               cwd=str(checkout / "notebooks"), execution_timeout=600)
    assert _git(checkout, "status", "--porcelain") == "", f"{name} changed the checkout"
    written = set((checkout / "runs" / name).glob("*")) - before
    assert len(written) == 1, f"{name}: expected one scratch folder runs/{name}/<hash>/, found {written}"
    out = written.pop()
    assert json.loads((out / "parameters.json").read_text())["RESOLUTION"] == 32
    return out


def _rows(out: Path, name: str) -> list[dict]:
    record = json.loads((out / f"{name}.json").read_text())
    assert record["provenance"]["torch"] and record["wall_time_s"] is not None
    assert (out / f"{name}.csv").read_text().count("\n") == len(record["rows"]) + 1
    return record["rows"]


def _finite_metrics(row: dict) -> None:
    assert 0 <= row["fft2d"] <= 1 and 0 < row["psnr"] < 60 and 0 < row["psnr_registered"] < 60
    assert row["feature_dist"] >= 0 and 0 <= row["label_accuracy"] <= 1


@pytest.mark.notebooks
def test_quickstart(checkout, tmp_path, monkeypatch):
    out = _execute("00_quickstart", checkout, tmp_path, monkeypatch)
    rows = _rows(out, "quickstart")
    assert [r["row"] for r in rows] == ["reconstruction", "noise start", "mean colour"]
    _finite_metrics(rows[0])
    assert rows[0]["iterations"] == 3 and rows[0]["batch_size"] == 2 and rows[0]["seeds"] == 2
    assert all(0 <= r["pixel_nn_hit"] <= 1 for r in rows) and rows[0]["psnr_std"] >= 0
    forces = json.loads((out / "quickstart.json").read_text())["forces"]
    assert {"grad", "bn"} <= {f["term"] for f in forces}
    assert all(f["start"] >= 0 and f["end"] >= 0 and 0 <= f["start_share"] <= 1 for f in forces)
    assert (out / "quickstart.png").stat().st_size > 1000 and (out / "quickstart_progress.png").exists()


@pytest.mark.notebooks
def test_label_recovery(checkout, tmp_path, monkeypatch):
    out = _execute("01_label_recovery", checkout, tmp_path, monkeypatch)
    rows = _rows(out, "table1_label_recovery")
    assert [(r["batch_size"], r["rule"]) for r in rows] == [(b, r) for b in (1, 8, 64) for r in ("sum", "min")]
    assert all(r["accuracy_pct"] == 100.0 for r in rows if r["batch_size"] == 1)
    assert all(90.0 <= r["accuracy_pct"] <= 100.0 for r in rows if r["rule"] == "min")
    assert rows[2]["paper_val_pct"] == 96.08 and rows[4]["paper_val_pct"] == 82.27
    repeated = {(r["repeats"], r["method"]): r["accuracy_pct"] for r in _rows(out, "repeated_labels")}
    assert repeated[(2, "min_rule")] <= 50.0 + 1e-9   # eq. 8 returns distinct labels only
    assert (out / "table1_label_recovery.png").exists()


@pytest.mark.notebooks
def test_ablation(checkout, tmp_path, monkeypatch):
    out = _execute("02_ablation", checkout, tmp_path, monkeypatch)
    rows = _rows(out, "table2_ablation")
    assert [r["row"] for r in rows] == ["noise start", "mean colour", "grad", "fidelity", "group_lazy",
                                        "group_registered"]
    assert rows[0]["paper_psnr"] == 9.964 and rows[-1]["paper_fft2d"] == 0.175
    for row in rows[2:]:
        _finite_metrics(row)
        assert row["batches"] == 2 and row["psnr_std"] is not None and "direction" in row
    strength = _rows(out, "table3_strength")
    assert [r["row"] for r in strength][-2:] == ["lenet_bn16 (random)", "lenet_bn (random)"]
    assert (out / "table2_images.png").exists() and (out / "table3_images.png").exists()


@pytest.mark.notebooks
def test_batch_scaling_then_identifiability(checkout, tmp_path, monkeypatch):
    """04 then 05 (as `gradinv reproduce` runs them): mean ± std per size beside both references,
    per-batch rows kept; 05 reuses 04's random-population runs and attacks the vulnerable ones."""
    out = _execute("04_batch_scaling", checkout, tmp_path, monkeypatch)
    rows = _rows(out, "batch_scaling")
    assert [(r["batch_size"], r["row"]) for r in rows] == [
        (b, name) for b in (1, 2) for name in ("reconstruction", "noise start", "mean colour")]
    for row in rows[::3]:
        _finite_metrics(row)
        assert row["batches"] == 2 and row["psnr_std"] is not None and row["iterations"] == 2
    assert len(json.loads((out / "batch_scaling.json").read_text())["batch_rows"]) == 2 * 2 * 3
    assert (out / "fig6_metrics_vs_batch.png").exists() and (out / "fig7_grids_vs_batch.png").exists()

    out = _execute("05_identifiability", checkout, tmp_path, monkeypatch)
    rows = [r for r in _rows(out, "fig8_iip") if r["row"] == "reconstruction"]
    assert [(r["population"], r["batch_size"]) for r in rows] == [("random", 1), ("random", 2), ("vulnerable", 2)]
    assert all(0 <= r["iip"] <= 1 and 0 <= r["pixel_nn_hit"] <= 1 and r["batches"] == 2 for r in rows)
    assert [r["reused"] for r in rows] == [2, 2, 0] and rows[-1]["population_size"] < rows[0]["population_size"]
    assert (out / "fig8_iip.png").exists()


@pytest.mark.notebooks
def test_comparison(checkout, tmp_path, monkeypatch):
    out = _execute("03_comparison", checkout, tmp_path, monkeypatch)
    rows = {r["row"]: r for r in _rows(out, "table4_comparison")}
    assert list(rows) == ["noise start", "mean colour", "gradinversion_bn_exact", "dlg"]
    assert rows["gradinversion_bn_exact"]["paper_psnr"] == 12.929 and rows["dlg"]["paper_fft2d"] == 0.602
    assert all(0 <= r["fft2d"] <= 1 and 0 < r["psnr"] < 60 for r in rows.values())
    assert rows["dlg"]["batches"] == 2 and "direction" in rows["dlg"]
    fig5 = _rows(out, "fig5_batch1")
    assert [r["row"] for r in fig5] == ["noise start", "mean colour", "dlg", "inverting_gradients",
                                        "gradinversion_bn_exact"]
    assert all(0 <= r["fft2d"] <= 1 for r in fig5)
    assert (out / "fig5_batch1.png").exists() and (out / "table4_comparison.png").exists()


@pytest.mark.notebooks
def test_defences(checkout, tmp_path, monkeypatch):
    """06: one row per defence and strength with success, utility and (DP) epsilon in range; the
    FedAvg K = 1 run is the larger batch's; the trade-off figure and one grid per defence."""
    out = _execute("06_defences", checkout, tmp_path, monkeypatch)
    rows = {r["point"]: r for r in _rows(out, "defences")}
    parts = ["dp_parts: BN statistics withheld", "dp_parts: + BN frozen (eval mode)",
             "dp_parts: + per-image clipping (DP, noise 0)"]
    assert list(rows) == ["none: clean", "pruning: keep=0.1", "dp: noise=0", "dp: noise=0.01", *parts,
                          "mixup: weight=0.5", "larger_batch: factor=2", "secure_aggregation: clients=2",
                          "fedavg: K=1, b=4", "fedavg: K=2, b=2"]
    for row in rows.values():
        _finite_metrics(row)
        assert 0 <= row["iip"] <= 1 and 0 <= row["pixel_nn_hit"] <= 1 and -1 <= row["utility"] <= 1
        assert -1 <= row["utility_layers"] <= 1 and -1 <= row["utility_population"] <= 1
        assert row["iterations"] == 2 and row["batches"] == (1 if row["curve"] == "fedavg" else 2)
    assert rows["none: clean"]["utility"] == pytest.approx(1.0)
    assert rows["larger_batch: factor=2"]["utility"] == pytest.approx(1.0)
    assert rows["dp: noise=0.01"]["epsilon"] > 0 and rows["dp: noise=0"]["epsilon"] is None
    assert rows["dp: noise=0.01"]["utility"] < rows["dp: noise=0"]["utility"]
    assert rows["dp: noise=0"]["bn_target"] == "running"
    # the DP client's parts: withholding BN statistics leaves the gradient as it is (the attack
    # loses BN_exact only); freezing BN changes it; clipping at noise 0 is the DP point itself
    assert rows[parts[0]]["utility"] == pytest.approx(1.0) and rows[parts[0]]["bn_target"] == "running"
    assert rows[parts[1]]["utility"] < 1 - 1e-6 and rows[parts[1]]["bn_target"] == "running"
    record = json.loads((out / "defences.json").read_text())
    batch = {r["point"]: r for r in record["batch_rows"] if r["batch_seed"] == 0}
    assert batch["fedavg: K=1, b=4"]["run_key"] == batch["larger_batch: factor=2"]["run_key"]
    assert batch[parts[2]]["run_key"] == batch["dp: noise=0"]["run_key"]
    assert {r["row"] for r in record["references"]} == {"noise start", "mean colour"}
    assert (out / "defences_tradeoff.png").exists()
    assert all((out / f"grid_{c}.png").exists() for c in ("pruning", "dp", "dp_parts", "mixup", "larger_batch", "fedavg"))
