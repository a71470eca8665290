"""The lab session's live view: sliders for the batch size and the defence's strength (the
fraction of each gradient tensor top-k pruning keeps) rerun the student's own attack on the
student's own defence, so a class sees leakage fall and rise. :func:`lab_run` is the same run
without widgets (what a notebook under papermill executes)."""

from __future__ import annotations

from typing import Callable

from gradinv_lib.plotting import image_grid

from . import lab


def lab_run(objective: Callable, prune: Callable, batch_size: int = 4, keep: float = 1.0,
            iterations: int = 200, seed: int = 0) -> dict:
    """Attack a client batch of ``batch_size`` whose update ``prune(gradients, keep)`` defended
    (``keep`` = 1: undefended) with ``objective``; the scores of :func:`lab.score` and a figure."""
    batch, update = lab.client_batch(int(batch_size), seed=seed)
    if keep < 1:
        update = lab.with_gradients(update, lambda grads: prune(grads, keep))
    scores = lab.score(lab.invert(objective, update, iterations=iterations, seed=seed), batch)
    scores["figure"] = image_grid({"original": scores["originals"], "recovered": scores["reconstruction"]})
    scores["figure"].suptitle(f"batch {batch_size}, keep {keep:.3g}: PSNR {scores['psnr']:.1f} dB "
                              f"(mean colour {scores['mean_colour_psnr']:.1f}), identified "
                              f"{scores['identified']}/{scores['batch_size']}", fontsize=9)
    return scores


def leakage_lab(objective: Callable, prune: Callable, iterations: int = 200, seed: int = 0):
    """Sliders (batch size 1-16, keep fraction 0.001-1 on a log scale) and an "Attack" button;
    each press reruns :func:`lab_run` and shows the originals, the reconstruction and the scores."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    size = widgets.IntSlider(value=4, min=1, max=16, description="batch size")
    keep = widgets.FloatLogSlider(value=1.0, base=10, min=-3, max=0, step=0.25, description="keep")
    button = widgets.Button(description="Attack")
    out = widgets.Output()

    def attack(_=None):
        with out:
            out.clear_output(wait=True)
            print(f"attacking batch {size.value}, keep {keep.value:.3g}, {iterations} iterations ...")
            scores = lab_run(objective, prune, size.value, keep.value, iterations, seed)
            out.clear_output(wait=True)
            display(scores["figure"])
            plt.close(scores["figure"])

    button.on_click(attack)
    return widgets.VBox([widgets.HBox([size, keep, button]), out])
