"""``python -m bench``: the benchmark suite (bench/run.py); ``python -m bench produce|consume|group-load ...``
for one tool."""

import sys

from bench.run import main

sys.exit(main())
