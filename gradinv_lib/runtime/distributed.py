"""Group consistency across processes (sec. 3.4): the G seeds spread over the ranks of a
``torch.distributed`` job launched by ``torchrun``; only the consensus image is synchronised.

Each rank optimises its own contiguous slice of the seeds; per-seed losses are independent given
the (detached) consensus, so no gradient is exchanged. Per iteration one all-reduce of a
(B, C, H, W) sum gives every rank the lazy consensus; a registration step adds a second (each
rank registers only its own seeds onto the shared coarse mean). The final images are gathered
once. gloo on CPU, NCCL on CUDA.

Launch (``gradinv invert``'s options, every rank the same)::

    torchrun --standalone --nproc_per_node 2 -m gradinv_lib.cli invert --distributed --seeds 8 --out runs/dist

Departure from one process: sums over seeds are taken in another order, so results agree with a
single process to float rounding (tests/test_distributed.py measures it), not bit for bit.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
from torch import Tensor

from gradinv_lib.errors import InputError

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def backend_for(device: str | torch.device) -> str:
    """The collective backend for a device: NCCL for CUDA, gloo otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@dataclass(frozen=True)
class SeedGroup:
    """This rank's share of the G seeds and the collectives the inversion loop needs
    (``inversion.run_inversion(seed_group=...)``). ``world_size == 1`` needs no process group.
    """

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the results."""
        return self.rank == 0

    def owned(self, seeds: int) -> slice:
        """The contiguous slice of ``seeds`` this rank optimises (sizes differ by at most one)."""
        if seeds < self.world_size:
            raise InputError(f"seeds: expected at least one seed per process ({self.world_size} "
                             f"processes), found {seeds}; use --seeds >= {self.world_size} or fewer processes")
        base, extra = divmod(seeds, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def sum(self, tensor: Tensor) -> Tensor:
        """Element-wise sum of ``tensor`` over ranks (a new tensor; ``tensor`` is unchanged)."""
        total = tensor.detach().clone()
        if self.world_size > 1:
            torch.distributed.all_reduce(total)
        return total

    def gather(self, local: Tensor, seeds: int) -> Tensor:
        """(G, ...) all seeds from every rank's (G_local, ...) slice: each rank writes its slice
        into zeros and the stacks are summed (exact: the other ranks add zeros; any split works).
        """
        full = local.new_zeros((seeds, *local.shape[1:]))
        full[self.owned(seeds)] = local.detach()
        return self.sum(full)


def init_from_env(device: str | None = None) -> tuple[SeedGroup, str]:
    """Join the process group ``torchrun`` describes in the environment; returns this rank's
    :class:`SeedGroup` and device (``cuda:<LOCAL_RANK>`` when CUDA is used, else ``cpu``).
    ``device`` None: CUDA when available."""
    missing = [v for v in TORCHRUN_VARIABLES if v not in os.environ]
    if missing:
        raise InputError(f"distributed run: expected torchrun's environment ({', '.join(TORCHRUN_VARIABLES)}), "
                         f"found no {', '.join(missing)}; launch with "
                         "`torchrun --nproc_per_node N -m gradinv_lib.cli invert --distributed ...`")
    rank, world, local = (int(os.environ[v]) for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device: expected a device this machine has, found {device!r} but CUDA "
                             "is not available; use --device cpu")
        device = f"cuda:{local % torch.cuda.device_count()}"
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend_for(device), rank=rank, world_size=world,
                                             **({"device_id": torch.device(device)}
                                                if device.startswith("cuda") else {}))
        atexit.register(_leave)
    return SeedGroup(rank, world), device


def _leave() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
