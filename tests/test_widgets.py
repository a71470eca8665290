"""Reading mode's folder choice, the notebook widgets (preview, explorer, "try it") without a
browser, files written with the umask, and DP's honest labelling (epsilon in words, which part of
the DP client protects). The browser test (test_browser.py) drives the same widgets in JupyterLab."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from gradinv_lib.io import atomic_write
from gradinv_lib.studies.common import StudyContext, choose_output, result_parameters
from gradinv_lib.studies.defence_report import dp_attribution, privacy_words
from gradinv_lib.widgets.explorer import IMAGES, batches
from gradinv_lib.widgets.preview import ReconstructionPreview, eta_text, png_row

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.delenv("GRADINV_ROOT", raising=False)
    monkeypatch.chdir(tmp_path / "notebooks")           # a kernel starts in notebooks/
    return tmp_path


def test_results_go_to_the_checkout_the_notebook_runs_in_and_never_over_figures(checkout):
    key = result_parameters("quick", 0, None, {"ITERATIONS": None, "PDF": True})
    assert "PDF" not in key                               # presentation parameters do not count
    committed = checkout / "figures" / "quick" / "00_quickstart"
    scratch = choose_output("00_quickstart", key)
    assert scratch.parent == checkout / "runs" / "00_quickstart"     # no committed results yet
    committed.mkdir(parents=True)
    (committed / "parameters.json").write_text(json.dumps(key))
    assert choose_output("00_quickstart", key) == committed          # reading the committed results
    assert choose_output("00_quickstart", key, recompute=True) == scratch
    changed = result_parameters("quick", 0, None, {"ITERATIONS": 300})
    assert choose_output("00_quickstart", changed).parent == scratch.parent != committed
    assert choose_output("00_quickstart", changed) != scratch
    assert choose_output("00_quickstart", key, checkout / "mine") == checkout / "mine"
    ctx = StudyContext("00_quickstart", parameters={"ITERATIONS": None, "PDF": False})
    assert ctx.reading and ctx.out == committed and "Reading mode" in ctx._repr_markdown_()
    ctx = StudyContext("00_quickstart", parameters={"ITERATIONS": 300})
    assert not ctx.reading and "runs/00_quickstart/" in ctx._repr_markdown_()


def test_files_are_written_with_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "r.json", lambda f: f.write(b"{}"))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_preview_keeps_every_seed_and_measures_its_speed():
    originals = torch.rand(3, 3, 8, 8)
    preview = ReconstructionPreview(originals, seeds=2, total=10, live=False, keep=3)
    for t in range(1, 11):
        images = torch.full((2, 3, 3, 8, 8), t / 10.0)
        preview(SimpleNamespace(iteration=t, total=10, images=images, losses={"total": 1.0 / t},
                                to_pixels=lambda x: x))
    assert preview.latest["seeds"].shape == (2, 3, 3, 8, 8) and preview.iteration == 10
    assert torch.allclose(preview.latest["mean of the seeds"], torch.ones(3, 3, 8, 8))
    assert list(preview.strip()) == ["it 1", "it 4", "it 10"]
    assert eta_text(5, 10, None) == "measuring the speed" and eta_text(5, 10, 2.5) == "2.5 it/s, ETA 2 s"
    assert eta_text(0, 1000, 10.0) == "10.0 it/s, ETA 1 min 40 s"
    from PIL import Image
    import io
    assert Image.open(io.BytesIO(png_row(originals, 4))).size == (4 * (3 * 10 - 2), 4 * 8)


def test_explorer_finds_every_committed_batch_and_its_row():
    for result in IMAGES:
        path = next(iter((ROOT / "figures" / "quick").glob(f"*/{result}.json")), None)
        if path is None:
            continue
        groups, summaries = batches(json.loads(path.read_text()))
        assert groups and set(groups) <= set(summaries), result
        assert all(r["batch_ids"] for members in groups.values() for r in members)


def test_try_it_attacks_a_defended_client(tmp_path):
    from gradinv_lib.widgets.try_it import DEFENCE_CHOICES, attack_once, expected_seconds
    ctx = StudyContext("00_quickstart", device="cpu", output_dir=tmp_path)
    originals, reconstruction, ev = attack_once(ctx, 2, 3, 1, DEFENCE_CHOICES["BN statistics withheld"], live=False)
    assert originals.shape == reconstruction.shape == (2, 3, 32, 32)
    assert ev["labels"]["accuracy"] == 1.0 and 0 < ev["metrics"]["psnr"] < 60
    assert 60 <= expected_seconds(8, 4, 1200) <= 180           # the panel's defaults: one to three minutes


def _row(point, iip, epsilon=None, **defence):
    curve, label = point.split(": ")
    return {"point": point, "curve": curve, "label": label, "iip": iip, "pixel_nn_hit": iip, "epsilon": epsilon,
            "defence": {"name": defence.pop("name", curve), **defence}}


def test_epsilon_in_words_and_what_protects_under_dp():
    assert [privacy_words(e) for e in (None, 5.5e7, 10.0, 3.0, 0.5)] == [
        "none (no noise)", "no formal guarantee", "weak", "weak", "strong"]
    rows = [_row("none: clean", 0.8), _row("dp: noise=0", 0.5, noise=0.0), _row("dp: noise=0.0001", 0.0, 5.5e7),
            _row("dp_parts: BN statistics withheld", 0.6), _row("dp_parts: + BN frozen (eval mode)", 0.05)]
    text = dp_attribution({"rows": rows})
    assert "no formal guarantee" in text and "what stops it is **BN frozen (eval mode)**, not the noise" in text
    assert "tell them apart" in dp_attribution({"rows": rows[:3]})     # without the parts' rows: says so
    rows[2]["epsilon"] = 2.0                                         # a real (weak) guarantee: nothing to add
    assert dp_attribution({"rows": rows}) is None


def test_headless_runs_get_notes_instead_of_widgets(monkeypatch):
    from gradinv_lib.widgets import headless
    from gradinv_lib.widgets.explorer import explore
    from gradinv_lib.widgets.try_it import try_it
    monkeypatch.setenv("GRADINV_HEADLESS", "1")
    assert headless()
    ctx = StudyContext("00_quickstart", "quick")
    for shown in (explore(ctx), try_it(ctx)):
        assert "interactive widget" in shown.data and "open the notebook in Jupyter" in shown.data
    preview = ReconstructionPreview(torch.rand(2, 3, 8, 8), seeds=1, total=4, live=True)
    assert preview.rows is None and preview.status is None          # nothing built
    monkeypatch.setenv("GRADINV_HEADLESS", "0")
    assert not headless()


def test_reproduce_runs_kernels_headless_and_restores_the_environment(monkeypatch, tmp_path):
    from gradinv_lib.cli import reproduce
    seen = {}
    monkeypatch.delenv("GRADINV_HEADLESS", raising=False)
    monkeypatch.setattr("papermill.execute_notebook",
                        lambda *a, **k: seen.update(value=os.environ.get("GRADINV_HEADLESS")))
    reproduce._execute(tmp_path / "x.ipynb", tmp_path / "y.ipynb", {}, None, False)
    assert seen["value"] == "1" and "GRADINV_HEADLESS" not in os.environ
