"""``python -m bench``: the benchmark suite (bench/run.py); ``python -m bench produce|consume ...`` for one tool."""

import sys

from bench.run import main

sys.exit(main())
