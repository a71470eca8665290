"""A browser of the cached results (ipywidgets): pick a notebook, one of its results, a table row
or defence point and one of its batches, and see that batch's originals (with class names)
beside the reconstructions and the batch's metrics next to the row's mean ± std. Reconstructions
are cached for each row's first batch only (the study's tensors when present, else its committed
figure); the other batches show their originals and metrics."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from gradinv_lib.studies.common import StudyContext, markdown_table, results_dir
from gradinv_lib.studies.gallery import SECTIONS

from . import HEADLESS_NOTE, headless
from .preview import png_row

# result -> (its cached tensors, the committed figure of its reconstructions; {curve} for defences,
# whose clean point leads every grid)
IMAGES = {"quickstart": ("quickstart_images", "quickstart.png"), "table2_ablation": ("table2_images", "table2_images.png"),
          "table3_strength": ("table3_images", "table3_images.png"),
          "table4_comparison": ("table4_images", "table4_comparison.png"), "fig5_batch1": ("fig5_images", "fig5_batch1.png"),
          "batch_scaling": ("batch_{batch_size}_images", "fig7_grids_vs_batch.png"),
          "fig8_iip": (None, "fig8_iip.png"), "defences": ("defence_images", "grid_{curve}.png")}
METRICS = {"label_accuracy": "labels", "psnr": "PSNR", "psnr_registered": "PSNR reg.", "ssim": "SSIM",
           "fft2d": "FFT-2D", "iip": "IIP", "pixel_nn_hit": "identified (pixels)", "utility": "cos to clean",
           "epsilon": "epsilon", "seconds": "seconds"}


def row_name(row: dict, sizes: int) -> str:
    """A per-batch row's group: the defence point, else the row (with the population and, where
    the result holds several, the batch size)."""
    if row.get("point"):
        return row["point"]
    name = f"{row['population']}: {row['row']}" if row.get("population") else str(row.get("row", "run"))
    return f"{name}, batch {row['batch_size']}" if sizes > 1 else name


def batches(record: dict) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """(row name -> its per-batch rows, row name -> its summary row); the quickstart's one batch
    is its own row."""
    rows = record.get("batch_rows")
    if not rows:   # one batch (the quickstart; Fig. 5's one sample): its ids in the settings
        s = record["settings"]
        ids = s.get("batch_ids") or ([s["sample_id"]] if s.get("sample_id") else None)
        rows = [{**r, "batch_ids": ids, "batch_seed": record["context"]["seed"]} for r in record["rows"]]
    sizes = len({r.get("batch_size") for r in rows})
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("batch_ids"):
            out.setdefault(row_name(r, sizes), []).append(r)
    return out, {row_name(r, sizes): r for r in record["rows"]}


def _img(images) -> str:
    """(B, 3, H, W) in [0, 1] as one inline PNG row, each image 3x its side."""
    return f'<img src="data:image/png;base64,{base64.b64encode(png_row(images, 3)).decode()}">'



def _choose(dropdown, options) -> None:
    """New options with the first one selected (ipywidgets 8 leaves none selected otherwise)."""
    dropdown.options = options
    if options and dropdown.value is None:
        dropdown.index = 0


class Explorer:
    """The widget; ``folders``: notebook -> its results folder (the committed ones by default)."""

    def __init__(self, folders: dict[str, Path], dataset):
        import ipywidgets as w
        self.folders, self.dataset = folders, dataset
        style = {"description_width": "70px"}
        self.notebook = w.Dropdown(options=list(folders), description="notebook", style=style)
        self.result = w.Dropdown(description="result", style=style)
        self.row = w.Dropdown(description="row", style=style, layout=w.Layout(width="420px"))
        self.batch = w.Dropdown(description="batch", style=style)
        self.view = w.Output()
        self.notebook.observe(lambda _: self._results(), "value")
        self.result.observe(lambda _: self._rows(), "value")
        self.row.observe(lambda _: self._batches(), "value")
        self.batch.observe(lambda _: self.show(), "value")
        self.widget = w.VBox([w.HBox([self.notebook, self.result]), w.HBox([self.row, self.batch]), self.view])
        self._results()

    def _results(self):
        folder = self.folders[self.notebook.value]
        names = [n for n, *_ in SECTIONS[self.notebook.value][1] if (folder / f"{n}.json").exists() and n in IMAGES]
        self.records = {n: json.loads((folder / f"{n}.json").read_text()) for n in names}
        _choose(self.result, names)
        self._rows()

    def _rows(self):
        self.groups, self.summaries = batches(self.records[self.result.value]) if self.result.value else ({}, {})
        _choose(self.row, list(self.groups))
        self._batches()

    def _batches(self):
        members = self.groups.get(self.row.value, [])
        _choose(self.batch, [(f"seed {r['batch_seed']}" + (" (first)" if i == 0 else ""), i)
                             for i, r in enumerate(members)])
        self.show()

    def _reconstruction(self, row: dict) -> str:
        """The first batch's reconstructions from the cached tensors, else the committed figure."""
        import torch
        folder, (tensors, figure) = self.folders[self.notebook.value], IMAGES[self.result.value]
        name = (tensors or "").format(batch_size=row.get("batch_size"))
        key = row.get("point") or row.get("row")
        path = folder / f"{name}.pt"
        if tensors and path.exists():
            cached = torch.load(path, weights_only=True)
            if key in cached:
                return f"<p>reconstructions ({key})</p>{_img(cached[key][:len(row['batch_ids'])])}"
        figure = folder / figure.format(curve={"none": "pruning"}.get(row.get("curve"), row.get("curve")))
        if not figure.exists():
            return "<p>no cached reconstructions for this row</p>"
        data = base64.b64encode(figure.read_bytes()).decode()
        return (f"<p>reconstructions: the committed figure <code>{figure.name}</code> (first batch; no cached "
                f'tensors)</p><img style="max-width:900px" src="data:image/png;base64,{data}">')

    def show(self):
        from IPython.display import HTML, Markdown, display

        from gradinv_lib.plotting import class_names
        self.view.clear_output(wait=True)
        members = self.groups.get(self.row.value, [])
        if not members or self.batch.value is None:
            return
        row = members[self.batch.value]
        where = {image_id: k for k, image_id in enumerate(self.dataset.ids)}
        chosen = self.dataset.subset([where[i] for i in row["batch_ids"] if i in where])
        order = chosen.labels.argsort()         # the attack's order: sorted by (recovered) label
        names = class_names(chosen.labels[order].tolist())
        summary = self.summaries.get(self.row.value, {})
        columns = {"which": "", **{k: v for k, v in METRICS.items() if row.get(k) is not None}}
        table = markdown_table([{"which": "this batch", **row}, {"which": "row: mean ± std", **summary}], columns)
        with self.view:
            display(HTML(f"<p>originals, by label: {', '.join(names)}</p>{_img(chosen.images[order])}"))
            display(HTML(self._reconstruction(row) if self.batch.value == 0 else
                         "<p>reconstructions are cached for the first batch only</p>"))
            display(Markdown(table))


def explore(ctx: StudyContext):
    """The explorer over every notebook's committed results, ``ctx``'s own folder for its notebook
    (so a scratch run is browsed too); returns the widget to display (headless: a note)."""
    if headless():
        from IPython.display import Markdown
        return Markdown(HEADLESS_NOTE.format("The explorer of the cached results"))
    folders = {nb: results_dir(ctx.profile_name, nb) for nb in SECTIONS}
    folders[ctx.notebook] = ctx.out
    folders = {nb: f for nb, f in folders.items() if any((f / f"{n}.json").exists() for n, *_ in SECTIONS[nb][1])}
    explorer = Explorer(folders, ctx.dataset())
    explorer.notebook.value = ctx.notebook if ctx.notebook in folders else explorer.notebook.value
    return explorer.widget
