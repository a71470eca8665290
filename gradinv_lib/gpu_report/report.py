"""What ``gradinv gpu-report`` leaves behind: ``report.json`` (plan, calls, every stage's state and
summary, provenance), ``report.md`` (the same as text), and, for a device whose files come back
only from one folder and in few files, the whole output packed into at most 8 files."""

from __future__ import annotations

import io
import json
import math
import tarfile
import warnings
from pathlib import Path

from gradinv_lib.io import atomic_write, write_json_atomic

PART_BYTES = 15 * 2**20   # under a 16 MiB per-file limit
MAX_FILES = 8             # files a device returns from $OUT
RESULTS, STATE = "gpu_results.tar.gz", "gpu_state.tar"


def write_report(out: Path, plan: dict | None, calls: list[dict], states: dict, provenance: dict) -> dict:
    """report.json and report.md in ``out``; returns the report."""
    report = {"complete": bool(plan) and all(states.get(e["name"], {}).get("status") == "done"
                                             for e in plan["entries"] if e["status"] == "planned"),
              "calls": calls, "plan": None if plan is None else {
                  k: plan[k] for k in ("created", "plan_minutes", "available_s", "entries", "probes")},
              "stages": states, "provenance": provenance}
    write_json_atomic(out / "report.json", report)
    atomic_write(out / "report.md", lambda f: f.write(format_report(report).encode()))
    return report


def format_report(report: dict) -> str:
    """The report as Markdown: calls, then per stage its iterations, time and scores."""
    p = report["provenance"]
    lines = ["# gradinv gpu-report", "",
             f"Device {p['device']} ({p.get('gpu', 'no GPU')}), torch {p['torch']}, Python {p['python']}; "
             f"complete: {'yes' if report['complete'] else 'no'}.", ""]
    for c in report["calls"]:
        lines.append(f"- call {c['call']}: {c['minutes']:.2f} min given, {c.get('wall_s', 0):.0f} s used, "
                     f"stopped: {c.get('stopped') or 'no'}")
    lines += ["", "| stage | status | iterations | wall s | PSNR (noise, mean colour) | SSIM (noise, mean colour) | identified (noise) |",
              "|---|---|---|---|---|---|---|"]
    entries = {e["name"]: e for e in (report["plan"] or {}).get("entries", [])}
    for name, entry in entries.items():
        state = report["stages"].get(name, {})
        status = state.get("status", entry["status"])
        done = f"{state.get('iterations_done', 0)}/{entry.get('iterations', '-')}" if "iterations" in entry else "-"
        cells = ["-", "-", "-"]
        summary = state.get("summary") or {}
        if "metrics" in summary:
            m = summary["metrics"]
            cells = [f"{_fmt(m['reconstruction'].get(k))} ({_fmt(m.get('noise start', {}).get(k))}, "
                     f"{_fmt(m.get('mean colour', {}).get(k))})" for k in ("psnr", "ssim")]
            cells.append(f"{summary['identified']['reconstruction']}/{summary['batch']} "
                         f"({summary['identified']['noise start']}) of {summary['gallery_size']}")
        elif summary:
            cells = [f"loop/bare {_fmt(summary.get('loop_over_bare'))}", "-", "-"]
        reason = state.get("reason") or entry.get("reason") or ""
        lines.append(f"| {name} | {status}{' (' + reason + ')' if reason else ''} | {done} | "
                     f"{state.get('wall_s', 0):.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def export(out: Path, to: Path) -> list[Path]:
    """Pack ``out`` into ``to``: every file but tensors (``*.pt``) into gpu_results.tar.gz, the
    tensors (the checkpoints a later call resumes from, those of finished stages left out, and
    each result's tensors.pt) into gpu_state.tar in parts of 15 MiB;
    paths are kept relative to the folder above ``out``. Unpack in that folder with
    ``tar -xzf gpu_results.tar.gz; cat gpu_state.tar.part* | tar -x``."""
    to.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
    written = [_tar(to / RESULTS, [f for f in files if f.suffix != ".pt"], out.parent, "w:gz")]
    for old in to.glob(STATE + ".part*"):
        old.unlink()
    tensors = [f for f in files if f.suffix == ".pt" and not _finished_checkpoint(f)]
    if tensors:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for f in tensors:
                tar.add(f, arcname=str(f.relative_to(out.parent)))
        data = buffer.getvalue()
        if 1 + math.ceil(len(data) / PART_BYTES) > MAX_FILES:
            warnings.warn(f"export: the tensors take {len(data) / 2**20:.0f} MiB, more than the {MAX_FILES - 1} "
                          f"parts of {PART_BYTES // 2**20} MiB a device returns beside the results")
        for i in range(0, len(data), PART_BYTES):
            part = to / f"{STATE}.part{i // PART_BYTES:02d}"
            written.append(atomic_write(part, lambda f, chunk=data[i:i + PART_BYTES]: f.write(chunk)))
    return written


def _finished_checkpoint(path: Path) -> bool:
    """A checkpoint of a stage that is done: nothing will resume from it."""
    state = path.parent.parent / "state.json"
    return path.parent.name == "checkpoint" and read_json(state, {}).get("status") == "done"


def _tar(path: Path, files: list[Path], root: Path, mode: str) -> Path:
    def write(handle):
        with tarfile.open(fileobj=handle, mode=mode) as tar:
            for f in files:
                tar.add(f, arcname=str(f.relative_to(root)))
    return atomic_write(path, write)


def read_json(path: Path, default):
    return json.loads(path.read_text()) if path.exists() else default
