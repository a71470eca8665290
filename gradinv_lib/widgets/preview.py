"""The live preview of an inversion (a ``run_inversion`` callback): the originals, every seed and
the seeds' pixel mean, row by row at an integer scale, with iterations per second and an ETA;
shown from before the first iteration, and kept as snapshots for a static strip when headless."""

from __future__ import annotations

import io
import time

import torch

from . import headless

TILE = 96          # displayed side of one image, in pixels (an integer multiple of the image side)


def png_row(images: torch.Tensor, scale: int) -> bytes:
    """(B, 3, H, W) in [0, 1] side by side, 2 px apart, upscaled ``scale`` times (nearest) as PNG."""
    from PIL import Image
    b, _, h, w = images.shape
    row = torch.ones(3, h, b * (w + 2) - 2)
    for i, image in enumerate(images.clamp(0, 1)):
        row[:, :, i * (w + 2):i * (w + 2) + w] = image
    array = (row.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(array).resize((array.shape[1] * scale, array.shape[0] * scale), Image.NEAREST).save(buffer, "PNG")
    return buffer.getvalue()


def eta_text(done: int, total: int, rate: float | None) -> str:
    """"12.3 it/s, ETA 1 min 05 s" for ``done`` of ``total`` iterations at ``rate`` it/s."""
    if not rate:
        return "measuring the speed"
    left = (total - done) / rate
    minutes, secs = divmod(int(round(left)), 60)
    return f"{rate:.1f} it/s, ETA {minutes} min {secs:02d} s" if minutes else f"{rate:.1f} it/s, ETA {secs} s"


class ReconstructionPreview:
    """Shows the batch while it optimises (ipywidgets in a notebook front end) and keeps seed 0's
    snapshots for :meth:`strip`. ``originals``: (B, 3, H, W) in the attack's order (sorted by
    label, as the recovered labels are); ``seeds``: G. Without ipywidgets (or ``live=False``) it
    prints a progress line now and then instead."""

    def __init__(self, originals: torch.Tensor, seeds: int, total: int, live: bool = True, keep: int = 6,
                 min_interval: float = 0.3):
        self.snapshots: list[tuple[int, torch.Tensor]] = []
        self.keep, self.total, self.min_interval = keep, total, min_interval
        self.latest: dict[str, torch.Tensor] = {"original": originals.cpu()}
        self.scale = max(1, TILE // originals.shape[-1])
        self.first, self.shown, self.rows, self.status = None, 0.0, None, None   # first: (time, iteration)
        self.iteration = 0
        if live and not headless():
            self._build(originals, seeds)

    def _build(self, originals: torch.Tensor, seeds: int) -> None:
        try:
            import ipywidgets as w
            from IPython.display import display
        except ImportError:
            return
        names = ["originals", *[f"seed {g}" for g in range(seeds)], "mean of the seeds"]
        blank = png_row(torch.full_like(originals, 0.85), self.scale)   # grey until the first snapshot
        self.rows = {n: w.Image(value=png_row(originals, self.scale) if n == "originals" else blank, format="png",
                                layout=w.Layout(width="auto", height="auto", object_fit="none")) for n in names}
        self.status = w.HTML(f"<b>preview</b>: starting ({self.total} iterations); the attack first recovers the "
                             "labels from the gradient")
        rows = [w.HBox([w.Label(n, layout=w.Layout(width="130px")), image]) for n, image in self.rows.items()]
        display(w.VBox([self.status, *rows], layout=w.Layout(overflow="auto")))

    def __call__(self, progress) -> None:
        seeds = progress.to_pixels(progress.images)                 # (G, B, 3, H, W)
        self.snapshots.append((progress.iteration, seeds[0]))
        self.latest.update({"seeds": seeds, "mean of the seeds": seeds.mean(0)})
        self.iteration = progress.iteration
        now = time.perf_counter()
        self.first = self.first or (now, progress.iteration)   # the speed from the first snapshot on
        rate = (progress.iteration - self.first[1]) / (now - self.first[0]) if now > self.first[0] else None
        text = (f"iteration {progress.iteration}/{progress.total}, loss {progress.losses['total']:.4g}, "
                f"{eta_text(progress.iteration, progress.total, rate)}")
        last = progress.iteration == progress.total
        if self.rows is None:
            if last or len(self.snapshots) % 10 == 1:
                print(text, flush=True)
            return
        if not last and time.perf_counter() - self.shown < self.min_interval:
            return
        self.shown = time.perf_counter()
        for g, images in enumerate(seeds):
            self.rows[f"seed {g}"].value = png_row(images, self.scale)
        self.rows["mean of the seeds"].value = png_row(seeds.mean(0), self.scale)
        self.status.value = f"<b>preview</b>: {text}"

    def strip(self) -> dict:
        """Up to ``keep`` snapshots spread over the run, as rows for ``plotting.image_grid``."""
        if not self.snapshots:
            return {}
        step = max(1, len(self.snapshots) // self.keep)
        chosen = self.snapshots[::step][: self.keep - 1] + [self.snapshots[-1]]
        return {f"it {it}": imgs for it, imgs in dict(chosen).items()}
