"""Ketch: a distributed, replicated commit log (client library, CLI, record codec)."""
