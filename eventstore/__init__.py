"""The log: APSW persistence for `eventsourcing`, wire models, per-user files, and ingest."""
