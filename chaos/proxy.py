"""A fault-injecting TCP proxy: one listening port per directed link, on its own thread.

Why a proxy: nodes find each other by two addresses only — the controller voters
(``--controller-quorum-voters``, used for Raft and broker heartbeats) and the
advertised listener in the metadata (used by followers to fetch from the leader,
and by clients). The harness gives each node its own voters string whose peers
are proxy ports of the links ``i→j``, and advertises for each node ``j`` an inbound
proxy port that carries follower fetches to ``j``. Clients of the workload dial the
real ports (chaos/workload.py translates advertised proxy ports back), so a
partition cuts nodes off from each other while clients can still reach them.

Rules:
- A link is open or blocked. Blocked is a blackhole, not a reset: connections stay
  up, bytes already read are held and no more are read (TCP back-pressure does the
  rest), new connections are accepted but carry nothing. Healing delivers what was
  held, as TCP retransmission would.
- A connection to a target that is down is closed at once (the dialer sees a
  refused connection, as without the proxy).
- The proxy's event loop runs on its own daemon thread so the workload's loop can
  never delay node-to-node traffic; ``block``/``heal`` only flip flags.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field


@dataclass
class Link:
    name: str
    port: int
    target: int
    blocked: bool = False
    conns: set[asyncio.StreamWriter] = field(default_factory=set)


class Proxy:
    def __init__(self) -> None:
        self.links: dict[str, Link] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxy", daemon=True)
        self._servers: list[asyncio.Server] = []

    def add(self, name: str, port: int, target: int) -> Link:
        link = self.links[name] = Link(name, port, target)
        return link

    def start(self) -> None:
        self._thread.start()
        for link in self.links.values():
            server = asyncio.run_coroutine_threadsafe(self._serve(link), self._loop).result(10)
            self._servers.append(server)

    async def _serve(self, link: Link) -> asyncio.Server:
        return await asyncio.start_server(lambda r, w: self._handle(link, r, w), "127.0.0.1", link.port)

    async def _handle(self, link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", link.target)
        except OSError:
            writer.close()
            return
        link.conns.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(link, reader, up_writer), self._pipe(link, up_reader, writer))
        finally:
            for w in (writer, up_writer):
                link.conns.discard(w)
                w.close()

    async def _pipe(self, link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                while link.blocked:
                    await asyncio.sleep(0.05)
                data = await reader.read(65536)
                if not data:
                    break
                while link.blocked:
                    await asyncio.sleep(0.05)
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

    def block(self, *names: str) -> None:
        for name in names:
            self.links[name].blocked = True

    def heal(self, *names: str) -> None:
        for name in names or tuple(self.links):
            self.links[name].blocked = False

    def close(self) -> None:
        self.heal()

        async def shutdown() -> None:
            for server in self._servers:
                server.close()
            for link in self.links.values():
                for w in list(link.conns):
                    w.close()

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
