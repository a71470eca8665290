"""Figures: image grids of originals beside reconstructions, saved as PNG (and PDF on request).
Plotting only reads results; it never computes them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg") if not matplotlib.get_backend().lower().startswith(("module://", "nbagg")) else None
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def class_names(labels, classes: int = 1000) -> list[str]:
    """Readable titles for class indices: ImageNet's names (torchvision's list, shipped with it)
    for 1000 classes, shortened to the first synonym, CIFAR-10's for 10, with the index; bare
    indices otherwise."""
    labels = [int(v) for v in labels]
    if classes == 10:
        from gradinv_lib.models.cifar10_cnn import CLASS_NAMES
        return [f"{CLASS_NAMES[v]} ({v})" if 0 <= v < 10 else str(v) for v in labels]
    if classes != 1000:
        return [str(v) for v in labels]
    from torchvision.models import ResNet18_Weights  # only the metadata: nothing is downloaded
    names = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    return [f"{names[v].split(',')[0]} ({v})" if 0 <= v < len(names) else str(v) for v in labels]


def image_grid(rows: dict[str, torch.Tensor], column_titles=None, scale: float = 1.6):
    """A figure with one row per entry of ``rows`` (name -> (B, 3, H, W) in [0, 1])."""
    names = list(rows)
    cols = max(r.shape[0] for r in rows.values())
    fig, axes = plt.subplots(len(names), cols, figsize=(scale * cols, scale * len(names) + 0.3),
                             squeeze=False)
    for r, name in enumerate(names):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < rows[name].shape[0]:
                ax.imshow(rows[name][c].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
            if r == 0 and column_titles is not None and c < len(column_titles):   # wrapped to its column
                ax.set_title(textwrap.fill(str(column_titles[c]), width=max(8, int(17 * scale))), fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | Path, pdf: bool = False) -> list[Path]:
    """Write ``fig`` to ``path`` (PNG) and, with ``pdf``, beside it as PDF; closes the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = [path]
    fig.savefig(path, dpi=120, bbox_inches="tight")
    if pdf:
        written.append(path.with_suffix(".pdf"))
        fig.savefig(written[-1], bbox_inches="tight")
    plt.close(fig)
    return written
