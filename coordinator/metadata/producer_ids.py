"""Producer id blocks: Kafka's ``ProducerIdControlManager`` (KIP-730).

Idempotent producers get their id from a broker (InitProducerId); brokers get
ids from the controller in blocks of ``PRODUCER_ID_BLOCK_SIZE``.

Rules:
- ``allocate(image, broker_id, broker_epoch)`` checks the broker like every
  broker command (unknown id → BROKER_ID_NOT_REGISTERED, another epoch →
  STALE_BROKER_EPOCH; a fenced but current registration may allocate) and
  returns one ``ProducerIdsRecord`` whose ``next_producer_id`` is the image's
  ``next_producer_id`` + the block size. The block handed out is
  ``[image.next_producer_id, record.next_producer_id)``.
- Replay (delta.py) sets the image's ``next_producer_id`` to the record's; a
  record that does not move it forward is a replay error. Every id below
  ``next_producer_id`` is taken.
- Snapshots carry ``next_producer_id`` as one ProducerIdsRecord (when it is
  above 0), so a controller restored from a snapshot, or a standby that
  becomes active, hands out only ids above every block ever committed.

Invariant: the blocks of any sequence of committed allocations are disjoint
and consecutive, across controller failover, because the next block is
computed from the replayed image and the active controller replays its own
records before the next command runs (controller.py). An allocation whose
entry is proposed but never committed may be handed out again; the broker
only uses a block after the controller answered, i.e. after it committed.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.metadata import records as rec
from coordinator.metadata.brokers import current_registration
from coordinator.metadata.image import MetadataImage
from coordinator.metadata.results import ControllerResult

# Kafka's ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE.
PRODUCER_ID_BLOCK_SIZE = 1000


@dataclass(frozen=True)
class ProducerIdsBlock:
    """The ids ``[first, first + size)``, given to ``broker_id``."""

    broker_id: int
    first: int
    size: int

    @property
    def next_block_first(self) -> int:
        return self.first + self.size


def allocate(image: MetadataImage, broker_id: int, broker_epoch: int) -> ControllerResult[ProducerIdsBlock]:
    current_registration(image, broker_id, broker_epoch)
    first = image.next_producer_id
    record = rec.producer_ids(broker_id, broker_epoch, first + PRODUCER_ID_BLOCK_SIZE)
    return ControllerResult([record], ProducerIdsBlock(broker_id, first, PRODUCER_ID_BLOCK_SIZE))
