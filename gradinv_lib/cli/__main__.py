"""``python -m gradinv_lib.cli ARGS`` = ``gradinv ARGS``; the form torchrun launches:
``torchrun --nproc_per_node N -m gradinv_lib.cli invert --distributed ...``."""

import sys

from .app import main

sys.exit(main())
