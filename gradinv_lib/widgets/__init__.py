"""Notebook widgets: the live preview of an inversion (:mod:`.preview`), the browser of the cached
results (:mod:`.explorer`) and the quickstart's "try it" panel (:mod:`.try_it`). A headless run
(:func:`headless`) gets a one-line note in their place."""

import os

HEADLESS_VARIABLE = "GRADINV_HEADLESS"
HEADLESS_NOTE = ("*{} is an interactive widget: open the notebook in Jupyter to use it (this copy ran headless, "
                 "e.g. through `gradinv reproduce`).*")


def headless() -> bool:
    """True in a kernel that no frontend shows (``gradinv reproduce`` sets GRADINV_HEADLESS=1). Nobody
    can use a widget there, and widget traffic stalled such runs: nbclient waited forever for the
    reply to the explorer's cell while the kernel sat idle (jupyter/nbclient#312)."""
    return os.environ.get(HEADLESS_VARIABLE, "") not in ("", "0")
