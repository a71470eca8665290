"""Notebook widgets: the live preview of an inversion (:mod:`.preview`), the browser of the cached
results (:mod:`.explorer`) and the quickstart's "try it" panel (:mod:`.try_it`)."""
