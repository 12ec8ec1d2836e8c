"""glibc's malloc keeps freed heap for the next fetch instead of giving it back at once.

Why: a consumer's Fetch answer arrives as a few buffers of up to
``max_partition_fetch_bytes`` (1 MiB) each, alive at once for a moment: gRPC's
message, protobuf's copy, the ``records`` bytes the batches are cut from. glibc
sends a large allocation to ``mmap`` until one is freed, then raises its mmap
threshold to that size and its trim threshold to twice it (~2 MiB), so once
those buffers are freed the heap's top is over the trim threshold and glibc hands
it back to the kernel; the next answer faults every page in again. Measured on
the 2-core machine, 2026-12-04: parsing a 1 MiB answer while three such buffers
were alive faulted 992 pages and took 2,159 us per answer, against 0 pages and
93 us with freed heap kept; ``ketch perf consume`` of 600,000 x 1 KiB took
300,000-370,000 page faults and ~1 s of system CPU (of ~2.5 s), at
150-230 MB/s, and ~13,000 faults with ``MALLOC_TOP_PAD_`` set.

Rules:
- ``keep_freed_heap()`` sets, once per process and on glibc only, ``M_MMAP_THRESHOLD``
  to 32 MiB (the most glibc's own dynamic threshold reaches on 64-bit, so a MiB
  buffer comes from the heap as it would once glibc had adjusted) and
  ``M_TOP_PAD`` to ``TOP_PAD`` (16 MiB): up to 16 MiB of freed heap stays at
  each arena's top for reuse, a resident-memory cost of at most that per arena
  that did large allocations. Both, because setting either freezes glibc's
  dynamic thresholds where they stand: the pad alone, set after ``grpc`` was
  imported, left 1,028 faults per answer (measured, tests/test_malloc.py).
- It does nothing when the process chose for itself: ``MALLOC_TOP_PAD_``,
  ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES`` in
  the environment, or ``KETCH_MALLOC_TOP_PAD`` (bytes; ``0`` leaves glibc's
  defaults alone).
- Who calls it: the consumer, when it is created (``ketch.aio.Consumer``, so
  the sync one too), the component that streams MiB answers; and a node at
  start (node/main.py), which builds those answers and takes MiB produce
  requests. It changes no behaviour, only when freed memory returns to the
  kernel.

The node, measured the same way: serving ``ketch perf consume`` of 200,000 x
1 KiB (195 MB) cost the leader 194,040 page faults and 0.55 s of system CPU
(0.27 s user); with freed heap kept, under ten faults. Consumer and nodes
together, that workload went from 126-144 to 255-293 MB/s.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading

__all__ = ["MMAP_THRESHOLD", "TOP_PAD", "keep_freed_heap"]

TOP_PAD = 16 << 20
MMAP_THRESHOLD = 32 << 20
_M_TOP_PAD = -2  # glibc malloc.h
_M_MMAP_THRESHOLD = -3
_ENVIRONMENT = ("MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
_lock = threading.Lock()
_applied: int | None = None


def _chosen_pad() -> int | None:
    """The pad to set, or None when the environment already decides malloc's trimming."""
    if any(name in os.environ for name in _ENVIRONMENT):
        return None
    raw = os.environ.get("KETCH_MALLOC_TOP_PAD")
    if raw is None:
        return TOP_PAD
    try:
        pad = int(raw)
    except ValueError:
        raise ValueError(f"KETCH_MALLOC_TOP_PAD must be a number of bytes (0: glibc's defaults), not {raw!r}") from None
    return pad if pad > 0 else None


def keep_freed_heap() -> int:
    """Set glibc's ``M_MMAP_THRESHOLD`` and ``M_TOP_PAD`` once per process (see the module docstring); the pad in
    effect from Ketch (0 when it left malloc alone: not glibc, or the environment decided)."""
    global _applied
    with _lock:
        if _applied is None:
            _applied = 0
            pad = _chosen_pad()
            if pad is not None and platform.libc_ver()[0] == "glibc":
                libc = ctypes.CDLL(None)
                if libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(_M_TOP_PAD, pad) == 1:
                    _applied = pad
        return _applied
