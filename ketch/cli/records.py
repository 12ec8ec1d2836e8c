"""``ketch produce`` and ``ketch consume`` (kafka-console-producer/consumer, rpk).

produce: one record per stdin line (the trailing newline is not part of the
value); with ``--key-separator SEP`` the text before the first SEP is the key.
It waits for every acknowledgement before exiting, and exits 1 on the first
failed send, printing why.

consume: prints each record's value on its own line (``--print-key`` and
``--print-offset`` prefix key and partition/offset, tab-separated; ``--json``
prints one object per record, bytes decoded as UTF-8 with backslash escapes
for anything else). It starts
at the end of each partition unless ``--from-beginning``; ``--partition`` with
``--offset N|earliest|latest`` reads one partition from an exact place. It
exits 0 after ``--max-messages`` records, or after ``--timeout-ms`` without a
new record; otherwise it runs until Ctrl-C.

produce --transactional-id ID: a transactional producer (it fences any older
one with the same id); the lines that arrive in one read of stdin (at most
64 KiB: a piped file in 64 KiB transactions, a terminal one line per
transaction) are sent and committed as one transaction. A failed transaction
is aborted, and the command exits 1 saying why.

consume --isolation-level read_committed: only records of committed
transactions (and non-transactional ones); transaction markers are never printed.

consume --group G: reads as a member of consumer group G (subscribe; the
group's assignor splits the partitions among its members), starting from
the group's committed offsets (``--from-beginning`` only applies where the
group has none). Offsets are committed after each polled batch is printed
and flushed, never before (at least once: a crash between printing and
committing prints those records again next time), so a second run continues
where the first stopped. ``--partition``/``--offset`` do not combine with
``--group`` (``ketch group reset-offsets`` moves a group). ``--timeout-ms``
counts from the moment the group has assigned partitions to this member.
A commit refused because the group rebalanced meanwhile is reported on
stderr and consumption goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import deque
from concurrent.futures import Future
from typing import Any

from ketch.bootstrap import bootstrap_arg, client_config
from ketch.errors import ErrorCode, KetchError

MAX_PENDING = 50_000
READ_SIZE = 1 << 16  # the most one transaction of ``produce --transactional-id`` reads at once


def register(commands: Any) -> None:
    produce = commands.add_parser("produce", help="produce stdin lines as records")
    produce.add_argument("topic")
    produce.add_argument("--key-separator", "-k", help="split each line into KEY SEP VALUE")
    produce.add_argument("--acks", default="all", choices=["all", "-1", "0", "1"], help="default: all")
    produce.add_argument("--compression", default="none", choices=["none", "gzip", "snappy", "lz4", "zstd"])
    produce.add_argument("--partition", "-p", type=int, help="default: by key hash, sticky for no key")
    produce.add_argument("--linger-ms", type=int, default=5)
    produce.add_argument(
        "--enable-idempotence",
        choices=["true", "false"],
        help="store each record once and in order despite retries (default: true unless --acks is 0 or 1)",
    )
    produce.add_argument(
        "--transactional-id",
        help="produce in transactions with this id: each batch of lines read from stdin is one transaction",
    )
    bootstrap_arg(produce)
    produce.set_defaults(handler=produce_lines)

    consume = commands.add_parser("consume", help="print records of a topic")
    consume.add_argument("topic")
    consume.add_argument("--from-beginning", action="store_true", help="start at the earliest offset")
    consume.add_argument("--partition", "-p", type=int, help="read only this partition")
    consume.add_argument("--offset", "-o", help="with --partition: N, earliest or latest")
    consume.add_argument("--max-messages", "-n", type=int, help="exit after this many records")
    consume.add_argument("--timeout-ms", type=int, help="exit when no record arrives for this long")
    consume.add_argument("--print-key", action="store_true")
    consume.add_argument("--print-offset", action="store_true", help="prefix partition and offset")
    consume.add_argument("--key-separator", default="\t", help="between key and value (default: tab)")
    consume.add_argument("--json", action="store_true", help="one JSON object per record")
    consume.add_argument(
        "--group", "-g", help="consume in this consumer group, committing after each batch (a rerun continues)"
    )
    consume.add_argument(
        "--isolation-level",
        default="read_uncommitted",
        choices=["read_uncommitted", "read_committed"],
        help="read_committed: only records of committed transactions (default: read_uncommitted)",
    )
    bootstrap_arg(consume)
    consume.set_defaults(handler=consume_records)


def produce_lines(args: argparse.Namespace) -> int:
    from ketch import Producer

    acks: str | int = "all" if args.acks in ("all", "-1") else int(args.acks)
    compression = None if args.compression == "none" else args.compression
    pending: deque[Future[Any]] = deque()
    idempotence = None if args.enable_idempotence is None else args.enable_idempotence == "true"
    try:
        producer = Producer(
            **client_config(args.bootstrap),
            acks=acks,
            compression_type=compression,
            linger_ms=args.linger_ms,
            enable_idempotence=idempotence,
            transactional_id=args.transactional_id,
        )
    except ValueError as exc:  # Kafka's ConfigException: e.g. --enable-idempotence true --acks 1
        print(f"ketch produce: {exc}", file=sys.stderr)
        return 2
    with producer:
        if args.transactional_id is not None:
            return _produce_transactions(producer, args)
        for raw in sys.stdin.buffer:
            line = raw[:-1] if raw.endswith(b"\n") else raw
            key = None
            if args.key_separator:
                sep = args.key_separator.encode()
                if sep in line:
                    key, line = line.split(sep, 1)
            pending.append(producer.send(args.topic, line, key=key, partition=args.partition))
            while len(pending) > MAX_PENDING or (pending and pending[0].done()):
                pending.popleft().result()
        producer.flush()
        while pending:
            pending.popleft().result()
    return 0


def _split(line: bytes, separator: str | None) -> tuple[bytes | None, bytes]:
    if separator:
        sep = separator.encode()
        if sep in line:
            key, value = line.split(sep, 1)
            return key, value
    return None, line


def _produce_transactions(producer: Any, args: argparse.Namespace) -> int:
    """One transaction per read of stdin: the lines that arrived together are committed together."""
    producer.init_transactions()
    stdin: Any = sys.stdin.buffer  # read1: what one read returns, at most READ_SIZE
    rest = b""
    while True:
        chunk = stdin.read1(READ_SIZE)
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop() if chunk else b""
        if not chunk and lines == [b""]:
            lines = []
        if lines:
            producer.begin_transaction()
            try:
                futures = [
                    producer.send(args.topic, value, key=key, partition=args.partition)
                    for key, value in (_split(line, args.key_separator) for line in lines)
                ]
                producer.commit_transaction()
                for f in futures:
                    f.result()
            except KetchError as exc:
                if exc.code != ErrorCode.PRODUCER_FENCED:
                    with contextlib.suppress(KetchError):
                        producer.abort_transaction()
                print(f"ketch produce: transaction of {len(lines)} line(s) aborted: {exc}", file=sys.stderr)
                return 1
        if not chunk:
            return 0


def _start_offset(value: str) -> int | str:
    if value in ("earliest", "latest"):
        return value
    try:
        offset = int(value)
    except ValueError:
        raise KetchError(
            f"--offset expects N, earliest or latest, got {value!r}", code=ErrorCode.INVALID_REQUEST
        ) from None
    if offset < 0:
        raise KetchError(f"--offset must be >= 0, got {offset}", code=ErrorCode.OFFSET_OUT_OF_RANGE)
    return offset


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", errors="backslashreplace")


def record_json(record: Any) -> dict[str, Any]:
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": _text(record.key),
        "value": _text(record.value),
        "headers": {k: _text(v) for k, v in record.headers},
    }


def consume_records(args: argparse.Namespace) -> int:
    from ketch import Admin, Consumer, TopicPartition

    if args.offset is not None and args.partition is None:
        raise KetchError("--offset needs --partition", code=ErrorCode.INVALID_REQUEST)
    if args.group is not None and args.partition is not None:
        raise KetchError(
            "--group reads what the group assigns, from its committed offsets; leave out --partition and --offset "
            "(ketch group reset-offsets moves a group's offsets)",
            code=ErrorCode.INVALID_REQUEST,
        )
    start = _start_offset(args.offset) if args.offset is not None else None
    with Admin(**client_config(args.bootstrap)) as admin:
        (description,) = admin.describe_topics([args.topic])  # typed error for a missing topic
    partitions = [p.partition for p in description.partitions]
    if args.partition is not None and args.partition not in partitions:
        raise KetchError(
            f"topic {args.topic!r} has partitions {partitions[0]}..{partitions[-1]}; there is no {args.partition}",
            code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        )
    reset = "earliest" if args.from_beginning or start == "earliest" else "latest"
    out = sys.stdout.buffer
    sep = args.key_separator.encode()
    seen = 0
    last = time.monotonic()
    group: dict[str, Any] = {} if args.group is None else {"group_id": args.group, "enable_auto_commit": False}
    group["isolation_level"] = args.isolation_level
    with Consumer(**client_config(args.bootstrap), auto_offset_reset=reset, **group) as consumer:
        if args.group is not None:
            consumer.subscribe([args.topic])
        else:
            chosen = [args.partition] if args.partition is not None else partitions
            tps = [TopicPartition(args.topic, p) for p in chosen]
            consumer.assign(tps)
            if isinstance(start, int):
                consumer.seek(tps[0], start)
        while args.max_messages is None or seen < args.max_messages:
            left = None if args.max_messages is None else args.max_messages - seen
            batch = consumer.poll(timeout_ms=200, max_records=left)
            for records in batch.values():
                for record in records:
                    seen += 1
                    if args.json:
                        out.write(json.dumps(record_json(record)).encode() + b"\n")
                        continue
                    if args.print_offset:
                        out.write(f"{record.partition}\t{record.offset}\t".encode())
                    if args.print_key:
                        out.write((record.key or b"") + sep)
                    out.write((record.value or b"") + b"\n")
            if batch:
                out.flush()
                last = time.monotonic()
                if args.group is not None:
                    _commit(consumer)
            elif args.group is not None and not consumer.assignment():
                last = time.monotonic()  # not a member with partitions yet: the timeout has not started
            elif args.timeout_ms is not None and (time.monotonic() - last) * 1000 >= args.timeout_ms:
                break
    return 0


REBALANCED = (ErrorCode.ILLEGAL_GENERATION, ErrorCode.REBALANCE_IN_PROGRESS, ErrorCode.UNKNOWN_MEMBER_ID)


def _commit(consumer: Any) -> None:
    """Commit what was printed; a rebalance in between is not fatal (the records are read again)."""
    try:
        consumer.commit()
    except KetchError as exc:
        if exc.code not in REBALANCED:
            raise
        print(f"ketch: warning: offsets not committed, the group rebalanced: {exc}", file=sys.stderr)
