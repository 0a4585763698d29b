"""``python -m convlab ARGS``: the ``convlab`` command (:func:`convlab.cli.main`), also
how the benchmark starts a fresh process of itself (``bench --cold-cache``)."""

import sys

from .cli import main

sys.exit(main())
