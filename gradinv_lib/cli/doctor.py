"""``gradinv doctor``: what this installation can run, from where, and a live sanity check
(Lite0's top-1 on the embedded ImageNet images)."""

from __future__ import annotations

import os

import torch

from gradinv_lib.errors import GradInvError
from gradinv_lib.io import provenance


def _probe(fn) -> dict:
    """Run an asset probe; a missing asset becomes ``{"available": False, "reason": ...}``."""
    try:
        return {"available": True, **fn()}
    except GradInvError as exc:
        return {"available": False, "reason": str(exc)}


def _embedded():
    from gradinv_lib.data import embedded_imagenet, foolbox_data_dir
    data = embedded_imagenet(32)
    return {"path": str(foolbox_data_dir()), "images": len(data),
            "distinct_labels": len(data.distinct_labels())}


def _pool():
    from gradinv_lib.data import load_pool, read_manifest
    from gradinv_lib.data.pool import MANIFEST_PATH
    manifest = read_manifest()
    labels = [e["label"] for e in manifest["entries"]]
    return {"path": str(MANIFEST_PATH), "images": len(labels), "distinct_labels": len(set(labels)),
            "pseudo_labelled": sum(bool(e["pseudo"]) for e in manifest["entries"]),
            "labelled_by": manifest.get("model")}


def _weights(name):
    def probe():
        from gradinv_lib.models import describe_weights
        info = describe_weights(name)
        if not info["available"]:
            from gradinv_lib.errors import MissingAssetError
            raise MissingAssetError(info["source"])
        return {"path": info["path"], "source": info["source"]}
    return probe


def _lpips():
    from gradinv_lib.errors import MissingAssetError
    from gradinv_lib.metrics import ALEXNET_FILE, alexnet_cache_path
    path = alexnet_cache_path()
    if not os.path.isfile(path):
        raise MissingAssetError(f"LPIPS unavailable: put {ALEXNET_FILE} in {os.path.dirname(path)}")
    return {"path": path}


def _imagenet():
    from gradinv_lib.data import ImageNetFolder, imagenet_root
    if not (os.environ.get("GRADINV_IMAGENET")):
        from gradinv_lib.errors import MissingAssetError
        raise MissingAssetError("set GRADINV_IMAGENET (or pass --imagenet) to an ImageNet folder "
                                "for the paper profile")
    folder = ImageNetFolder(imagenet_root())
    return {"path": str(folder.root), "layout": folder.layout, "images": len(folder)}


ASSETS = {
    "embedded_imagenet": _embedded,
    "pseudo_label_pool": _pool,
    "efficientnet_lite0_weights": _weights("efficientnet_lite0"),
    "resnet18_weights": _weights("resnet18"),
    "resnet50_weights": _weights("resnet50"),
    "lpips_backbone": _lpips,
    "imagenet_folder": _imagenet,
}


def lite0_embedded_top1() -> float:
    """Fraction of the 20 embedded ImageNet photos that pretrained Lite0 classifies correctly."""
    from gradinv_lib.data import embedded_imagenet
    from gradinv_lib.models import build_model
    model = build_model("efficientnet_lite0")
    data = embedded_imagenet(224)
    with torch.no_grad():
        predicted = model(model.normalize(data.images)).argmax(1)
    return (predicted == data.labels).sum().item() / len(data)


def doctor_report(checks: bool = True) -> dict:
    """Versions, device, every asset's availability and source, and the live checks."""
    report = {
        "versions": provenance(),
        "device": {"cuda": torch.cuda.is_available(),
                   "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]},
        "assets": {name: _probe(fn) for name, fn in ASSETS.items()},
        "checks": {},
    }
    if checks:
        report["checks"]["lite0_embedded_top1"] = _probe(
            lambda: {"value": lite0_embedded_top1()}).get("value")
    return report


def format_report(report: dict) -> str:
    """The report as aligned text lines for a terminal."""
    lines = [f"gradinv {report['versions']['gradinv']}  torch {report['versions']['torch']}  "
             f"device: {'cuda ' + ', '.join(report['device']['gpus']) if report['device']['cuda'] else 'cpu'}"]
    for name, info in report["assets"].items():
        mark = "ok " if info["available"] else "-- "
        detail = info.get("path") or info.get("reason", "")
        extra = ", ".join(f"{k}={v}" for k, v in info.items()
                          if k not in ("available", "path", "reason", "source"))
        lines.append(f"  {mark}{name:28s} {detail}" + (f"  ({extra})" if extra else ""))
    for name, value in report["checks"].items():
        lines.append(f"  check {name}: {value}")
    return "\n".join(lines)
