"""The replicated backend: PostgreSQL, shared by every replica of the service.

Driver: psycopg 3 (its native asyncio connections) with psycopg-pool, rather than asyncpg, because
psycopg goes through libpq: ``storage.postgres.url`` may then be anything libpq accepts, a URI, a
key/value string or ``service=name`` from a libpq service file (``PGSERVICEFILE``), and ``~/.pgpass``,
``PGSSLMODE`` and the other ``PG*`` variables work as operators expect; asyncpg implements the wire
protocol itself and reads no service file. psycopg-pool adds a checked, self-healing async pool.

Replicas cooperate through the database alone: the inbox's unique ``dedup_key`` makes a delivery
retried on another replica store nothing new; ingest claims inbox rows with ``FOR UPDATE SKIP
LOCKED`` and serialises each alert group with a transaction-level advisory lock (so a group never
gets two open incidents and its alerts apply in arrival order); jobs and outbox rows are claimed
with ``SKIP LOCKED`` and a lease (leases.py); migrations run under an advisory lock (schema.py).
"""
