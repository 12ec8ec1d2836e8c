"""Named listeners (Kafka's listener model): which addresses a node binds, advertises and dials.

Settings (node/config.py, Kafka's names with underscores):

- ``listeners``: ``NAME://HOST:PORT,...``, e.g. ``INTERNAL://0.0.0.0:9092,EXTERNAL://0.0.0.0:19092``.
  Port 0 binds a free port.
- ``advertised_listeners``: ``NAME://HOST:PORT,...`` for some or all of the same names: the
  address other nodes and clients are told. A listener not named here advertises its bind
  address, a wildcard host (``0.0.0.0``, ``::``, empty) as ``127.0.0.1``; an advertised port
  0 (or a bind port 0 advertised by default) is the port actually bound.
- ``listener_security_protocol_map``: ``NAME:PROTOCOL,...`` with PLAINTEXT or SSL. A listener
  named PLAINTEXT or SSL needs no entry; any other name needs one.
- ``inter_broker_listener_name``: the listener brokers dial each other on (replica fetching,
  transaction markers); its advertised endpoint is the image's broker host/port.
- ``controller_listener_names``: the listeners controllers serve Raft and the controller RPCs
  on; the first one's protocol is how every node dials ``controller_quorum_voters`` (whose
  addresses are on it). Both default to the first listener.

Backward compatibility: with ``listeners`` empty the node has exactly one listener, named after
``security_protocol`` (PLAINTEXT or SSL), bound to ``listen`` and advertised as
``advertised_listener`` (or ``listen``), which is how a node was configured before listeners.
``security_protocol`` then is that listener's protocol; with ``listeners`` set, each listener's
protocol comes from the map (or its name) and ``security_protocol`` is not used.

Rules:
- Every listener serves the same gRPC services on its own server with its own credentials;
  the ssl_* files are shared by every SSL listener, and so is ``ssl_client_auth`` except where
  ``listener_ssl_client_auth`` (``NAME:none|required,...``, Kafka's
  ``listener.name.NAME.ssl.client.auth``) sets a listener's own: mutual TLS on INTERNAL for the
  nodes, TLS with SCRAM logins on EXTERNAL for clients without certificates.
- A request knows the listener it came in on. Every answer that names broker addresses
  (Metadata, FindCoordinator) gives each broker's endpoint of that listener name, and leaves
  out a broker that has no such listener, never handing out another listener's address
  (Kafka does the same).
- A configuration that cannot work is a ``ConfigError`` naming the setting: a malformed entry,
  a duplicate name or port, a map or advertised entry for an unknown listener, a protocol other
  than PLAINTEXT/SSL, a listener without a protocol, an inter-broker or controller listener name
  that is not a listener, an SSL listener without the ssl files.

The Kafka protocol listener: ``kafka_listen`` (``HOST:PORT``; empty: none) adds a listener named
KAFKA, advertised as ``kafka_advertised_listener`` (or its bind address as above), of protocol
``kafka_security_protocol`` (PLAINTEXT or SSL; its client auth as ``listener_ssl_client_auth``'s
``KAFKA:...`` or ``ssl_client_auth``). It
is not a gRPC server (node/kafka/server.py serves it) so it is not in ``all``; it is in
``endpoints`` (what a broker registers), so Metadata and FindCoordinator on it answer each
broker's Kafka address. Its name and port must not clash with another listener's.

This module is pure: it parses and validates, and names the endpoints; node/main.py binds.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.config import ConfigError, NodeConfig, split_host_port

PROTOCOLS = ("PLAINTEXT", "SSL")
WILDCARD_HOSTS = ("", "0.0.0.0", "::")
KAFKA = "KAFKA"  # the Kafka protocol listener's name


@dataclass(frozen=True)
class Listener:
    """One listener: where it binds, what it advertises, its protocol."""

    name: str
    bind_host: str
    bind_port: int
    advertised_host: str
    advertised_port: int  # 0: the port actually bound
    security_protocol: str
    client_auth: str = "none"  # an SSL listener: "required" (mutual TLS) or "none"

    @property
    def bind(self) -> str:
        host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        return f"{host}:{self.bind_port}"

    def advertised(self, bound_port: int) -> tuple[str, int]:
        """(host, port) to advertise once the listener is bound on ``bound_port``."""
        return self.advertised_host, self.advertised_port or bound_port


@dataclass(frozen=True)
class Listeners:
    """A node's listeners in configuration order, and the ones it dials others on."""

    all: tuple[Listener, ...]  # the gRPC listeners
    inter_broker: str
    controller: tuple[str, ...]
    kafka: Listener | None = None  # the Kafka protocol listener (kafka_listen)

    @property
    def registered(self) -> tuple[Listener, ...]:
        """Every listener whose endpoint the broker registers: the gRPC ones, then KAFKA."""
        return self.all + ((self.kafka,) if self.kafka else ())

    def __getitem__(self, name: str) -> Listener:
        for listener in self.all:
            if listener.name == name:
                return listener
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [listener.name for listener in self.all]

    @property
    def first(self) -> Listener:
        return self.all[0]

    @property
    def inter_broker_protocol(self) -> str:
        return self[self.inter_broker].security_protocol

    @property
    def controller_protocol(self) -> str:
        return self[self.controller[0]].security_protocol


