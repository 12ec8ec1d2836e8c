"""Kafka's wire protocol on a node: existing Kafka clients and tools talk to the same broker code.

A translation layer, not a second broker: each Kafka request (decoded with kio, whose types are
generated from Kafka's own message schemas) becomes the ketch.v1 request of the same API, runs
through this listener's ``KetchService`` method after the same authorization rule as gRPC
(node/access.py), and its answer is translated back (node/kafka/context.py has the contract).
The modules, one per family of APIs, each declare ``APIS``: the versions they serve and their
handler; ApiVersions advertises exactly those.
"""
