"""``python -m ketch`` is the ``ketch`` command."""

import sys

from ketch.cli import main

sys.exit(main())
