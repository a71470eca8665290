"""What every study shares: where results go, the context a notebook builds from its parameters
(profile, seed, device, model, data), cached result files with provenance, and comparison tables.

Compute and plot are separate steps: ``save_results`` writes ``<name>.json`` (rows, settings,
provenance, wall time) and ``<name>.csv``; plotting functions only call ``load_results``.
"""

from __future__ import annotations

import csv
import io as _io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gradinv_lib.errors import InputError, MissingAssetError
from gradinv_lib.io import atomic_write, provenance, write_json_atomic
from gradinv_lib.runtime.nodes import computed_on


def repo_root() -> Path:
    """The checkout holding figures/ and notebooks/ that this process runs in: ``$GRADINV_ROOT``,
    else the nearest such folder at or above the current directory (a notebook's kernel starts in
    notebooks/), else the checkout this package was installed from (editable install), else the
    current directory. A second clone's notebook therefore never writes into the first clone."""
    if os.environ.get("GRADINV_ROOT"):
        return Path(os.environ["GRADINV_ROOT"]).resolve()
    cwd = Path.cwd().resolve()
    for here in (cwd, *cwd.parents, Path(__file__).resolve().parents[2]):
        if (here / "pyproject.toml").exists() and (here / "notebooks").is_dir():
            return here
    return cwd


def results_dir(profile: str, notebook: str, output_dir: str | Path | None = None) -> Path:
    """``figures/<profile>/<notebook>/`` under the repository (the committed results), or
    ``output_dir`` when given."""
    return Path(output_dir) if output_dir else repo_root() / "figures" / profile / notebook


PARAMETERS_FILE = "parameters.json"
# notebook parameters that change how results are shown, not what is computed
PRESENTATION = ("PDF", "LIVE_PREVIEW", "OUTPUT_DIR", "RECOMPUTE", "DEVICE")


def result_parameters(profile: str, seed: int, resolution, parameters: dict | None) -> dict:
    """The parameters that decide a notebook's results: its own (presentation ones left out) with
    the profile, seed and resolution, in a stable order (hashed for the scratch folder)."""
    own = {k: v for k, v in (parameters or {}).items() if k not in PRESENTATION}
    return {"PROFILE": profile, "SEED": seed, "RESOLUTION": resolution, **dict(sorted(own.items()))}


def parameters_hash(parameters: dict) -> str:
    import hashlib
    import json
    return hashlib.sha1(json.dumps(parameters, sort_keys=True, default=str).encode()).hexdigest()[:10]


def saved_parameters(folder: Path) -> dict | None:
    """The parameters a results folder was computed with (its ``parameters.json``), or None."""
    import json
    path = Path(folder) / PARAMETERS_FILE
    return json.loads(path.read_text()) if path.exists() else None


def choose_output(notebook: str, parameters: dict, output_dir=None, recompute: bool = False) -> Path:
    """Where a notebook reads and writes: ``output_dir`` when given (``gradinv reproduce`` passes
    figures/<profile>/<notebook>/); else the committed folder when it was computed with exactly
    these parameters and no recompute is asked; else a scratch folder
    ``runs/<notebook>/<parameters hash>/``, so an experiment never writes over figures/."""
    if output_dir:
        return Path(output_dir)
    committed = results_dir(parameters["PROFILE"], notebook)
    if not recompute and saved_parameters(committed) == json_round_trip(parameters):
        return committed
    return repo_root() / "runs" / notebook / parameters_hash(parameters)


def json_round_trip(value):
    """``value`` as JSON reads it back (tuples become lists), for comparing with a saved file."""
    import json
    return json.loads(json.dumps(value, default=str))


def stopping_text(ctx: "StudyContext", iterations: int, default: int | None) -> str:
    """The stopping criterion of a run of ``iterations``: the profile's own statement when that
    is the profile's budget ``default`` for the study, else a fixed budget set by the parameters."""
    if default is None or int(iterations) == int(default):
        return ctx.profile.stopping
    return (f"a fixed budget of {iterations} iterations set by the notebook's parameters (the profile's "
            f"{default}; its measured stopping note does not apply)")


def pick(value, default):
    """A notebook parameter left as None means "the study's default for this profile"."""
    return default if value is None else value


