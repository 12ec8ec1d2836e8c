"""Real Kafka clients from PyPI and Debian against three real Ketch nodes, through the Kafka listener.

One cluster for the module (tests/kafka_clients.py ``kafka_cluster``: 3 nodes, replication factor
3, min.insync.replicas 2). What is shown, per client:
- kafka-python, aiokafka and confluent-kafka (librdkafka) each: create a topic of 3 partitions
  with replication factor 3, find it in the topic list and describe it (3 replicas on nodes 1-3
  per partition); produce with acks=all and idempotence on (each partition's acknowledged offsets
  are exactly 0..n-1: no gap, no duplicate; every stored batch carries a producer id and
  sequence, read back over gRPC); consume in a group from the earliest offset and
  commit; then, after more records, a new consumer of the same group reads exactly the new ones:
  it resumed from the commit (a lost or ignored commit would read the first records again).
- confluent-kafka's transactional producer: ONE producer runs a committed, an aborted and a
  committed transaction (librdkafka speaks EndTxn below v5: transaction version 1, the epoch stays);
  a read_committed consumer reads exactly the committed records, a read_uncommitted one all of
  them; a consume-transform-produce copier (read_committed, offsets sent to the transaction) moves
  the committed records to another topic and the group's offset commits with the transaction.
- kcat: ``-L`` lists three brokers at the Kafka listeners' addresses and the topic's partitions;
  ``-P`` produces keyed records and ``-C -e`` consumes exactly those keys and values.
- ``ketch perf produce|consume --client confluent-kafka`` (the bench's Kafka-client steps) count
  every record sent and read back.
- README.md's compatibility table lists exactly the API versions ApiVersions advertises
  (node/kafka/apis.py ``REGISTRY``).
Quix Streams has its own file (tests/test_kafka_quix.py).
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ketch import Admin, NewTopic
from ketch.cli import main as ketch_main
from node.cluster import LocalCluster
from tests import kafka_clients as kc
from tests.test_bench import check_consume, check_produce, last_json

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # kafka-python's importlib.resources calls

Produce = Callable[[str, str, list[bytes]], list[tuple[int, int]]]
Consume = Callable[[str, str, str, int], list[bytes]]
AdminCalls = Callable[[str, str, int], dict[str, Any]]
CLIENTS: dict[str, tuple[Produce, Consume, AdminCalls]] = {
    "kafka-python": (kc.produce_kafka_python, kc.consume_kafka_python, kc.admin_kafka_python),
    "aiokafka": (kc.produce_aiokafka, kc.consume_aiokafka, kc.admin_aiokafka),
    "confluent-kafka": (kc.produce_confluent, kc.consume_confluent, kc.admin_confluent),
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with kc.kafka_cluster(tmp_path_factory.mktemp("kafka-clients") / "cluster") as c:
        yield c


@pytest.fixture(scope="module")
def bootstrap(cluster: LocalCluster) -> str:
    return kc.kafka_bootstrap(cluster)


def offsets_by_partition(acks: list[tuple[int, int]]) -> dict[int, list[int]]:
    by_partition: dict[int, list[int]] = defaultdict(list)
    for partition, offset in acks:
        by_partition[partition].append(offset)
    return {p: sorted(offsets) for p, offsets in by_partition.items()}


@pytest.mark.parametrize("client", list(CLIENTS))
def test_client_admin_produce_consume_and_resume_from_commit(
    cluster: LocalCluster, bootstrap: str, client: str
) -> None:
    produce, consume, admin = CLIENTS[client]
    topic, group = f"{client}-topic", f"{client}-group"

    described = admin(bootstrap, topic, 3)
    assert described == {"listed": True, "error": 0, "partitions": {p: [1, 2, 3] for p in range(3)}}

    first = kc.values(f"{client}-a", 30)
    acks = produce(bootstrap, topic, first)
    offsets = offsets_by_partition(acks)
    assert len(set(acks)) == len(first)
    assert all(o == list(range(len(o))) for o in offsets.values()), offsets
    stamped = kc.batch_producers(cluster, topic)
    assert stamped and all(pid >= 0 and seq >= 0 for pid, seq in stamped), f"not idempotent: {stamped}"
    assert sorted(consume(bootstrap, topic, group, len(first))) == sorted(first)

    second = kc.values(f"{client}-b", 20)
    more = offsets_by_partition(produce(bootstrap, topic, second))
    assert all(o[0] == len(offsets.get(p, [])) for p, o in more.items()), (offsets, more)
    assert sorted(consume(bootstrap, topic, group, len(second))) == sorted(second), "did not resume from the commit"


def test_kcat_lists_metadata_produces_and_consumes(cluster: LocalCluster, bootstrap: str) -> None:
    topic = "kcat-topic"
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:  # Ketch's own client, over gRPC
        admin.create_topics([NewTopic(topic, 2, 3)])

    metadata = json.loads(kc.kcat(bootstrap, "-L", "-J", "-t", topic))
    assert sorted(b["id"] for b in metadata["brokers"]) == [1, 2, 3]
    assert sorted(b["name"].rsplit("/", 1)[0] for b in metadata["brokers"]) == sorted(bootstrap.split(","))
    (described,) = metadata["topics"]
    assert described["topic"] == topic and "error" not in described
    assert sorted(len(p["replicas"]) for p in described["partitions"]) == [3, 3]

    lines = [f"k{i}:v{i}" for i in range(25)]
    kc.kcat(bootstrap, "-P", "-t", topic, "-K:", "-X", "acks=all", stdin="\n".join(lines) + "\n")
    out = kc.kcat(bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%k:%s\\n")
    assert sorted(out.split()) == sorted(lines)


def test_confluent_transactions_read_committed_and_exactly_once_copy(cluster: LocalCluster, bootstrap: str) -> None:
    source, target = "txn-source", "txn-target"
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        admin.create_topics([NewTopic(source, 1, 3), NewTopic(target, 1, 3)])
    committed, aborted, later = kc.values("committed", 10), kc.values("aborted", 10), kc.values("later", 5)
    kc.produce_transactions(
        bootstrap, source, [(committed, True), (aborted, False), (later, True)], producer_per_transaction=False
    )

    read_committed = {"isolation.level": "read_committed"}
    assert kc.consume_confluent(bootstrap, source, "rc", 15, **read_committed) == committed + later
    uncommitted = kc.consume_confluent(bootstrap, source, "ru", 25, **{"isolation.level": "read_uncommitted"})
    assert uncommitted == committed + aborted + later

    # Offsets 0-9 committed, 10 a marker, 11-20 aborted, 21 a marker, 22-26 committed, 27 a marker: the
    # group's offset, committed in the copier's transaction, is past the last record read (27, or 28
    # once the consumer has fetched past the marker); the target holds each committed record once.
    assert kc.copy_exactly_once(bootstrap, source, target, "copier", 15) in (27, 28)
    copied = kc.consume_confluent(bootstrap, target, "check", 15, **read_committed)
    assert copied == [v.upper() for v in committed + later]


def test_perf_tools_with_confluent_kafka(
    cluster: LocalCluster, bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench/kafka_client.py (``python -m bench --compare-kafka-client``'s confluent-kafka steps): every
    record is acknowledged and read back, and the figures have the Ketch tools' JSON shape."""
    kafka = ["--client=confluent-kafka", f"--bootstrap={bootstrap}", "--topic=perf-ck", "--json"]
    produce = ["--num-records=2000", "--record-size=100", "--acks=all", "--replication-factor=3", "--partitions=2"]
    assert ketch_main(["perf", "produce", *kafka, *produce]) == 0
    out = capsys.readouterr().out
    assert "created topic perf-ck through the Kafka listener" in out
    check_produce(last_json(out), 2000, 100)
    assert ketch_main(["perf", "consume", *kafka]) == 0
    out = capsys.readouterr().out
    assert "reading the 2000 records perf-ck holds" in out
    check_consume(last_json(out), 2000, 100)


