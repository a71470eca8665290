"""Write the course's nbgrader source notebooks (notebooks/course/source/<assignment>/<assignment>.ipynb,
with solutions and hidden tests) from the cells in notebooks/course/content/<assignment>.py.

    python notebooks/course/make_sources.py           # then: gradinv course release
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import nbformat

from gradinv_lib.course import ASSIGNMENTS
from gradinv_lib.course.authoring import notebook

HERE = Path(__file__).resolve().parent


def build(name: str) -> nbformat.NotebookNode:
    """The source notebook of one assignment."""
    sys.path.insert(0, str(HERE / "content"))   # content modules may share cells (a4 reuses a3's)
    try:
        return notebook(importlib.import_module(name).cells())
    finally:
        sys.path.remove(str(HERE / "content"))


def main() -> None:
    for name in ASSIGNMENTS:
        path = HERE / "source" / name / f"{name}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(build(name), path)
        print(path.relative_to(HERE))


if __name__ == "__main__":
    main()
