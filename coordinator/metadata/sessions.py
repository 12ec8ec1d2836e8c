"""Broker sessions on the active controller: Kafka's ``BrokerHeartbeatManager``.

Sessions are deliberately not replicated: a heartbeat every couple of
seconds from every broker would flood the metadata log with facts nobody
needs after the fact. Only the active controller keeps, in memory, when it
last heard from each broker; what it decides from that (a fence) is a record.

Rules:
- A heartbeat or registration with the current epoch starts or renews the
  broker's session at ``now_ms``.
- ``expired(candidates, now_ms)`` is called from the controller's tick with
  the unfenced brokers. A broker seen for the first time there — every
  broker, on a newly active controller — is not fenced at once (a failover
  never fences the cluster) but must be heard from within ``first_contact_ms``
  of that tick (default: the whole session). A shorter first contact is what
  lets a new controller fence a broker that died or froze together with the
  old one (a combined node) without a whole session more: a live broker finds
  the new controller within a heartbeat attempt or two (node/lifecycle.py).
- A session expires when more than ``timeout_ms`` passed since the broker's
  last contact; the clock is monotonic time supplied by the driver.
- ``clear()`` on resignation: a controller that becomes active again starts
  every clock afresh.
- ``silent(candidates, now_ms, after_ms)``: the candidates not heard from for
  more than ``after_ms`` (shorter than the session): the brokers worth a
  liveness probe (brokers.py ``fence_unreachable``). Being silent decides
  nothing by itself; it only says whom to ask.
"""

from __future__ import annotations

from collections.abc import Iterable


class BrokerSessions:
    def __init__(self, timeout_ms: int, first_contact_ms: int = 0) -> None:
        if timeout_ms <= 0:
            raise ValueError(f"broker session timeout must be > 0 ms, got {timeout_ms}")
        self.timeout_ms = timeout_ms
        # A clock started without a contact starts this far back, so it runs out after first_contact_ms.
        self._head_start = timeout_ms - min(first_contact_ms, timeout_ms) if first_contact_ms > 0 else 0
        self._last: dict[int, int] = {}

    def _since(self, broker_id: int, now_ms: int) -> int:
        return self._last.setdefault(broker_id, now_ms - self._head_start)

    def touch(self, broker_id: int, now_ms: int) -> None:
        self._last[broker_id] = max(now_ms, self._last.get(broker_id, now_ms))

    def remove(self, broker_id: int) -> None:
        self._last.pop(broker_id, None)

    def clear(self) -> None:
        self._last.clear()

    def silent(self, candidates: Iterable[int], now_ms: int, after_ms: int) -> list[int]:
        """Candidates not heard from for more than ``after_ms``, in id order; starts unknown clocks."""
        out = []
        for broker_id in sorted(candidates):
            if now_ms - self._since(broker_id, now_ms) > after_ms:
                out.append(broker_id)
        return out

    def expired(self, candidates: Iterable[int], now_ms: int) -> list[int]:
        """Candidates whose session ran out, in id order; starts unknown clocks."""
        out = []
        for broker_id in sorted(candidates):
            if now_ms - self._since(broker_id, now_ms) > self.timeout_ms:
                out.append(broker_id)
        return out
