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

from ..errors import InputError, MissingAssetError
from ..io import atomic_write, provenance, write_json_atomic


def repo_root() -> Path:
    """The repository holding figures/ and notebooks/: ``$GRADINV_ROOT``, else the checkout this
    package was installed from (editable install), else the nearest such folder above the current
    directory, else the current directory."""
    if os.environ.get("GRADINV_ROOT"):
        return Path(os.environ["GRADINV_ROOT"]).resolve()
    cwd = Path.cwd().resolve()
    for here in (Path(__file__).resolve().parents[2], cwd, *cwd.parents):
        if (here / "pyproject.toml").exists() and (here / "notebooks").is_dir():
            return here
    return cwd


def results_dir(profile: str, notebook: str, output_dir: str | Path | None = None) -> Path:
    """``figures/<profile>/<notebook>/`` under the repository, or ``output_dir`` when given."""
    return Path(output_dir) if output_dir else repo_root() / "figures" / profile / notebook


def pick(value, default):
    """A notebook parameter left as None means "the study's default for this profile"."""
    return default if value is None else value


@dataclass
class StudyContext:
    """A notebook's parameters resolved once: profile, seed, device, resolution, output folder.

    The model and data set are built lazily and cached, so cells stay one line long.
    """

    notebook: str
    profile_name: str = "quick"
    seed: int = 0
    device: str | None = None
    resolution: int | None = None
    output_dir: str | Path | None = None
    _models: dict = field(default_factory=dict, repr=False)
    _datasets: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        from ..profiles import default_device, get_profile
        self.profile = get_profile(self.profile_name)
        self.device = self.device or default_device()
        self.resolution = int(self.resolution or self.profile.resolution)
        self.out = results_dir(self.profile_name, self.notebook, self.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)

    def model(self, name: str | None = None, weights: str | None = None):
        """A model by name (default: the profile's), cached; ``weights`` 'default' | 'random'."""
        from ..profiles import build_for_dataset
        key = (name or self.profile.model, weights or self.profile.weights)
        if key not in self._models:
            self._models[key] = build_for_dataset(key[0], key[1], self.profile.dataset,
                                                  device=self.device, seed=self.seed)
        return self._models[key]

    def dataset(self, resolution: int | None = None):
        """The profile's labelled images (the pool offline) at ``resolution`` (default: the context's)."""
        from ..profiles import load_dataset
        resolution = int(resolution or self.resolution)
        if resolution not in self._datasets:
            self._datasets[resolution] = load_dataset(self.profile.dataset, resolution)
        return self._datasets[resolution]

    def describe(self) -> dict:
        """Settings recorded beside every result."""
        return {"notebook": self.notebook, "profile": self.profile_name, "seed": self.seed,
                "device": self.device, "resolution": self.resolution,
                "profile_model": self.profile.model, "profile_notes": self.profile.notes}


# ----------------------------------------------------------------------------- cached results
def save_results(ctx: StudyContext, name: str, rows: list[dict], settings: dict | None = None,
                 started: float | None = None, extra: dict | None = None) -> dict:
    """Write ``<out>/<name>.json`` (rows + settings + provenance + wall time) and ``<name>.csv``."""
    record = {"name": name, "context": ctx.describe(), "settings": settings or {},
              "wall_time_s": None if started is None else round(time.perf_counter() - started, 2),
              "provenance": provenance(ctx.device), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "rows": rows, **(extra or {})}
    write_json_atomic(ctx.out / f"{name}.json", record)
    write_csv(ctx.out / f"{name}.csv", rows)
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


def load_results(out: str | Path | StudyContext, name: str) -> dict:
    """A cached result written by :func:`save_results` (for plotting without recomputing)."""
    path = output_folder(out) / f"{name}.json"
    if not path.exists():
        raise MissingAssetError(f"no cached result {path}: run the study's compute cell first")
    import json
    return json.loads(path.read_text())


def save_tensors(ctx: StudyContext, name: str, tensors: dict) -> Path:
    from ..io import torch_save_atomic
    return torch_save_atomic({k: v.detach().cpu().clone() if torch.is_tensor(v) else v  # no shared storage
                              for k, v in tensors.items()},
                             ctx.out / f"{name}.pt")


def load_tensors(out: str | Path | StudyContext, name: str) -> dict:
    path = output_folder(out) / f"{name}.pt"
    if not path.exists():
        raise MissingAssetError(f"no cached tensors {path}: run the study's compute cell first")
    return torch.load(path, weights_only=False)


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
    from ..plotting import save_figure
    path = figure_paths(out, name)
    save_figure(fig, path, pdf=pdf)
    return path


def check_positive(name: str, values) -> None:
    bad = [v for v in values if int(v) != v or v < 1]
    if bad:
        raise InputError(f"{name}: expected positive integers, found {bad}")
