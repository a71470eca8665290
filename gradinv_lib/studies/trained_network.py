"""The paper's claims where they apply: a real TRAINED network with BatchNorm (``cifar10_cnn``,
the Keras CIFAR-10 CNN of PyPI cifar-10-model) attacked at its own 32 px on its own data
(foolbox's 20 CIFAR-10 test images), beside its random-init twin: Table 3 (trained vs random,
sec. 4.2: "stronger networks leak more"), Table 4's BN_exact vs BN_approx on real running
statistics (eq. 9), Fig. 8's vulnerable population (sec. 4.3), the quickstart's batch, and how
often the final ReLU hides a true label from eq. 8.

Every table runs on the same batches of distinct labels (5 by default), beside the noise-start
and mean-colour rows, with identification among every real 32 px image on hand
(``profiles.identification_gallery``: 150 images). The setting (``profiles.PROFILES
["quick_cifar10"]``) was chosen by measurement (README, "The trained network").

Quick-profile budget (2 worker processes of one thread; measured on a quiet 2-core machine, a
one-seed run of 200 iterations takes 15 CPU-s at batch 4, 26 at batch 8): Table 3 10 runs,
Table 4 5 more (BN_exact reused from Table 3), Fig. 8 5 (its random batches are Table 3's), the
quickstart one batch of 8, the label measurement ~10 s: ~350 CPU-s.
"""

from __future__ import annotations

import time

import torch

from gradinv_lib.attack.labels import recover_labels
from gradinv_lib.data import sample_batch
from gradinv_lib.errors import MissingAssetError
from gradinv_lib.profiles import TRAINED_NETWORK_PROFILES

from .ablation import ablation_table, strength_table
from .aggregate import mark_directions
from .common import StudyContext, load_results, output_folder, pick, save_results, save_tensors
from .identifiability import claims as identifiability_claims
from .identifiability import iip_study
from .tables import RowSpec, claims_markdown, run_table, summarise

BATCHES = 5
BATCH_SIZE = 4            # 8 is every class the 20 images hold: batches of 8 would barely differ
TWINS = (("cifar10_cnn", "random"), ("cifar10_cnn", "default"))   # weakest first (Table 3's order)
TITLES = {"table3_strength": "Table 3 (trained vs random init, same architecture)",
          "table4_bn": "Table 4 (BN_exact vs BN_approx on real running statistics)",
          "table2_ablation": "Table 2 (the ablation on the trained network; ABLATION = True)"}


def trained_context(ctx: StudyContext) -> StudyContext:
    """A context for the trained-network setting of ``ctx``'s profile (quick -> quick_cifar10),
    writing into ``ctx``'s folder."""
    name = TRAINED_NETWORK_PROFILES.get(ctx.profile_name, ctx.profile_name)
    trained = StudyContext(ctx.notebook, name, seed=ctx.seed, device=ctx.device, output_dir=ctx.out,
                           parameters=ctx.parameters, recompute=ctx.recompute)
    trained.key = ctx.key   # the folder's results are keyed by the notebook's own parameters
    return trained


