"""Reading mode for the notebooks: a cell shows the cached results of its parameters at once and
computes only when the cache is missing, the parameters differ from those of the folder's
results, or ``RECOMPUTE = True`` (then into a scratch folder, never over figures/; see
``common.choose_output``)."""

from __future__ import annotations

import json
from pathlib import Path

from gradinv_lib.io import write_json_atomic

from .common import PARAMETERS_FILE, StudyContext, load_results, repo_root, results_dir, shown


def committed_seconds(profile: str, notebook: str, name: str) -> float | None:
    """The compute time of the committed result ``name`` (its ``wall_time_s``), None without one."""
    path = results_dir(profile, notebook) / f"{name}.json"
    return json.loads(path.read_text()).get("wall_time_s") if path.exists() else None


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (no committed run)"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def cached(ctx: StudyContext, name: str, compute) -> dict:
    """The result ``name``: read from the context's folder in reading mode, else ``compute()``
    (which saves it there). Says in one line which happened and, when computing, how long the
    committed run took."""
    from IPython.display import Markdown, display
    if ctx.reading and (ctx.out / f"{name}.json").exists():
        record = load_results(ctx, name)
        display(Markdown(f"<small>`{name}` read from the cache (computed {record.get('created', '?')[:10]} in "
                         f"{duration(record.get('wall_time_s'))}).</small>"))
        return record
    expected = committed_seconds(ctx.profile_name, ctx.notebook, name)
    print(f"computing {name} into {shown(ctx.out)}; the committed run (default parameters, quick profile, "
          f"2-core CPU) took {duration(expected)} ...", flush=True)
    record = compute()
    ctx.partial = bool(record.get("partial"))
    if not ctx.partial and ctx.parameters is not None:   # also when a study saved through another context
        write_json_atomic(ctx.out / PARAMETERS_FILE, ctx.key)
    return record


def figures(ctx: StudyContext, names: list[str], draw) -> list[Path]:
    """Display the figures ``names`` (PNG files of the folder): in reading mode the cached ones
    (figures are never redrawn over the committed files), else those ``draw()`` saves."""
    from IPython.display import Image, display
    if ctx.partial:
        print("no figures: the run was interrupted (its partial result is shown above)")
        return []
    if ctx.reading:
        paths = [ctx.out / n for n in names if (ctx.out / n).exists()]
        if not paths:
            print(f"no cached figure {', '.join(names)} in {shown(ctx.out)}: RECOMPUTE = True draws it")
    else:
        drawn = draw()
        paths = drawn if isinstance(drawn, list) else [drawn]
    for path in paths:
        display(Image(filename=str(path)))
    return paths


def claims(ctx: StudyContext, text):
    """The generated claims as Markdown (``text()``), or one line when an interrupted run left none."""
    from IPython.display import Markdown
    if ctx.partial:
        return Markdown("No claims: the run was interrupted before its results were saved.")
    return Markdown(text())
