"""``gradinv reproduce``: run every companion notebook headlessly through papermill into an
executed copy (notebooks/executed/<profile>/), skip notebooks whose results are current, keep
going past a failing notebook, record each notebook's wall time and CPU time (its kernel and the
kernel's worker processes) in its stamp, and rebuild the figures/README.md gallery."""

from __future__ import annotations

import hashlib
import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path

from gradinv_lib.errors import InputError, MissingAssetError
from gradinv_lib.io import write_json_atomic
from gradinv_lib.runtime.environment import environment_variable
from gradinv_lib.runtime.slurm_state import cancel_tagged, job_ledger
from gradinv_lib.studies.common import repo_root

STAMP = ".reproduce_stamp.json"


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def list_notebooks() -> list[Path]:
    """The companion notebooks in order (NN_name.ipynb; executed copies excluded)."""
    folder = notebooks_dir()
    if not folder.is_dir():
        raise MissingAssetError(f"expected the notebooks in {folder}, found no such folder "
                                "(set GRADINV_ROOT to the repository)")
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def library_fingerprint() -> str:
    """Hash of the gradinv_lib sources: results made by other code are not current."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def notebook_stamp(notebook: Path, profile: str, parameters: dict) -> dict:
    import gradinv_lib
    return {"notebook": notebook.name, "notebook_sha256": hashlib.sha256(notebook.read_bytes()).hexdigest()[:16],
            "profile": profile, "parameters": parameters, "gradinv": gradinv_lib.__version__,
            "library": library_fingerprint()}


@dataclass
class NotebookOutcome:
    name: str
    status: str            # "ran" | "current" | "failed"
    seconds: float
    executed: Path | None
    error: str | None = None
    cpu_seconds: float = 0.0   # the kernel's CPU time: the wall time it needs on an idle core


def _error_message(exc: Exception) -> str:
    """The notebook's own error (papermill's ename/evalue), not papermill's wrapper."""
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    cell = getattr(exc, "exec_count", None)
    if ename:
        return f"{ename}: {evalue}" + (f" (cell {cell})" if cell else "")
    return f"{type(exc).__name__}: {exc}"


