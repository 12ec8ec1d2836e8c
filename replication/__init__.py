"""replication: one partition replica and its log storage."""
