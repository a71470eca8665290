"""Group consistency across processes: 2 gloo ranks launched by torchrun give the single-process
result for the same G seeds, within float rounding (sums over seeds are taken in another order).

Run as a script under torchrun, this file is also the worker: it attacks the same tiny update
with ``seed_group`` from the environment and rank 0 saves the result.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_classifier

from gradinv_lib.attack.config import InversionConfig
from gradinv_lib.attack.pipeline import gradinversion
from gradinv_lib.errors import InputError
from gradinv_lib.federated.client import simulate_client
from gradinv_lib.runtime.distributed import SeedGroup, backend_for, init_from_env

# 4 seeds, registered consensus from iteration 5, re-registered every 5: lazy and registered
# consensus both cross processes several times.
CONFIG = InversionConfig(iterations=24, seeds=4, group="registered", register_start=0.2,
                         register_every=5, warmup=3, lr=0.05, checkpoint_every=0, log_every=8)
TOLERANCE = 1e-4   # pixels in [0, 1]; measured ~5e-7 (float rounding of the seed sums)


def attack(seed_group=None, config=CONFIG):
    """The same client update on every rank (deterministic on CPU), attacked with ``config``."""
    model = tiny_classifier()
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 16, 16, generator=generator)
    # eval-mode client: this test checks the seed split. With a train-mode client this tiny run
    # amplifies float rounding: in ONE process, vmap and loop seeds (5e-8 apart per gradient)
    # end 0.10 apart after these 24 iterations, so no rounding-level tolerance could hold.
    update = simulate_client(model, images, torch.tensor([3, 7]), bn_mode="eval")
    return gradinversion(model, update.without_labels(), config, device="cpu", progress=False,
                         seed_group=seed_group)


def test_two_gloo_ranks_match_one_process(tmp_path):
    out = tmp_path / "distributed.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", __file__, str(out)],
                          env=env, capture_output=True, text=True, timeout=180)
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    dist = torch.load(out)
    single = attack()
    assert dist["images"].shape == single.images.shape == (4, 2, 3, 16, 16)
    diff = {k: (dist[k] - getattr(single, k)).abs().max().item() for k in ("images", "consensus", "start")}
    print(f"max abs difference {diff}, torchrun wall time {seconds:.1f} s")
    assert diff["start"] == 0.0                       # the same noise draw on every rank
    assert diff["images"] < TOLERANCE and diff["consensus"] < TOLERANCE, diff
    # the run moved far beyond that tolerance: the agreement is not two unchanged noise starts
    assert (single.images[0] - single.start).abs().max() > 100 * TOLERANCE
    for name, values in single.history.items():       # losses summed over both ranks' seeds
        assert torch.allclose(torch.tensor(dist["history"][name]), torch.tensor(values), rtol=1e-4), name


def test_one_rank_group_is_the_plain_loop():
    """world_size 1 runs every collective code path without a process group."""
    config = CONFIG.replace(iterations=8, register_start=0.25, register_every=3)
    plain, grouped = attack(config=config), attack(SeedGroup(0, 1), config=config)
    assert (plain.images - grouped.images).abs().max() < 1e-6
    assert (plain.consensus - grouped.consensus).abs().max() < 1e-6
    assert plain.history["total"] == pytest.approx(grouped.history["total"], rel=1e-6)


def test_seed_slices_cover_every_seed_once():
    for seeds, world in ((4, 2), (7, 3), (8, 8), (5, 1)):
        owned = [range(seeds)[SeedGroup(r, world).owned(seeds)] for r in range(world)]
        assert [s for part in owned for s in part] == list(range(seeds))
        assert max(map(len, owned)) - min(map(len, owned)) <= 1
    with pytest.raises(InputError, match="at least one seed per process"):
        SeedGroup(0, 4).owned(3)


def test_backend_and_environment_errors(monkeypatch):
    assert backend_for("cpu") == "gloo" and backend_for("cuda:1") == "nccl"
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(InputError, match="torchrun"):
        init_from_env("cpu")


if __name__ == "__main__":  # a torchrun worker: python -m torch.distributed.run ... this_file OUT
    group, _ = init_from_env("cpu")
    result = attack(group)
    if group.is_main:
        torch.save({"images": result.images, "consensus": result.consensus, "start": result.start,
                    "history": result.history}, Path(sys.argv[1]))
