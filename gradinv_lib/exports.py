"""Lazy public names of a package (PEP 562): ``from gradinv_lib.attack import gradinversion``
imports the module that defines it on first use, so a package's ``__init__`` imports nothing and
no import cycle can run through it."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, names: dict[str, str]):
    """A module ``__getattr__`` for ``package``: public name -> the submodule that defines it."""
    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value       # looked up once
        return value
    return __getattr__
