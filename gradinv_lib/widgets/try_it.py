"""The quickstart's "try it" panel (ipywidgets): pick a batch size, iterations, seeds and a
defence, press Run, and watch GradInversion (the profile's full method, eqs. 1-12) attack that
client's update in the live preview; the result is scored and shown, and nothing is written."""

from __future__ import annotations

import time

import torch

from gradinv_lib.studies.common import StudyContext

from . import HEADLESS_NOTE, headless

# label -> (defence curve, strength) of studies.defences.make_defence; None: the plain FedSGD client
DEFENCE_CHOICES = {"none (FedSGD)": None, "gradient pruning, keep 1%": ("pruning", 0.01),
                   "DP-SGD, noise multiplier 0.001": ("dp", 1e-3), "BN statistics withheld": ("dp_parts", 1),
                   "MixUp, weight 0.5": ("mixup", 0.5), "FedAvg, 2 local steps of half the batch": ("fedavg", (2, None))}
# the committed quickstart's cost (batch 8, 4 seeds, 1200 iterations, 64 s) scaled per image-seed-iteration
SECONDS_PER_UNIT = 64.0 / (8 * 4 * 1200)


def expected_seconds(batch_size: int, seeds: int, iterations: int) -> float:
    """A rough wall time on this 2-core CPU, from the committed quickstart's cost, plus ~10 s of set-up."""
    return 10 + SECONDS_PER_UNIT * batch_size * seeds * iterations


def attack_once(ctx: StudyContext, batch_size: int, iterations: int, seeds: int, choice, live: bool = True):
    """One defended client and the attack on it; returns (originals in label order, the
    consensus paired with them, the evaluation dict). Raises InputError for a bad combination."""
    from gradinv_lib.attack.pipeline import gradinversion
    from gradinv_lib.data import sample_batch
    from gradinv_lib.defences import NoDefence, defended_update
    from gradinv_lib.experiments.run import evaluate_attack
    from gradinv_lib.studies.defence_runs import dp_clip
    from gradinv_lib.studies.defences import make_defence
    from gradinv_lib.studies.runs import client_bn_mode, study_config

    from .preview import ReconstructionPreview
    model, data = ctx.model(), ctx.dataset()
    batch = sample_batch(data, batch_size, seed=ctx.seed)
    x, y = batch.images.to(ctx.device), batch.labels.to(ctx.device)
    curve, strength = choice or ("none", None)
    if curve == "fedavg":
        strength = (strength[0], max(1, batch_size // 2))
    defence = (make_defence(curve, strength, batch_size, len(data), dp_clip(ctx) if curve.startswith("dp") else 1.0)
               if choice else NoDefence())
    update = defended_update(model, x, y, defence, client_bn_mode(ctx), seed=ctx.seed)
    config = study_config(ctx, iterations, seeds=seeds, group="registered" if seeds > 1 else "none")
    if not update.bn_stats and config.bn_target == "exact":
        config = config.replace(bn_target="running")     # nothing shared: the running statistics
    order = batch.labels.argsort()
    preview = ReconstructionPreview(batch.images[order], seeds, iterations, live=live)
    config = config.replace(log_every=max(1, iterations // 100))
    result = gradinversion(model, update.without_labels(), config, progress=False, callback=preview)
    evaluation = evaluate_attack(model, result, batch.images, batch.labels, score_seeds=False)
    paired = torch.empty_like(result.consensus)
    paired[torch.as_tensor(evaluation["pairing"])] = result.consensus
    return batch.images[order], paired[order], evaluation


def try_it(ctx: StudyContext):
    """The panel: sliders, a defence menu, the expected time, Run; returns the widget to display
    (headless: a note)."""
    if headless():
        from IPython.display import Markdown
        return Markdown(HEADLESS_NOTE.format("The try-it panel"))
    import ipywidgets as w
    from IPython.display import HTML, display

    from gradinv_lib.errors import GradInvError

    from .explorer import _img
    style = {"description_width": "90px"}
    batch = w.IntSlider(8, min=1, max=8, description="batch size", style=style)
    iterations = w.IntSlider(1200, min=50, max=2400, step=50, description="iterations", style=style)
    seeds = w.IntSlider(4, min=1, max=4, description="seeds", style=style)
    defence = w.Dropdown(options=list(DEFENCE_CHOICES), description="defence", style=style,
                         layout=w.Layout(width="420px"))
    expected, run, out = w.HTML(), w.Button(description="Run", button_style="primary"), w.Output()

    def estimate(_=None):
        expected.value = (f"expected: about {expected_seconds(batch.value, seeds.value, iterations.value):.0f} s "
                          "on a 2-core CPU (nothing is written)")

    def go(_):
        out.clear_output()
        run.disabled = True
        started = time.perf_counter()
        with out:
            try:
                originals, recon, ev = attack_once(ctx, batch.value, iterations.value, seeds.value,
                                                   DEFENCE_CHOICES[defence.value])
            except GradInvError as exc:
                print(f"cannot run this combination: {exc}")
                return
            except KeyboardInterrupt:
                print("interrupted: nothing to show")
                return
            finally:
                run.disabled = False
            m = ev["metrics"]
            display(HTML(f"<p><b>{defence.value}</b>, batch {batch.value}, {iterations.value} iterations, "
                         f"{seeds.value} seed(s), {time.perf_counter() - started:.0f} s: labels recovered "
                         f"{ev['labels'].get('accuracy', 0):.2f}, PSNR {m['psnr']:.1f} dB, SSIM {m['ssim']:.2f}</p>"
                         f"<p>originals</p>{_img(originals)}<p>reconstruction (consensus)</p>{_img(recon)}"))

    for control in (batch, iterations, seeds):
        control.observe(estimate, "value")
    run.on_click(go)
    estimate()
    return w.VBox([w.HBox([batch, iterations]), w.HBox([seeds, defence]), w.HBox([run, expected]), out])