def run_notebook(notebook: Path, profile: str, parameters: dict, executed_dir: Path,
                 force: bool = False, kernel: str | None = None, progress: bool = True) -> NotebookOutcome:
    """Execute one notebook unless its stamp says its results are current."""
    results = repo_root() / "figures" / profile / notebook.stem
    stamp_path = results / STAMP
    stamp = notebook_stamp(notebook, profile, parameters)
    executed = executed_dir / notebook.name
    if not force and stamp_path.exists() and executed.exists():
        saved = json.loads(stamp_path.read_text())
        if {k: saved.get(k) for k in stamp} == stamp:
            return NotebookOutcome(notebook.stem, "current", saved.get("seconds") or 0.0, executed,
                                   cpu_seconds=saved.get("cpu_seconds") or 0.0)
    executed.parent.mkdir(parents=True, exist_ok=True)
    started, cpu_before = time.perf_counter(), _children_cpu()
    try:
        # the one way to refresh figures/: compute (RECOMPUTE) into the committed folder (OUTPUT_DIR)
        _execute(notebook, executed, {"PROFILE": profile, **parameters, "OUTPUT_DIR": str(results), "RECOMPUTE": True},
                 kernel, progress)
    except Exception as exc:  # noqa: BLE001 - a failing notebook must not stop the others
        if stamp_path.exists():
            stamp_path.unlink()
        return NotebookOutcome(notebook.stem, "failed", time.perf_counter() - started, executed,
                               _error_message(exc), _children_cpu() - cpu_before)
    seconds, cpu = time.perf_counter() - started, _children_cpu() - cpu_before
    write_json_atomic(stamp_path, {**stamp, "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
                                   "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return NotebookOutcome(notebook.stem, "ran", seconds, executed, cpu_seconds=cpu)


def _execute(notebook: Path, executed: Path, parameters: dict, kernel: str | None, progress: bool) -> None:
    """papermill; on Ctrl-C, end the kernel it started and cancel the Slurm jobs that the kernel's
    sweeps submitted (tagged through a ``job_ledger``), whether or not their own cleanup ran."""
    import papermill

    from gradinv_lib.widgets import HEADLESS_VARIABLE
    children_before = _child_pids()
    # the kernel inherits both: its widgets become one-line notes, its Slurm jobs carry the ledger's tag
    with environment_variable(HEADLESS_VARIABLE, "1"), job_ledger() as ledger:
        try:
            papermill.execute_notebook(str(notebook), str(executed), parameters=parameters, kernel_name=kernel,
                                       progress_bar=progress, cwd=str(notebook.parent))
        except KeyboardInterrupt:
            stop_kernels(children_before)
            cancel_tagged(ledger)
            raise


def _child_pids() -> set[int]:
    import psutil
    return {child.pid for child in psutil.Process().children()}


def stop_kernels(earlier: set[int], grace_s: float = 10.0) -> None:
    """End the notebook kernels this process started (its children not in ``earlier``), after
    Ctrl-C. A kernel runs in its own session, so a terminal's Ctrl-C never reaches it, and
    papermill's cleanup may not finish when KeyboardInterrupt leaves its event loop: the kernel
    would go on running its cell as an orphan. SIGTERM first (a sweep cancels its jobs on it),
    SIGKILL after ``grace_s`` (a sweep's reaper then cancels them; ``_execute`` in any case)."""
    import psutil
    kernels = [child for child in psutil.Process().children() if child.pid not in earlier]
    for kernel in kernels:
        kernel.terminate()
    _, alive = psutil.wait_procs(kernels, timeout=grace_s)
    for kernel in alive:
        kernel.kill()


def _children_cpu() -> float:
    """User + system CPU seconds of finished child processes: the notebook kernels, including the
    kernels' own finished children (a sweep's worker processes), which the OS adds to a process's
    children usage once it has waited for them."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def reproduce(profile: str = "quick", only: list[str] | None = None, force: bool = False,
              kernel: str | None = None, progress: bool = True, echo=print) -> list[NotebookOutcome]:
    """Run the notebooks (``only``: names or name prefixes such as ``01``), then the gallery."""
    from gradinv_lib.profiles import get_profile
    get_profile(profile)
    notebooks = list_notebooks()
    if only:
        chosen = [nb for nb in notebooks if any(nb.stem == o or nb.stem.startswith(o) for o in only)]
        if not chosen:
            raise InputError(f"--only: expected names or prefixes of {[nb.stem for nb in notebooks]}, found {only}")
        notebooks = chosen
    executed_dir = notebooks_dir() / "executed" / profile
    outcomes = []
    for i, nb in enumerate(notebooks, 1):
        echo(f"[{i}/{len(notebooks)}] {nb.stem} ({profile}) ...")
        outcome = run_notebook(nb, profile, {}, executed_dir, force, kernel, progress)   # headless: no live preview
        outcomes.append(outcome)
        detail = {"ran": f"done in {outcome.seconds:.0f} s ({outcome.cpu_seconds:.0f} s CPU) -> {outcome.executed}",
                  "current": f"results are current, skipped (last run {outcome.seconds:.0f} s, "
                             f"{outcome.cpu_seconds:.0f} s CPU; use --force to rerun)",
                  "failed": f"FAILED after {outcome.seconds:.0f} s: {outcome.error}\n"
                            f"    see {outcome.executed}"}[outcome.status]
        echo(f"    {detail}")
    echo(f"total: {sum(o.seconds for o in outcomes):.0f} s wall, {sum(o.cpu_seconds for o in outcomes):.0f} s CPU "
         "(notebooks skipped as current count with their last run's times)")
    from gradinv_lib.studies.gallery import write_gallery
    echo(f"gallery: {write_gallery(profile)}")
    return outcomes
