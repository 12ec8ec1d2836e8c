"""Who is calling: the principal of a gRPC call, Kafka's way.

- A call over TLS with a client certificate is ``User:NAME`` where NAME comes from the
  certificate's subject (RFC 2253, most specific first: ``CN=alice,O=Example``) through the
  mapping rules, Kafka's ``ssl.principal.mapping.rules``:
  ``RULE:pattern/replacement/[L|U]`` entries and ``DEFAULT``, separated by commas. The first
  rule whose pattern matches the whole subject gives the name (``$1`` in the replacement is the
  first group; ``L``/``U`` lower- or upper-case it); ``DEFAULT`` gives the subject unchanged. No
  rule matching is the same as ``DEFAULT``. ``ketch cluster up --tls`` uses
  ``RULE:^CN=([^,]+)$/$1/,DEFAULT``, so its certificate for NAME is ``User:NAME``.
- A call carrying ``authorization: Bearer TOKEN`` of a live SASL session (node/sasl.py) is the
  session's ``User:NAME``, before any certificate; a token the node does not know (expired, or
  from before a restart) makes the principal None: the call is refused UNAUTHENTICATED and the
  client logs in again.
- Any other call (plaintext, or TLS without a client certificate) is ``User:ANONYMOUS``.
- The Kafka listener (node/kafka/server.py) applies the same rules to the certificate of its TLS
  connection (``certificate_principal``); its SASL login replaces it.

A rule list that does not parse is a ``ConfigError`` when the node starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from coordinator.metadata.acls import ANONYMOUS
from node.config import ConfigError
from node.sasl import SaslSessions


@dataclass(frozen=True)
class MappingRule:
    pattern: re.Pattern[str] | None  # None: DEFAULT
    replacement: str = ""
    case: str = ""

    def apply(self, subject: str) -> str | None:
        if self.pattern is None:
            return subject
        match = self.pattern.fullmatch(subject)
        if match is None:
            return None
        name = match.expand(self.replacement)
        return name.lower() if self.case == "L" else name.upper() if self.case == "U" else name


_RULE = re.compile(r"\s*(?:(DEFAULT)|RULE:((?:\\/|[^/])*)/((?:\\/|[^/])*)/([LU]?))\s*(?:,|$)")


def parse_rules(text: str) -> tuple[MappingRule, ...]:
    rules: list[MappingRule] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _RULE.match(text, position)
        if match is None or match.end() == position:
            raise ConfigError(
                f"ssl_principal_mapping_rules: cannot read {text[position:]!r}; "
                "expected RULE:pattern/replacement/[L|U] or DEFAULT, separated by commas"
            )
        if match.group(1):
            rules.append(MappingRule(None))
        else:
            try:
                pattern = re.compile(match.group(2).replace("\\/", "/"))
            except re.error as exc:
                raise ConfigError(f"ssl_principal_mapping_rules: bad pattern {match.group(2)!r}: {exc}") from None
            replacement = re.sub(r"\$(\d)", r"\\\1", match.group(3).replace("\\/", "/"))
            rules.append(MappingRule(pattern, replacement, match.group(4)))
        position = match.end()
    return tuple(rules) or (MappingRule(None),)


def map_subject(rules: tuple[MappingRule, ...], subject: str) -> str:
    for rule in rules:
        name = rule.apply(subject)
        if name is not None:
            return name
    return subject


def certificate_principal(der: bytes | None, rules: tuple[MappingRule, ...]) -> str:
    """``User:NAME`` for a client certificate (DER) by the mapping rules; ``User:ANONYMOUS`` without one."""
    if not der:
        return ANONYMOUS
    from cryptography import x509

    subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    return "User:" + map_subject(rules, subject)


def principal_of(context: Any, rules: tuple[MappingRule, ...], sessions: SaslSessions | None = None) -> str | None:
    """``User:NAME`` for the caller of the call behind a gRPC servicer ``context`` (None: a dead token)."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return sessions.principal(value[len("Bearer ") :]) if sessions is not None else None
    auth = context.auth_context()
    subject = auth.get("x509_subject")
    if not subject or auth.get("transport_security_type") != [b"ssl"]:
        return ANONYMOUS
    return "User:" + map_subject(rules, subject[0].decode("utf-8", "replace"))
