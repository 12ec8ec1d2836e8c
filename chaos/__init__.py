"""Ketch's chaos suite: a real cluster, a workload, faults, and an offline history check.

Layout (each module's docstring states its rules):
- ``checker.py`` — pure: a recorded history in, anomalies and figures out;
- ``history.py`` — records every operation as a JSON line;
- ``cluster.py`` / ``proxy.py`` — node processes on loopback, wired through a
  fault-injecting TCP proxy; optional tmpfs data dirs and libfaketime;
- ``workload.py`` — producers of unique values and consumers (asyncio client);
- ``faults.py`` — the fault injectors and the scenario list, each healed in ``finally``;
- ``runner.py`` — one run end to end; ``report.py`` — table, JSON and HTML;
- ``txn_checker.py`` / ``txn_workload.py`` / ``txn_faults.py`` / ``txn_runner.py`` — the
  transactional workload (``--workload transactional``), its checker, faults and run;
  ``grpc_proxy.py`` — the gRPC proxy that delays and duplicates EndTxn and markers;
- ``__main__.py`` — ``python -m chaos list | run | check``.
"""
