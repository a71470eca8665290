"""The wheels a GPU machine with no package registry needs to run gradinv (``make wheelhouse``):
the project itself and its runtime dependencies, followed through their own requirements, less
torch and torchvision (preinstalled), the notebook tools (``--skip``) and what the machine's image
already holds (``--present``), at the versions installed here, for the machine's Python.

Install there with ``python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir
--target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site`` (README, 'On a GPU').
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PRESENT = Path(__file__).with_name("gpu_image_packages.txt")
NEVER = ("torch", "torchvision", "triton")   # and nvidia-*: the machine's own CUDA build
NOTEBOOK_TOOLS = ("jupyterlab", "ipywidgets", "papermill", "ipykernel")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")


def project_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """The project's runtime dependencies, as pyproject.toml declares them now."""
    return [Requirement(r) for r in tomllib.loads(pyproject.read_text())["project"]["dependencies"]]


def closure(requirements: list[Requirement], stop: set[str]) -> dict[str, str]:
    """Canonical name -> installed version of every requirement and of theirs, recursively
    (markers evaluated here, extras not followed), not entering names in ``stop``."""
    found: dict[str, str] = {}
    todo = list(requirements)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in found or name in stop or name.startswith("nvidia-"):
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"wheelhouse: {name} is required but not installed here; run make install first") from None
        todo.extend(Requirement(r) for r in (metadata.requires(name) or []))
    return found


def present_names(path: Path = PRESENT) -> set[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return {canonicalize_name(line) for line in lines if line and not line.startswith("#")}


def without_dependencies() -> dict[str, str]:
    """Assets installed with ``--no-deps`` (their declared dependencies are not needed):
    canonical name -> pinned version."""
    from gradinv_lib.models.cifar10_cnn import PIP as CIFAR10_CNN  # the trained CNN's Keras file
    pins = [Requirement(CIFAR10_CNN)]
    return {canonicalize_name(r.name): str(r.specifier).lstrip("=") for r in pins}


def needed(skip=NOTEBOOK_TOOLS, present: Path | None = PRESENT) -> dict[str, str]:
    """The dependencies to ship: the closure less ``skip`` and the names in ``present``, and
    the assets installed without their dependencies."""
    stop = {canonicalize_name(n) for n in (*NEVER, *skip)}
    found = {**closure(project_requirements(), stop | set(without_dependencies())), **without_dependencies()}
    there = present_names(present) if present else set()
    return {name: version for name, version in sorted(found.items()) if name not in there}


def build(out: Path, python_version: str, packages: dict[str, str]) -> list[Path]:
    """Download each package's wheel for ``python_version`` on x86-64 Linux (building it here
    when it has only a source distribution), and build the project's own wheel, into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    for name, version in packages.items():
        spec = f"{name}=={version}"
        got = subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version",
                              python_version, "--implementation", "cp", *platforms, "-d", str(out), spec],
                             capture_output=True, text=True)
        if got.returncode != 0:  # no wheel on the registry: a pure-Python source build is portable
            subprocess.run([*pip, "wheel", "--no-deps", "-w", str(out), spec], check=True)
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(out), str(ROOT)], check=True)
    return sorted(out.glob("*.whl"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradinv_lib.gpu_report.wheelhouse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / ".whl"), help="wheel folder (default: .whl, git-ignored)")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (3.12 on the H100/H200 image)")
    parser.add_argument("--skip", default=",".join(NOTEBOOK_TOOLS), help="dependencies left out with "
                        "theirs (comma-separated; default: the notebook tools, which gpu-report does not use)")
    parser.add_argument("--all", action="store_true", help="also ship what the GPU image already holds")
    args = parser.parse_args(argv)
    packages = needed(tuple(filter(None, args.skip.split(","))), None if args.all else PRESENT)
    wheels = build(Path(args.out), args.python_version, packages)
    size = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"{len(wheels)} wheels, {size:.1f} MiB in {args.out}: " + ", ".join(w.name for w in wheels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