def _client_forward(model, images01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The client's train-mode forward: (the network's outputs, the final Linear layer's outputs
    before the network's final ReLU, detached)."""
    from gradinv_lib.attack.bn_stats import bn_mode as client_mode
    seen = {}
    handle = model.final_layer.register_forward_hook(lambda m, i, o: seen.__setitem__("z", o.detach()))
    try:
        with client_mode(model, "train"):
            outputs = model(model.normalize(images01))
    finally:
        handle.remove()
    return outputs, seen["z"]


def hidden_labels(tctx: StudyContext, batch_size: int | None = None, trials: int = 50) -> dict:
    """How often eq. 8 cannot see a true label because the final ReLU zeroes its logit (pre-ReLU
    logit <= 0 in the client's train-mode forward), and the min rule's label accuracy, on random
    batches of distinct labels, for the trained network and its random twin."""
    started = time.perf_counter()
    batch_size = int(pick(batch_size, BATCH_SIZE))
    data, rows = tctx.dataset(), []
    for name, weights in TWINS:
        model = tctx.model(name, weights)
        hidden = correct = total = 0
        for t in range(trials):
            batch = sample_batch(data, batch_size, seed=tctx.seed + t)
            outputs, z = _client_forward(model, batch.images.to(tctx.device))
            hidden += int((z.gather(1, batch.labels[:, None].to(z.device)) <= 0).sum())
            loss = torch.nn.functional.cross_entropy(outputs, batch.labels.to(tctx.device))
            (grad,) = torch.autograd.grad(loss, model.final_layer.weight)
            found = recover_labels(grad, batch_size, rule="min").tolist()
            correct += len(set(found) & set(batch.labels.tolist()))
            total += batch_size
        rows.append({"row": f"{name} ({weights})", "weights": model.weights_source, "batch_size": batch_size,
                     "trials": trials, "hidden_fraction": hidden / total, "min_rule_accuracy": correct / total})
    return save_results(tctx, "hidden_labels", rows, {"bn_mode": "train", "trials": trials}, started)


def strength(tctx: StudyContext, batch_size: int | None = None, iterations: int | None = None,
             batches: int | None = None, **executor_options) -> dict:
    """Table 3 on one architecture: the random-init twin, then the trained network (+ R_fidelity,
    BN_exact), each row judged against the one before beyond the spread over batches."""
    return strength_table(tctx, models=TWINS, batch_size=pick(batch_size, BATCH_SIZE), iterations=iterations,
                          objective="fidelity", batches=pick(batches, BATCHES), **executor_options)


def ablation(tctx: StudyContext, batch_size: int | None = None, iterations: int | None = None,
             batches: int | None = None, seeds: int | None = None, **executor_options) -> dict:
    """Table 2's rows on the trained network (L_grad alone, + R_fidelity, + lazy and + registered
    group consistency with ``seeds``, eq. 12) on Table 3's batches: lazy against registered
    consensus on a trained network; the + R_fidelity row is Table 3's trained row (reused)."""
    return ablation_table(tctx, batch_size=pick(batch_size, BATCH_SIZE), iterations=iterations, seeds=seeds,
                          batches=pick(batches, BATCHES), reuse=("table3_strength",), **executor_options)


def bn_variants(tctx: StudyContext, batch_size: int | None = None, iterations: int | None = None,
                batches: int | None = None, executor: str | None = None, **executor_options) -> dict:
    """Table 4's GradInversion rows on the trained network: BN_exact (the batch's statistics)
    against BN_approx (the network's real CIFAR-10 running statistics), same batches; BN_exact's
    runs are Table 3's trained row (reused)."""
    from gradinv_lib import paper_results

    from .runs import objective_configs
    started = time.perf_counter()
    batch_size, batches = int(pick(batch_size, BATCH_SIZE)), int(pick(batches, BATCHES))
    exact = objective_configs(tctx, 1, iterations or tctx.profile.full_method_iterations)["fidelity"]
    rows = {"gradinversion_bn_exact": exact, "gradinversion_bn_approx": exact.replace(bn_target="running")}
    specs = [RowSpec(n, c, info=(("bn_target", c.bn_target),)) for n, c in rows.items()]
    batch_rows, images = run_table(tctx, specs, batch_size, batches, reuse=("table3_strength",),
                                   executor=executor, **executor_options)
    summary = summarise(batch_rows)
    mark_directions(summary, batch_rows, [("gradinversion_bn_exact", "gradinversion_bn_approx")])
    for row in summary:
        paper = paper_results.TABLE4_COMPARISON.get("noise" if row["row"] == "noise start" else row["row"], {})
        row.update({f"paper_{k}": paper[k] for k in ("fft2d", "psnr", "lpips") if k in paper})
    save_tensors(tctx, "table4_bn_images", images)
    settings = {"batch_size": batch_size, "batches": batches, "iterations": exact.iterations,
                "bn_mode": batch_rows[-1].get("bn_mode"), "configs": {n: c.to_dict() for n, c in rows.items()}}
    return save_results(tctx, "table4_bn", summary, settings, started, extra={"batch_rows": batch_rows})


def vulnerable(tctx: StudyContext, batch_size: int | None = None, iterations: int | None = None,
               batches: int | None = None, **executor_options) -> dict:
    """Fig. 8 on the trained network: IIP and pixel identification of batches drawn from the
    vulnerable population (per class, the image with the largest gradient norm: the paper's
    definition, 8 images here) against random batches of the same size: the random batches are
    Table 3's, so their runs are its trained row's (reused)."""
    size = int(pick(batch_size, BATCH_SIZE))
    return iip_study(tctx, batch_sizes=(size,), vulnerable_sizes=(size,), batches_per_size=pick(batches, BATCHES),
                     iterations=iterations, vulnerable_fraction=1.0, reuse=("table3_strength",), **executor_options)


def _hidden_line(out) -> str:
    rows = {r["row"]: r for r in load_results(out, "hidden_labels")["rows"]}
    trained, twin = rows["cifar10_cnn (default)"], rows["cifar10_cnn (random)"]
    return (f"**Labels** ({trained['trials']} batches of {trained['batch_size']}, client BN in train mode): the final "
            f"ReLU hid {100 * trained['hidden_fraction']:.1f}% of the true labels from eq. 8 on the trained network "
            f"(min rule {100 * trained['min_rule_accuracy']:.1f}% correct) and {100 * twin['hidden_fraction']:.1f}% "
            f"on its random twin (min rule {100 * twin['min_rule_accuracy']:.1f}%).")


def claims(out) -> str:
    """Markdown measured from this study's cache: the labels the final ReLU hides, Tables 3 and 4
    on the trained network, Fig. 8's populations and the quickstart's batch (whatever is cached)."""
    from . import quickstart
    tables = [(name, title) for name, title in TITLES.items()
              if name != "table2_ablation" or (output_folder(out) / f"{name}.json").exists()]
    parts = [claims_markdown(out, tables)]
    for text in (lambda: _hidden_line(out), lambda: identifiability_claims(out), lambda: quickstart.claims(out)):
        try:
            parts.append(text())
        except MissingAssetError:
            continue
    return "\n\n".join(parts)