def parse_endpoints(setting: str, value: str) -> dict[str, tuple[str, int]]:
    """``NAME://HOST:PORT,...`` as {NAME: (host, port)}, in order; names upper-cased like Kafka's."""
    out: dict[str, tuple[str, int]] = {}
    ports: dict[int, str] = {}
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        name, sep, address = entry.partition("://")
        name = name.strip().upper()
        if not sep or not name or not name.replace("_", "").isalnum():
            raise ConfigError(f"{setting}: expected NAME://HOST:PORT, got {entry!r}")
        try:
            host, port = split_host_port(address)
        except ConfigError:
            raise ConfigError(f"{setting}: expected NAME://HOST:PORT, got {entry!r}") from None
        if not 0 <= port < 65536:
            raise ConfigError(f"{setting}: port {port} of {name} is not 0..65535")
        if name in out:
            raise ConfigError(f"{setting}: the listener name {name} appears twice")
        if port and port in ports and setting == "listeners":
            raise ConfigError(f"{setting}: {ports[port]} and {name} both bind port {port}")
        ports[port] = name
        out[name] = (host, port)
    return out


def parse_protocol_map(value: str) -> dict[str, str]:
    """``NAME:PROTOCOL,...`` as {NAME: PROTOCOL}."""
    out: dict[str, str] = {}
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        name, sep, protocol = (part.strip().upper() for part in entry.partition(":"))
        if not sep or not name or not protocol:
            raise ConfigError(f"listener_security_protocol_map: expected NAME:PROTOCOL, got {entry!r}")
        if protocol not in PROTOCOLS:
            raise ConfigError(
                f"listener_security_protocol_map: {name}'s protocol must be PLAINTEXT or SSL, got {protocol!r}"
            )
        if name in out:
            raise ConfigError(f"listener_security_protocol_map: {name} appears twice")
        out[name] = protocol
    return out


def parse_client_auth(config: NodeConfig, names: list[str]) -> dict[str, str]:
    """Each listener's ssl client authentication: ``listener_ssl_client_auth``, else ``ssl_client_auth``."""
    if config.kafka_listen.strip():
        names = [*names, KAFKA]  # listener_ssl_client_auth may name the Kafka listener too
    out = dict.fromkeys(names, config.ssl_client_auth)
    seen: set[str] = set()
    for entry in (e.strip() for e in config.listener_ssl_client_auth.split(",")):
        if not entry:
            continue
        name, sep, value = (part.strip() for part in entry.partition(":"))
        name, value = name.upper(), value.lower()
        if not sep or value not in ("none", "required"):
            raise ConfigError(f"listener_ssl_client_auth: expected NAME:none or NAME:required, got {entry!r}")
        if name not in out or name in seen:
            why = "appears twice" if name in seen else f"is not among the listeners ({', '.join(names)})"
            raise ConfigError(f"listener_ssl_client_auth: {name} {why}")
        seen.add(name)
        out[name] = value
    return out


def _advertise(host: str, port: int) -> tuple[str, int]:
    return ("127.0.0.1" if host in WILDCARD_HOSTS else host), port