@dataclass
class StudyContext:
    """A notebook's parameters resolved once: profile, seed, device, resolution, output folder.

    ``parameters``: the notebook's own parameters (None: a library caller's context, writing to
    ``output_dir`` or figures/). With them, :func:`choose_output` picks the folder, and
    ``reading`` says whether its cached results can be shown without recomputing. The model and
    data set are built lazily and cached, so cells stay one line long.
    """

    notebook: str
    profile_name: str = "quick"
    seed: int = 0
    device: str | None = None
    resolution: int | None = None
    output_dir: str | Path | None = None
    parameters: dict | None = None
    recompute: bool = False
    _models: dict = field(default_factory=dict, repr=False)
    _datasets: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        from gradinv_lib.profiles import default_device, get_profile
        self.profile = get_profile(self.profile_name)
        self.device = self.device or default_device()
        self.key = result_parameters(self.profile_name, self.seed, self.resolution, self.parameters)
        self.resolution = int(self.resolution or self.profile.resolution)
        if self.parameters is None:
            self.out = results_dir(self.profile_name, self.notebook, self.output_dir)
        else:
            self.out = choose_output(self.notebook, self.key, self.output_dir, self.recompute)
        self.out.mkdir(parents=True, exist_ok=True)
        # reading mode, decided once: the folder's results were computed with these parameters and
        # no recompute is asked, so cells show the cache instead of computing
        self.reading = (self.parameters is not None and not self.recompute
                        and saved_parameters(self.out) == json_round_trip(self.key))
        self.partial = False     # set when an interrupted run returned a partial result

    def model(self, name: str | None = None, weights: str | None = None):
        """A model by name (default: the profile's), cached; ``weights`` 'default' | 'random'."""
        from gradinv_lib.profiles import build_for_dataset
        key = (name or self.profile.model, weights or self.profile.weights)
        if key not in self._models:
            self._models[key] = build_for_dataset(key[0], key[1], self.profile.dataset,
                                                  device=self.device, seed=self.seed)
        return self._models[key]

    def dataset(self, resolution: int | None = None):
        """The profile's labelled images (the pool offline) at ``resolution`` (default: the context's)."""
        from gradinv_lib.profiles import load_dataset
        resolution = int(resolution or self.resolution)
        if resolution not in self._datasets:
            self._datasets[resolution] = load_dataset(self.profile.dataset, resolution)
        return self._datasets[resolution]

    def describe(self) -> dict:
        """Settings recorded beside every result."""
        return {"notebook": self.notebook, "profile": self.profile_name, "seed": self.seed,
                "device": self.device, "resolution": self.resolution,
                "profile_model": self.profile.model, "profile_notes": self.profile.notes}

    def _repr_markdown_(self) -> str:
        """What a notebook shows for the context: the mode, the folder and the settings, readable."""
        if self.reading:
            mode = (f"**Reading mode**: the results below are read from `{shown(self.out)}`, computed with "
                    "these parameters; nothing is recomputed (`RECOMPUTE = True` computes them again, into "
                    "a scratch folder).")
        else:
            mode = (f"**Compute mode**: the compute cells write to `{shown(self.out)}`"
                    + (" (`RECOMPUTE = True`)" if self.recompute else
                       " (parameters that differ from those of the committed results)" if self.parameters else "")
                    + "; `figures/` is left as it is.")
        settings = (f"Profile `{self.profile_name}` (model `{self.profile.model}`, {self.resolution} px), "
                    f"seed {self.seed}, device `{self.device}`.")
        notes = f"<details><summary>Profile notes</summary>\n\n{self.profile.notes}\n\n</details>"
        return f"{mode}\n\n{settings}\n\n{notes}"


def shown(path) -> str:
    """``path`` relative to the checkout when it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(repo_root()))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------- cached results
def save_results(ctx: StudyContext, name: str, rows: list[dict], settings: dict | None = None,
                 started: float | None = None, extra: dict | None = None) -> dict:
    """Write ``<out>/<name>.json`` (rows + settings + provenance + wall time) and ``<name>.csv``."""
    record = {"name": name, "context": ctx.describe(), "settings": settings or {},
              "wall_time_s": None if started is None else round(time.perf_counter() - started, 2),
              "provenance": {**provenance(ctx.device), "computed_on": computed_on(rows, *(extra or {}).values())},
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "rows": rows, **(extra or {})}
    write_json_atomic(ctx.out / f"{name}.json", record)
    write_csv(ctx.out / f"{name}.csv", rows)
    if ctx.parameters is not None:   # the folder now holds results of these parameters
        write_json_atomic(ctx.out / PARAMETERS_FILE, ctx.key)
    return record


def write_csv(path: str | Path, rows: list[dict]) -> Path:
    """Rows of flat dicts as CSV (columns in first-seen order; nested values skipped)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k, v in row.items() if k not in columns and not isinstance(v, (dict, list))]
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(path, lambda f: f.write(buffer.getvalue().encode()))


