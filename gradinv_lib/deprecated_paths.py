"""The import paths the README and the notebooks used before the package layout (issue 25): each
still imports, as the module it moved to, with a DeprecationWarning naming the new path. They
stop working in gradinv 0.2. ``python -m`` on an old path runs what it ran before."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {"gradinv_lib.config": "gradinv_lib.attack.config", "gradinv_lib.labels": "gradinv_lib.attack.labels",
         "gradinv_lib.objectives": "gradinv_lib.attack.objectives", "gradinv_lib.client": "gradinv_lib.federated.client",
         "gradinv_lib.update_formats": "gradinv_lib.federated.update_formats",
         "gradinv_lib.sweeps": "gradinv_lib.runtime.sweeps", "gradinv_lib.distributed": "gradinv_lib.runtime.distributed",
         "gradinv_lib.label_multiset_study": "gradinv_lib.studies.label_multiset"}
# what ``python -m OLD ARGS`` runs (the old distributed entry point was ``gradinv invert --distributed``)
RUN_AS_MAIN = {"gradinv_lib.distributed": "import sys; from gradinv_lib.cli.app import main; "
                                          "sys.exit(main(['invert', '--distributed', *sys.argv[1:]]))",
               "gradinv_lib.label_multiset_study": "import runpy; runpy.run_module("
                                                   "'gradinv_lib.studies.label_multiset', run_name='__main__')"}


def _warn(old: str) -> None:
    warnings.warn(f"{old} moved to {MOVED[old]}; the old path stops working in gradinv 0.2",
                  DeprecationWarning, stacklevel=3)


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path (consulted after every real finder) and loads it as the moved module."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        _warn(module.__name__)
        sys.modules[module.__name__] = importlib.import_module(MOVED[module.__name__])   # import yields it

    def get_code(self, name):          # ``python -m OLD``: runpy executes this as __main__
        _warn(name)
        return compile(RUN_AS_MAIN.get(name, f"from {MOVED[name]} import *"), name, "exec")


def install() -> None:
    if not any(isinstance(f, MovedModules) for f in sys.meta_path):
        sys.meta_path.append(MovedModules())
