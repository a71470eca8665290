"""Structure of `gradinv bench` at tiny sizes (a smoke test: no timing is asserted), and the
arithmetic of its registration share and paper projection."""

from __future__ import annotations

import math

import pytest
from threads import one_thread  # noqa: F401  (a fixture)

from gradinv_lib.attack.config import InversionConfig
from gradinv_lib.bench.report import format_bench, paper_projection, speed_targets
from gradinv_lib.bench.speed import BenchCase, registration_share, run_bench
from gradinv_lib.cli.app import COMMANDS, build_parser


@pytest.fixture(scope="module")
def report():
    cases = [BenchCase("resnet18_cifar", 16, repeats=1), BenchCase("efficientnet_lite0", 32, repeats=1,
                                                                   batched=False)]
    return run_bench(cases=cases, batch_size=2, seeds=2, label_batch=4,
                     label_models=["efficientnet_lite0"])


def test_every_measurement_is_there_and_positive(report):
    assert [c["model"] for c in report["cases"]] == ["resnet18_cifar", "efficientnet_lite0"]
    for case in report["cases"]:
        for key in ("train_ms", "bare_ms", "loop_ms", "loop_reference_ms", "loop_dense_ms", "loop_gflop"):
            assert case[key] > 0 and math.isfinite(case[key]), key
        assert case["loop_over_bare"] == pytest.approx(case["loop_ms"] / case["bare_ms"])
        assert case["loop_over_train"] == pytest.approx(case["loop_ms"] / case["train_ms"])
        assert case["loop_peak_mib"] >= 0 and case["memory_method"]
    batched = report["cases"][0]
    assert batched["seeds"] == 2 and batched["batched_best_mode"] in ("vmap", "loop")
    assert batched["batched_dense_ms_per_seed"] > 0
    best = batched[f"batched_{batched['batched_best_mode']}_ms_per_seed"]
    assert batched["batched_over_sequential"] == pytest.approx(best / batched["sequential_ms_per_seed"])
    assert batched["registration_calls"] == 150 and 0 <= batched["registration_share"] < 1
    assert "seeds" not in report["cases"][1]
    assert report["label_recovery"][0]["batch_size"] == 4 and report["label_recovery"][0]["ms"] > 0
    assert "random" in report["settings"]["weights"]
    assert report["paper_projection"]["available"] is False  # no ResNet-50 case ran
    assert isinstance(report["torch_compile"]["double_backward"], bool)


def test_text_report_and_targets(report):
    text = format_bench(report)
    assert "resnet18_cifar" in text and "loop/bare" in text and "reg share" in text
    targets = speed_targets(report)
    assert set(targets) == {"loop_le_1.10_bare", "loop_le_4_train", "registration_le_5pct",
                            "batched_le_sequential"}
    assert all(isinstance(v, bool) for v in targets.values())


def test_registration_share_at_the_paper_schedule():
    # 20K iterations, registration from 5K, every 100: iterations 5000, 5100, ..., 19900.
    share = registration_share(registration_s=2.0, iteration_s=1.0, config=InversionConfig())
    assert share["registration_calls"] == 150
    assert share["registration_share"] == pytest.approx(300 / (20_000 + 300))


def test_paper_projection_measured_or_extrapolated():
    one_seed = {"model": "resnet50", "resolution": 224, "loop_ms": 2000.0, "loop_gflop": 100.0}
    p = paper_projection([one_seed], "cpu")
    assert p["seconds_per_iteration"] == pytest.approx(16.0) and "extrapolated" in p["how"]
    assert p["hours_for_all_iterations"] == pytest.approx(16.0 * 20_000 / 3600)
    assert p["tflop_total"] == pytest.approx(100.0 * 8 * 20_000 / 1e3)
    assert p["hours_at_assumed_gpu_tflops"]["10"] == pytest.approx(16_000 / 10 / 3600)
    batched = {**one_seed, "batched_vmap_ms_per_seed": 1500.0, "batched_loop_ms_per_seed": 1800.0}
    assert paper_projection([batched], "cuda")["seconds_per_iteration"] == pytest.approx(12.0)


def test_cli_registers_bench():
    assert "bench" in COMMANDS
    args = build_parser().parse_args(["bench", "--json", "--quick", "--device", "cpu"])
    assert args.json and args.quick and args.device == "cpu"


# ----------------------------------------------------------------------------- the loop's profile
def test_loop_profile_names_every_part_and_measures_each_variant(tiny, one_thread):
    """bench_profile at a tiny size: the breakdown holds the client step, the backward, each term
    and Adam; every ablation variant was timed; the Adam variants reach (nearly) the same images."""
    import torch

    from gradinv_lib.bench.profile import format_profile, profile_loop
    from gradinv_lib.federated.client import simulate_client

    images, labels = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([1, 3])
    update = simulate_client(tiny, images, labels)
    config = InversionConfig(seeds=2, group="registered")
    report = profile_loop(tiny, update, labels, (3, 16, 16), config, "cpu", steps=2, warmup=1, repeats=1)
    parts = report["parts"]
    for name in ("client step (forward, create_graph gradients)", "backward (double backward and the terms')",
                 "term grad", "term tv", "term bn", "term group", "Adam", "Langevin noise"):
        assert name in parts and parts[name]["host_ms"] > 0, name
    assert parts["client step (forward, create_graph gradients)"]["ops"] > parts["Adam"]["ops"] > 0
    assert set(report["variants_ms"]) >= {"loop", "no BN prior", "no TV, l2", "no Langevin noise",
                                          "Adam foreach", "no group term"}
    assert all(v > 0 for v in report["variants_ms"].values())
    assert 0 <= report["registration"]["registration_share"] < 1
    adam = report["adam"]
    for name in ("foreach", "fused"):
        if adam[name]["available"]:
            assert adam[name]["max_abs_diff"] < 1e-4, (name, adam[name])
    assert f"Adam after {adam['steps']} steps" in format_profile(report) and adam["steps"] == 3


def test_bare_ratio_is_profiled_with_one_seed(tiny, one_thread):
    import torch

    from gradinv_lib.bench.profile import profile_loop
    from gradinv_lib.federated.client import simulate_client

    images, labels = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([1, 3])
    report = profile_loop(tiny, simulate_client(tiny, images, labels), labels, (3, 16, 16),
                          InversionConfig(seeds=1, group="none"), "cpu", steps=1, warmup=1, repeats=1)
    assert report["registration"] is None and report["loop_over_bare"] > 0
    assert report["loop_over_bare"] == pytest.approx(
        report["variants_ms"]["loop"] / report["variants_ms"]["bare double backward"])
