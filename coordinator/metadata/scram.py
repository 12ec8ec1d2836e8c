"""SCRAM credentials in the metadata log (Kafka's KIP-554) and the controller's command to alter them.

A credential is what RFC 5802 lets a server verify a password with: a salt, an iteration count and
the stored and server keys derived from the salted password. The password itself never reaches a
node: the client (``Admin.alter_user_scram_credentials``) derives the keys (scramp's
``make_auth_info``) and sends those. SCRAM-SHA-256 and SCRAM-SHA-512, as in Kafka.

Rules of the command (security_changes.py ``alter_scram``):
- Deletions first, then upsertions, one result each, in the request's order; a bad one fails
  alone: an unknown mechanism or an empty name (INVALID_REQUEST), iterations outside Kafka's
  4096..16384, keys of the wrong length for the hash, deleting a credential that does not exist
  (RESOURCE_NOT_FOUND).
- An upsertion replaces the user's credential for that mechanism (a password change).
"""

from __future__ import annotations

from dataclasses import dataclass

from ketch.api.v1 import metadata_pb2 as mpb

MECHANISMS = {"SCRAM-SHA-256": 32, "SCRAM-SHA-512": 64}  # mechanism -> key length in bytes
MIN_ITERATIONS, MAX_ITERATIONS = 4096, 16384


@dataclass(frozen=True, slots=True)
class ScramCredential:
    name: str
    mechanism: str
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int

    @property
    def key(self) -> tuple[str, str]:
        return self.name, self.mechanism

    @classmethod
    def from_pb(cls, m: mpb.UserScramCredentialRecord) -> ScramCredential:
        return cls(m.name, m.mechanism, m.salt, m.stored_key, m.server_key, m.iterations)

    def record(self) -> mpb.MetadataRecord:
        return mpb.MetadataRecord(
            scram_credential=mpb.UserScramCredentialRecord(
                name=self.name,
                mechanism=self.mechanism,
                salt=self.salt,
                stored_key=self.stored_key,
                server_key=self.server_key,
                iterations=self.iterations,
            )
        )


def invalid(name: str, mechanism: str) -> str | None:
    if not name:
        return "a SCRAM user needs a name"
    if mechanism not in MECHANISMS:
        return f"mechanism {mechanism!r} is not {' or '.join(MECHANISMS)}"
    return None
