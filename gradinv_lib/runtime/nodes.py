"""Which machine computed a result: each run records its node (host, device, torch threads, the
Slurm job), and a cached result's provenance lists the distinct nodes its rows came from."""

from __future__ import annotations

import os
import socket
import time


def job_threads() -> int:
    """The CPUs this job was given: Slurm's per-task CPUs, else the CPUs Slurm allocated on this
    node, else the cores this process may run on (its affinity mask)."""
    for name in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        if os.environ.get(name, "").isdigit() and int(os.environ[name]) > 0:
            return int(os.environ[name])
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def node_facts(device) -> dict:
    """Host, device (with the GPU's name on CUDA), torch threads and Slurm job id of this process."""
    import torch
    facts = {"host": socket.gethostname(), "device": str(device), "threads": torch.get_num_threads()}
    if torch.device(device).type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(torch.device(device))
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if job:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        facts["slurm_job"] = f"{job}_{task}" if task else job
    return facts


def computed_on(*row_lists) -> list[dict]:
    """The distinct nodes (``row["node"]`` without the Slurm job id) of the rows of ``row_lists``
    (lists of dicts; other values are skipped), in first-seen order."""
    seen: dict = {}
    for rows in row_lists:
        for row in rows if isinstance(rows, list) else ():
            node = row.get("node") if isinstance(row, dict) else None
            if isinstance(node, dict):
                node = {k: v for k, v in node.items() if k != "slurm_job"}
                seen.setdefault(tuple(sorted(node.items())), node)
    return list(seen.values())


def wait_while_parent(parent: int, poll_s: float = 2.0) -> None:
    """Return once this process's parent is no longer ``parent`` (it died: we were re-parented)."""
    while os.getppid() == parent:
        time.sleep(poll_s)
