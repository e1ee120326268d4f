"""Read tables and the queries over them (built from the event log)."""