def result_candidates(ctx: "StudyContext", source: str) -> list[Path]:
    """Where the cached results ``source`` (relative to the study's folder, without ".json", e.g.
    "../04_batch_scaling/batch_scaling") may be: beside the folder, and, for another notebook's,
    its committed folder and its scratch folders under runs/ (run keys decide what is reused)."""
    paths = [ctx.out / f"{source}.json"]
    parts = Path(source).parts
    if len(parts) == 3 and parts[0] == "..":
        paths.append(results_dir(ctx.profile_name, parts[1]) / f"{parts[2]}.json")
        paths += sorted((repo_root() / "runs" / parts[1]).glob(f"*/{parts[2]}.json"))
    return list(dict.fromkeys(p for p in paths if p.exists()))


def load_results(out: str | Path | StudyContext, name: str) -> dict:
    """A cached result written by :func:`save_results` (for plotting without recomputing)."""
    path = output_folder(out) / f"{name}.json"
    if not path.exists():
        raise MissingAssetError(f"no cached result {path}: run the study's compute cell first")
    import json
    return json.loads(path.read_text())


def save_tensors(ctx: StudyContext, name: str, tensors: dict) -> Path:
    from gradinv_lib.io import torch_save_atomic
    return torch_save_atomic({k: v.detach().cpu().clone() if torch.is_tensor(v) else v  # no shared storage
                              for k, v in tensors.items()},
                             ctx.out / f"{name}.pt")


def load_tensors(out: str | Path | StudyContext, name: str) -> dict:
    path = output_folder(out) / f"{name}.pt"
    if not path.exists():
        raise MissingAssetError(f"no cached tensors {path}: run the study's compute cell first")
    return torch.load(path, weights_only=True)  # tensors and plain containers: no code from a cache


# ----------------------------------------------------------------------------- tables
def _fmt(value, digits: int = 3) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _cell(row: dict, key: str, digits: int) -> str:
    """A value, as "mean ± spread" when the row carries ``<key>_std`` (a summary over batches)."""
    value, spread = row.get(key), row.get(f"{key}_std")
    if isinstance(value, float) and isinstance(spread, float):
        return f"{value:.{digits}f} ± {spread:.{digits}f}"
    return _fmt(value, digits)


def markdown_table(rows: list[dict], columns: dict[str, str], digits: int = 3) -> str:
    """A Markdown table of ``rows``; ``columns`` maps row key -> header. A value whose row also
    holds ``<key>_std`` is shown as "mean ± std"."""
    head = "| " + " | ".join(columns.values()) + " |"
    rule = "|" + "---|" * len(columns)
    body = ["| " + " | ".join(_cell(r, k, digits) for k in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def show_table(rows: list[dict], columns: dict[str, str], digits: int = 3):
    """The table as rendered Markdown in a notebook (plain text elsewhere)."""
    text = markdown_table(rows, columns, digits)
    try:
        from IPython.display import Markdown
        return Markdown(text)
    except ImportError:  # pragma: no cover - IPython ships with the notebook extras
        return text


def output_folder(out: str | Path | StudyContext) -> Path:
    """The results folder of a study context, or ``out`` itself."""
    return out.out if isinstance(out, StudyContext) else Path(out)


def figure_paths(ctx_or_out, name: str) -> Path:
    return output_folder(ctx_or_out) / f"{name}.png"


def save_study_figure(fig, out, name: str, pdf: bool = False) -> Path:
    """Save ``fig`` as ``<results folder>/<name>.png`` (and .pdf) and return the PNG's path."""
    from gradinv_lib.plotting import save_figure
    path = figure_paths(out, name)
    save_figure(fig, path, pdf=pdf)
    return path


def check_positive(name: str, values) -> None:
    bad = [v for v in values if int(v) != v or v < 1]
    if bad:
        raise InputError(f"{name}: expected positive integers, found {bad}")