def compatibility_table(readme: str) -> dict[str, tuple[int, int]]:
    """README's "Kafka APIs" table: API name -> (min, max) version, from rows ``| Name | key | v0-v9 |``."""
    section = readme.split("### Kafka APIs", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\|\s*(\w+)\s*\|\s*(\d+)\s*\|\s*v(\d+)(?:-v(\d+))?\s*\|", section, re.MULTILINE)
    return {name: (int(lo), int(hi or lo)) for name, _key, lo, hi in rows}


def table_rows(apis: list[Any]) -> list[str]:
    """The table's rows for ``apis`` (node/kafka/context.py ``Api``), by key."""
    rows = []
    for api in sorted(apis, key=lambda a: a.key):
        versions = f"v{api.min_version}" + (f"-v{api.max_version}" if api.max_version != api.min_version else "")
        rows.append(f"| {api.name} | {api.key} | {versions} | `{api.handler.__module__.replace('.', '/')}.py` |")
    return rows


def rewrite_table(readme: str, rows: list[str]) -> str:
    """``readme`` with the "Kafka APIs" table's rows (after its ``|---|`` line) replaced by ``rows``."""
    head, rest = readme.split("### Kafka APIs", 1)
    lines = rest.split("\n")
    start = lines.index("|---|---|---|---|") + 1
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return head + "### Kafka APIs" + "\n".join(lines[:start] + rows + lines[end:])


def test_readme_table_lists_exactly_the_advertised_versions() -> None:
    """``REWRITE=1`` rewrites the table's rows from the registry (review the diff)."""
    from node.kafka.apis import REGISTRY

    path = ROOT / "README.md"
    readme = path.read_text()
    if os.environ.get("REWRITE"):
        readme = rewrite_table(readme, table_rows(list(REGISTRY.by_key.values())))
        path.write_text(readme)
    advertised = {api.name: (api.min_version, api.max_version) for api in REGISTRY.by_key.values()}
    assert compatibility_table(readme) == advertised, "README's Kafka API table is stale: run with REWRITE=1"
