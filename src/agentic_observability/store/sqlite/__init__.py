"""The embedded backend: one SQLite file in WAL mode (schema, write transactions, the async store)."""
