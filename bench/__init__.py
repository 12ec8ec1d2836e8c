"""Benchmarks: ``ketch perf produce|consume|suite`` and ``python -m bench``.

- bench/produce.py: producer records/s, MB/s and send-to-ack latency
  percentiles (kafka-producer-perf-test);
- bench/consume.py: consumer records/s and MB/s (kafka-consumer-perf-test);
- bench/run.py: the suite: one local node, both tools, one table;
- bench/cli.py: the command-line options; bench/stats.py: counters and output lines.
- bench/compare.py: Ketch RF 3 beside NATS JetStream R3 (bench/jetstream.py), one table with ratios;
- bench/memory.py: each node's RSS idle, with six and with 1,000 partitions.
"""
