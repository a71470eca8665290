"""The quickstart: one batch end to end (client gradient -> labels -> images -> metrics), with a
live preview of the reconstruction while it optimises (ipywidgets in Jupyter; snapshots kept for
a static strip when run headless, e.g. by papermill)."""

from __future__ import annotations

import io
import time

import torch

from ..data import sample_batch
from .common import StudyContext, load_results, load_tensors, pick, save_results, save_tensors
from .runs import run_attack, scaled_iterations, study_config

QUICK_ITERATION_FRACTION = 0.5   # of the profile's iterations (quick: 30-minute budget for all notebooks)


class ReconstructionPreview:
    """A ``run_inversion`` callback: shows seed 0's batch as it optimises and keeps snapshots.

    ``live=True`` draws into an ipywidgets Image (falls back to plain progress lines when
    ipywidgets or a notebook front end is missing); snapshots are kept either way.
    """

    def __init__(self, live: bool = True, keep: int = 6):
        self.snapshots: list[tuple[int, torch.Tensor]] = []
        self.keep, self.widget, self.label = keep, None, None
        if live:
            try:
                import ipywidgets
                from IPython.display import display
                self.widget, self.label = ipywidgets.Image(format="png"), ipywidgets.Label("starting")
                display(ipywidgets.VBox([self.label, self.widget]))
            except ImportError:
                self.widget = None

    def __call__(self, progress) -> None:
        images = progress.to_pixels(progress.images[0])
        self.snapshots.append((progress.iteration, images))
        text = f"iteration {progress.iteration}/{progress.total}, loss {progress.losses['total']:.4g}"
        if self.widget is not None:
            self.widget.value = _png_strip(images)
            self.label.value = text
        elif progress.iteration == progress.total or len(self.snapshots) % 4 == 1:
            print(text, flush=True)

    def strip(self) -> dict:
        """Up to ``keep`` snapshots spread over the run, as rows for ``plotting.image_grid``."""
        if not self.snapshots:
            return {}
        step = max(1, len(self.snapshots) // self.keep)
        chosen = self.snapshots[::step][: self.keep - 1] + [self.snapshots[-1]]
        return {f"it {it}": imgs for it, imgs in dict(chosen).items()}


def _png_strip(images: torch.Tensor) -> bytes:
    """(B, 3, H, W) in [0, 1] side by side as PNG bytes (for the widget)."""
    from PIL import Image
    row = torch.cat(list(images.clamp(0, 1)), dim=2)  # (3, H, B*W)
    array = (row.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(array).resize((array.shape[1] * 2, array.shape[0] * 2), Image.NEAREST).save(buffer, "PNG")
    return buffer.getvalue()


def quickstart(ctx: StudyContext, batch_size: int | None = None, iterations: int | None = None,
               live: bool = True, preview_every: int | None = None) -> dict:
    """Attack one batch of distinct labels with the profile's configuration."""
    started = time.perf_counter()
    batch_size = int(pick(batch_size, 4 if ctx.profile.name == "quick" else 8))
    config = study_config(ctx, pick(iterations, scaled_iterations(ctx, QUICK_ITERATION_FRACTION)))
    preview_every = int(pick(preview_every, max(1, config.iterations // 20)))
    config = config.replace(log_every=min(config.log_every, preview_every))
    batch = sample_batch(ctx.dataset(), batch_size, seed=ctx.seed)
    preview = ReconstructionPreview(live=live)
    run = run_attack(ctx, batch, config, callback=preview)
    save_tensors(ctx, "quickstart_images", {"original": run.originals, "noise start": run.start,
                                            "reconstruction": run.reconstruction})
    save_tensors(ctx, "quickstart_progress", preview.strip())
    return save_results(ctx, "quickstart", [run.row],
                        {"batch_size": batch_size, "config": config.to_dict(), "batch_ids": batch.ids,
                         "true_labels": batch.labels.tolist(), "recovered_labels": run.evaluation["labels"]["recovered"],
                         "pseudo_labels": batch.pseudo.tolist()}, started)


def plot_quickstart(out, pdf: bool = True):
    """Originals, noise start and reconstruction; and the progress strip (snapshots over time)."""
    from ..plotting import image_grid, save_figure
    folder = out.out if isinstance(out, StudyContext) else out
    record = load_results(out, "quickstart")
    fig = image_grid(load_tensors(out, "quickstart_images"), column_titles=record["settings"]["recovered_labels"])
    save_figure(fig, folder / "quickstart.png", pdf=pdf)
    strip = load_tensors(out, "quickstart_progress")
    paths = [folder / "quickstart.png"]
    if strip:
        save_figure(image_grid(strip, scale=1.2), folder / "quickstart_progress.png", pdf=pdf)
        paths.append(folder / "quickstart_progress.png")
    return paths
