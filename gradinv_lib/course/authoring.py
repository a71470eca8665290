"""Cells of an nbgrader source notebook: each kind of cell carries the ``nbgrader`` metadata
nbgrader's "Create Assignment" toolbar would give it (schema 3), so the source notebooks can be
written as Python (``notebooks/course/make_sources.py``) and still be edited in Jupyter."""

from __future__ import annotations

import textwrap

import nbformat

SCHEMA = 3


def _meta(grade_id: str, solution: bool, grade: bool, locked: bool, points: float | None = None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": SCHEMA,
            "solution": solution, "task": False}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def _text(source: str) -> str:
    return textwrap.dedent(source).strip("\n")


def markdown(grade_id: str, source: str):
    """Read-only instructions."""
    return nbformat.v4.new_markdown_cell(_text(source), metadata=_meta(grade_id, False, False, True))


def provided(grade_id: str, source: str, tags: tuple[str, ...] = ()):
    """Read-only code the student runs as is (set-up, plots); ``tags`` e.g. ("parameters",)."""
    meta = _meta(grade_id, False, False, True)
    if tags:
        meta["tags"] = list(tags)
    return nbformat.v4.new_code_cell(_text(source), metadata=meta)


def solution(grade_id: str, source: str):
    """Code the student writes: the lines between ``### BEGIN SOLUTION`` and ``### END SOLUTION``
    become ``raise NotImplementedError()`` in the student version."""
    text = _text(source)
    if "### BEGIN SOLUTION" not in text or "### END SOLUTION" not in text:
        raise ValueError(f"{grade_id}: a solution cell needs a ### BEGIN/END SOLUTION region")
    return nbformat.v4.new_code_cell(text, metadata=_meta(grade_id, True, False, False))


def tests(grade_id: str, source: str, points: float):
    """An autograded, read-only test cell worth ``points``; lines between ``### BEGIN HIDDEN
    TESTS`` and ``### END HIDDEN TESTS`` are removed from the student version and restored by
    nbgrader when it grades."""
    return nbformat.v4.new_code_cell(_text(source), metadata=_meta(grade_id, False, True, True, points))


def answer(grade_id: str, source: str, points: float):
    """A written answer, graded by hand (the student version shows "YOUR ANSWER HERE")."""
    return nbformat.v4.new_markdown_cell(_text(source), metadata=_meta(grade_id, True, True, False, points))


def notebook(cells: list) -> nbformat.NotebookNode:
    """An nbformat 4.5 notebook with stable cell ids (the grade ids) and the python3 kernel."""
    nb = nbformat.v4.new_notebook()
    nb.nbformat_minor = 5
    for cell in cells:
        cell["id"] = cell.metadata["nbgrader"]["grade_id"].replace("_", "-")
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def points(nb) -> dict[str, float]:
    """grade_id -> points of every graded cell (autograded tests and written answers)."""
    return {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"]["points"]
            for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")}
