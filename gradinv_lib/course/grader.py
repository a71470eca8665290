"""Release and autograding through nbgrader's own machinery (``generate_assignment``,
``autograde`` and its gradebook), each in a throwaway nbgrader course folder so that no gradebook
or exchange lands in the repository.

Submissions are laid out as nbgrader collects them: ``DIR/<student>/<assignment>/<assignment>.ipynb``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

from gradinv_lib.errors import GradInvError, InputError, MissingAssetError

from . import ASSIGNMENTS

COURSE_ID = "gradinv"


def course_folder() -> Path:
    """notebooks/course/ of the checkout this process runs in."""
    from gradinv_lib.studies.common import repo_root
    return repo_root() / "notebooks" / "course"


def _api(root: Path, timeout: int):
    """An NbGraderAPI on the course folder ``root`` (cells may run ``timeout`` seconds each).

    nbgrader creates its gradebook by running the ``alembic`` command: the environment's own
    scripts folder joins PATH when it is missing there (e.g. ``.venv/bin/gradinv`` run directly)."""
    if shutil.which("alembic") is None:
        os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config

    config = Config()
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.course_id = COURSE_ID
    config.Exchange.root = str(root / "exchange")   # never the system-wide /srv/nbgrader
    config.Execute.timeout = int(timeout)
    return NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)


def _ok(result: dict, what: str) -> None:
    if not result.get("success"):
        text = (result.get("error") or result.get("log") or "no log").strip().splitlines()
        raise GradInvError(f"nbgrader {what} failed: {text[-1] if text else 'no message'}")


def _assignments(source: Path, only) -> list[str]:
    names = list(only or ASSIGNMENTS)
    missing = [a for a in names if not (source / a).is_dir()]
    if missing:
        raise MissingAssetError(f"expected the source notebooks of {missing} in {source}; found "
                                f"{sorted(p.name for p in source.iterdir()) if source.is_dir() else 'no such folder'}")
    return names


def _generate(root: Path, source: Path, names: list[str], timeout: int):
    """A course folder holding ``names`` from ``source`` with their student versions generated
    (this also records every graded cell, hidden tests included, in the gradebook)."""
    for name in names:
        shutil.copytree(source / name, root / "source" / name, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    api = _api(root, timeout)
    for name in names:
        _ok(api.generate_assignment(name, force=True, create=True), f"generate_assignment {name}")
    return api


def release(out: str | Path | None = None, source: str | Path | None = None, assignments=None) -> list[Path]:
    """Student versions of the source notebooks (solutions and hidden tests removed) into
    ``out`` (default notebooks/course/release/<assignment>/); returns the notebooks written."""
    source = Path(source) if source else course_folder() / "source"
    out = Path(out) if out else course_folder() / "release"
    names = _assignments(source, assignments)
    written = []
    with tempfile.TemporaryDirectory(prefix="gradinv-course-") as tmp:
        _generate(Path(tmp), source, names, timeout=60)
        for name in names:
            shutil.rmtree(out / name, ignore_errors=True)
            shutil.copytree(Path(tmp) / "release" / name, out / name)
            written += sorted((out / name).glob("*.ipynb"))
    return written


def _submitted(submissions: Path, names: list[str]) -> dict[str, list[str]]:
    """student -> the assignments they handed in (folders DIR/<student>/<assignment>/)."""
    if not submissions.is_dir():
        raise InputError(f"submissions: expected a folder DIR/<student>/<assignment>/, found {submissions}")
    found = {s.name: sorted(a.name for a in s.iterdir() if a.is_dir() and a.name in names)
             for s in sorted(submissions.iterdir()) if s.is_dir() and not s.name.startswith(".")}
    found = {s: a for s, a in found.items() if a}
    if not found:
        raise InputError(f"submissions: expected folders <student>/<assignment>/ with assignments among "
                         f"{names} in {submissions}, found none")
    return found


def _scores(gradebook, name: str, student: str) -> dict:
    """Points of one submission from the gradebook: autograded (code) cells and written answers."""
    submission = gradebook.find_submission(name, student)
    grades = [g for nb in submission.notebooks for g in nb.grades]
    code = [g for g in grades if g.cell_type == "code"]
    return {"student": student, "assignment": name,
            "auto_points": sum(g.auto_score or 0.0 for g in code), "auto_max": sum(g.max_score for g in code),
            "failed": sorted(g.name for g in code if (g.auto_score or 0.0) < g.max_score),
            "manual_max": sum(g.max_score for g in grades if g.cell_type != "code")}


def grade(submissions: str | Path, out: str | Path | None = None, source: str | Path | None = None,
          assignments=None, timeout: int = 600) -> list[dict]:
    """Autograde every submission in ``submissions`` with nbgrader: each notebook runs with its
    graded cells (hidden tests restored) and read-only cells taken from the source. Returns one
    row per submission (auto points and maximum, failed test ids, written-answer points left
    to grade by hand); ``out`` also receives the autograded notebooks and grades.csv/json."""
    source = Path(source) if source else course_folder() / "source"
    names = _assignments(source, assignments)
    handed_in = _submitted(Path(submissions), names)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gradinv-course-") as tmp, warnings.catch_warnings():
        # nbgrader 0.9 with SQLAlchemy 2 warns about its own session use on every submission
        warnings.filterwarnings("ignore", message="Object of type <Submitted")
        root = Path(tmp)
        api = _generate(root, source, sorted(set(sum(handed_in.values(), []))), timeout)
        for student, names_in in handed_in.items():
            for name in names_in:
                shutil.copytree(Path(submissions) / student / name, root / "submitted" / student / name)
                _ok(api.autograde(name, student, force=True, create=True), f"autograde {name} of {student}")
        from nbgrader.api import Gradebook
        with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
            rows = [_scores(gradebook, name, student) for student, names_in in handed_in.items() for name in names_in]
        if out is not None:
            _write(Path(out), root, rows)
    return rows


def _write(out: Path, root: Path, rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "autograded", ignore_errors=True)
    shutil.copytree(root / "autograded", out / "autograded")
    (out / "grades.json").write_text(json.dumps(rows, indent=1) + "\n")
    with open(out / "grades.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "failed": " ".join(r["failed"])} for r in rows)
