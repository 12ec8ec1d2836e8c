"""node: the Ketch process — configuration, wiring, gRPC servers, metrics."""