def _legacy(config: NodeConfig) -> Listeners:
    """One listener named after security_protocol, on ``listen``, advertised as ``advertised_listener``."""
    name = config.security_protocol
    bind_host, bind_port = config.listen_host_port
    if config.advertised_listener:
        advertised = _advertise(*split_host_port(config.advertised_listener))
    else:
        advertised = _advertise(bind_host, 0)  # the bound port, as before listeners
    auth = parse_client_auth(config, [name])[name]
    listener = Listener(name, bind_host, bind_port, *advertised, security_protocol=name, client_auth=auth)
    return _named(config, (listener,))


def _named(config: NodeConfig, listeners: tuple[Listener, ...]) -> Listeners:
    names = [listener.name for listener in listeners]
    inter_broker = config.inter_broker_listener_name.strip().upper() or names[0]
    if inter_broker not in names:
        raise ConfigError(f"inter_broker_listener_name {inter_broker} is not one of the listeners ({', '.join(names)})")
    controller = tuple(n.strip().upper() for n in config.controller_listener_names.split(",") if n.strip())
    unknown = [n for n in controller if n not in names]
    if unknown:
        raise ConfigError(
            f"controller_listener_names: {', '.join(unknown)} not among the listeners ({', '.join(names)})"
        )
    return Listeners(listeners, inter_broker, controller or (names[0],), _kafka(config, listeners))


def _kafka(config: NodeConfig, listeners: tuple[Listener, ...]) -> Listener | None:
    """The KAFKA listener of ``kafka_listen``, or None; a clash with a gRPC listener is a ConfigError."""
    if not config.kafka_listen.strip():
        if config.kafka_advertised_listener.strip():
            raise ConfigError("kafka_advertised_listener needs kafka_listen (HOST:PORT)")
        return None
    host, port = split_host_port(config.kafka_listen)
    if config.kafka_advertised_listener:
        ad_host, ad_port = _advertise(*split_host_port(config.kafka_advertised_listener))
    else:
        ad_host, ad_port = _advertise(host, 0)  # the bound port
    for listener in listeners:
        if listener.name == KAFKA:
            raise ConfigError("the listener name KAFKA is kafka_listen's; name the gRPC listener otherwise")
        if port and listener.bind_port == port:
            raise ConfigError(f"kafka_listen and listener {listener.name} both bind port {port}")
    protocol = config.kafka_security_protocol.strip().upper()
    if protocol not in PROTOCOLS:
        raise ConfigError(f"kafka_security_protocol must be PLAINTEXT or SSL, got {config.kafka_security_protocol!r}")
    client_auth = parse_client_auth(config, [listener.name for listener in listeners])[KAFKA]
    return Listener(KAFKA, host, port, ad_host, ad_port, protocol, client_auth)


def resolve(config: NodeConfig) -> Listeners:
    """The node's listeners from its settings; ``ConfigError`` for any setting that cannot work."""
    if not config.listeners.strip():
        for setting in ("advertised_listeners", "listener_security_protocol_map"):
            if getattr(config, setting).strip():
                raise ConfigError(f"{setting} needs listeners (NAME://HOST:PORT,...)")
        return _legacy(config)
    if config.advertised_listener:
        raise ConfigError("advertised_listener is for a node without listeners; use advertised_listeners")
    bound = parse_endpoints("listeners", config.listeners)
    advertised = parse_endpoints("advertised_listeners", config.advertised_listeners)
    protocols = parse_protocol_map(config.listener_security_protocol_map)
    for setting, named in (("advertised_listeners", advertised), ("listener_security_protocol_map", protocols)):
        unknown = sorted(set(named) - set(bound))
        if unknown:
            raise ConfigError(
                f"{setting} names {', '.join(unknown)}, which is not among the listeners ({', '.join(bound)})"
            )
    listeners = []
    client_auth = parse_client_auth(config, list(bound))
    for name, (host, port) in bound.items():
        protocol = protocols.get(name) or (name if name in PROTOCOLS else "")
        if not protocol:
            raise ConfigError(
                f"listener {name} has no security protocol: add {name}:PLAINTEXT or {name}:SSL to "
                "listener_security_protocol_map (only listeners named PLAINTEXT or SSL need no entry)"
            )
        ad_host, ad_port = _advertise(*advertised.get(name, (host, 0)))
        listeners.append(Listener(name, host, port, ad_host, ad_port, protocol, client_auth[name]))
    return _named(config, tuple(listeners))
