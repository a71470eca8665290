"""``gradinv reproduce``'s bookkeeping: each notebook's wall and CPU time, the CPU time including
the processes the kernel starts (a sweep's workers), in the stamp and the gallery."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from gradinv_lib.cli.reproduce import run_notebook
from gradinv_lib.studies.gallery import timing_markdown

BURN = '''\
import json, resource, subprocess, sys
# a worker process of the kernel burns about 1 s of CPU, as a sweep's workers do
subprocess.run([sys.executable, "-c", "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 1.0: pass"],
               check=True)
usage = {who: resource.getrusage(getattr(resource, who)) for who in ("RUSAGE_SELF", "RUSAGE_CHILDREN")}
with open(OUT, "w") as f:
    json.dump({who: u.ru_utime + u.ru_stime for who, u in usage.items()}, f)
'''


@pytest.mark.notebooks
def test_notebook_cpu_time_counts_the_kernels_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADINV_ROOT", str(tmp_path))
    pytest.importorskip("papermill")
    notebook = tmp_path / "notebooks" / "99_burn.ipynb"
    notebook.parent.mkdir()
    nb = new_notebook(cells=[new_code_cell("PROFILE = 'quick'\nOUT = None", metadata={"tags": ["parameters"]}),
                             new_code_cell(BURN)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebook)
    inside = tmp_path / "usage.json"
    outcome = run_notebook(notebook, "quick", {"OUT": str(inside)}, tmp_path / "executed", progress=False)
    assert outcome.status == "ran", outcome.error
    usage = json.loads(inside.read_text())
    assert usage["RUSAGE_CHILDREN"] >= 0.9                       # the worker's second, seen by the kernel
    assert outcome.cpu_seconds >= usage["RUSAGE_SELF"] + usage["RUSAGE_CHILDREN"] - 0.05   # ... and counted here
    assert outcome.seconds >= 1.0
    stamp = json.loads((tmp_path / "figures" / "quick" / "99_burn" / ".reproduce_stamp.json").read_text())
    assert stamp["cpu_seconds"] == round(outcome.cpu_seconds, 1) and stamp["seconds"] == round(outcome.seconds, 1)
    again = run_notebook(notebook, "quick", {"OUT": str(inside)}, tmp_path / "executed", progress=False)
    assert again.status == "current" and again.cpu_seconds == stamp["cpu_seconds"]


def test_gallery_compute_table_from_the_stamps(tmp_path):
    folder = tmp_path / "00_quickstart"
    folder.mkdir()
    (folder / ".reproduce_stamp.json").write_text(json.dumps({"seconds": 100.0, "cpu_seconds": 190.0,
                                                              "finished": "today"}))
    text = "\n".join(timing_markdown(tmp_path))
    assert "| 00_quickstart | 100.0 | 190.0 | 1.9 | today |" in text and "| **total** | 100.0 | 190.0 |" in text
    assert timing_markdown(tmp_path / "nothing") == []
