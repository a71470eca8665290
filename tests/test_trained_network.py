"""The trained-network study (notebook 07) at a tiny budget: its gallery holds every real 32 px
image on hand, the final ReLU's hidden labels are measured, and Tables 3-4 and Fig. 8 come out
with their reference rows, the trained row shared between Tables 3 and 4."""

import pytest
import torch

from gradinv_lib.studies import StudyContext
from gradinv_lib.studies import trained_network as study
from gradinv_lib.studies.runs import identification, pool_gallery


@pytest.fixture(scope="module")
def tctx(tmp_path_factory):
    ctx = StudyContext("07_trained_network", "quick", output_dir=tmp_path_factory.mktemp("t07"))
    return study.trained_context(ctx)


def test_context_attacks_the_trained_cifar10_network(tctx):
    assert tctx.profile.name == "quick_cifar10"
    model = tctx.model()
    assert "cifar-10-model" in model.weights_source and model.num_classes == 10
    assert len(tctx.dataset()) == 20


def test_gallery_is_every_real_32px_image_and_identifies_originals(tctx):
    gallery = pool_gallery(tctx, 32)
    ids = gallery["data"].ids
    assert len(ids) == 150 and sum(i.startswith("cifar100_") for i in ids) == 20
    data = tctx.dataset()
    hits = identification(tctx, data.ids[:4], data.images[:4])
    assert hits["pixel_nn_hit"] == 1.0
    flat = data.images[:4].mean(dim=(-2, -1), keepdim=True).expand(4, 3, 32, 32)
    assert identification(tctx, data.ids[:4], flat)["pixel_nn_hit"] < 1.0


def test_final_relu_hides_labels_of_the_random_twin_more_than_the_trained(tctx):
    rows = {r["row"]: r for r in study.hidden_labels(tctx, batch_size=4, trials=6)["rows"]}
    trained, random = rows["cifar10_cnn (default)"], rows["cifar10_cnn (random)"]
    assert trained["hidden_fraction"] < random["hidden_fraction"]
    assert trained["min_rule_accuracy"] > random["min_rule_accuracy"]


def test_tables_run_with_references_and_share_the_trained_row(tctx):
    table3 = study.strength(tctx, batch_size=2, iterations=3, batches=1, executor="local")
    names = [r["row"] for r in table3["rows"]]
    assert names[:2] == ["noise start", "mean colour"]
    assert "cifar10_cnn (random)" in names and "cifar10_cnn (default)" in names
    trained = next(r for r in table3["rows"] if r["row"] == "cifar10_cnn (default)")
    assert trained.get("direction_text")          # judged against the random twin
    table4 = study.bn_variants(tctx, batch_size=2, iterations=3, batches=1, executor="local")
    rows = {r["row"]: r for r in table4["rows"]}
    assert rows["gradinversion_bn_exact"]["reused"] == 1      # Table 3's trained runs, not recomputed
    assert rows["gradinversion_bn_approx"]["reused"] == 0
    assert rows["gradinversion_bn_exact"].get("direction_text")
    assert "Table 3" in study.claims(tctx.out) and "Table 4" in study.claims(tctx.out)


def test_vulnerable_population_is_one_image_per_class(tctx):
    record = study.vulnerable(tctx, batch_size=2, iterations=3, batches=1, executor="local")
    assert record["settings"]["vulnerable_fraction"] == 1.0
    populations = {r["population"] for r in record["rows"]}
    assert populations == {"random", "vulnerable"}
    assert torch.tensor([r["batch_size"] for r in record["rows"]]).eq(2).all()
    # the random batches are Table 3's (same seeds, same config): its trained runs are reused, the
    # reference rows scored again, the vulnerable batches attacked
    rows = {(r["population"], r["row"]): r for r in record["rows"]}
    assert rows[("random", "reconstruction")]["reused"] == 1
    assert rows[("vulnerable", "reconstruction")]["reused"] == 0
    runs = {(r["population"], r["row"]): r for r in record["batch_rows"]}
    assert runs[("random", "noise start")]["psnr"] > 0 and runs[("random", "mean colour")]["psnr"] > 0
    table3 = {r["row"]: r for r in study.load_results(tctx.out, "table3_strength")["batch_rows"]}
    assert runs[("random", "reconstruction")]["psnr"] == table3["cifar10_cnn (default)"]["psnr"]


def test_ablation_rows_reuse_table3_and_add_the_group_rows(tctx):
    record = study.ablation(tctx, batch_size=2, iterations=3, batches=1, seeds=2, executor="local")
    rows = {r["row"]: r for r in record["rows"]}
    assert {"grad", "fidelity", "group_lazy", "group_registered"} <= set(rows)
    assert rows["fidelity"]["reused"] == 1 and rows["group_registered"]["reused"] == 0
    assert "Table 2" in study.claims(tctx.out)
