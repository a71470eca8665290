"""The ``gradinv`` command line (``app``): one module per command that needs more than a few
lines (``invert``, ``doctor``, ``reproduce``), the options they share (``setup``); ``python -m
gradinv_lib.cli`` is ``gradinv``. Other packages add their commands (``defences.cli``,
``course.cli``, ``gpu_report.cli``)."""
