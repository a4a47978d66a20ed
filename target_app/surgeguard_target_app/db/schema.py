"""The demo's tables and their seed, made idempotently at start-up.

``items`` (ITEM_COUNT rows, seeded once), ``signups`` and ``orders`` (written by the
routes), and ``surgeguard_lanes``: one row per unit of the db's capacity
(``SURGEGUARD_DB_CAPACITY``). ``surgeguard_hold_lane(work_s, fail, durable)`` is what
makes Postgres the bottleneck, plainly a stand-in: it takes a row lock on a free lane
(``FOR UPDATE SKIP LOCKED``), or when every lane is held queues on one, as queries
queue on a hot row, and holds it for ``pg_sleep(work_s)`` seconds, standing in for the
work of a query plan; ``fail`` then raises (chaos), and a call that is not ``durable``
(a read) commits without waiting for its WAL flush. So at most ``capacity`` calls do
"work" at once, across every replica sharing the server, and the rest wait inside
Postgres (queued on a lane, they look for a free one again every quarter of a call's
work, so no lane idles long while calls wait on another).

Many replicas may start at once: everything runs in one transaction under a
transaction-scoped advisory lock, so they take turns and the later ones find it done.
"""

from __future__ import annotations

import asyncpg

from surgeguard_target_app.db.model import ITEM_COUNT

# pg_advisory_xact_lock key: any constant of our own (b"sgschema" as a bigint).
SCHEMA_LOCK = 0x7367736368656D61

TABLES = """
CREATE TABLE IF NOT EXISTS items (
    id integer PRIMARY KEY,
    name text NOT NULL,
    price_cents integer NOT NULL
);
CREATE TABLE IF NOT EXISTS signups (
    id text PRIMARY KEY,
    email text NOT NULL,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS orders (
    id text PRIMARY KEY,
    item_id integer NOT NULL REFERENCES items (id),
    quantity integer NOT NULL CHECK (quantity > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS surgeguard_lanes (id integer PRIMARY KEY);
"""

# One call's lane time: (work_s seconds, fail after it, durable commit). The demo's
# calls and the shared-db benchmark's direct measurement of the db use the same.
HOLD_LANE_CALL = "SELECT surgeguard_hold_lane($1, $2, $3)"

HOLD_LANE = """
CREATE OR REPLACE FUNCTION surgeguard_hold_lane(
    work_s double precision, fail boolean, durable boolean
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    lane integer;
    lanes integer;
BEGIN
    IF NOT durable THEN
        -- A read: its only write is the lane's row lock, not worth a WAL flush.
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    LOOP
        SELECT id INTO lane FROM surgeguard_lanes ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED;
        EXIT WHEN lane IS NOT NULL;
        -- Every lane is held: queue on one (at random, so waiters spread out) for a
        -- quarter of a call's work at most, then look for a free one again, so no lane
        -- stays idle long while calls queue on another.
        SELECT count(*) INTO lanes FROM surgeguard_lanes;
        BEGIN
            PERFORM set_config('lock_timeout', greatest(ceil(work_s * 250), 5)::text, true);
            lane := 1 + floor(random() * lanes)::integer;
            PERFORM 1 FROM surgeguard_lanes WHERE id = lane FOR UPDATE;
            PERFORM set_config('lock_timeout', '0', true);
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            lane := NULL;
        END;
    END LOOP;
    PERFORM pg_sleep(work_s);  -- the stand-in for a query plan's work
    IF fail THEN
        RAISE EXCEPTION 'simulated failure (chaos error_rate)' USING ERRCODE = 'XX000';
    END IF;
    RETURN lane;
END $$;
"""


async def ensure_schema(conn: asyncpg.Connection, lanes: int, items: int = ITEM_COUNT) -> None:
    """Tables, the lane function, ``lanes`` lane rows (exactly 1..lanes) and ``items``
    seeded items; safe to run from many replicas at once, and again at every start."""
    if lanes < 1:
        raise ValueError(f"lanes must be >= 1 (the db's capacity), got {lanes}")
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        await conn.execute(TABLES)
        await conn.execute(HOLD_LANE)
        await conn.execute(
            "INSERT INTO surgeguard_lanes SELECT generate_series(1, $1) ON CONFLICT DO NOTHING",
            lanes,
        )
        await conn.execute("DELETE FROM surgeguard_lanes WHERE id > $1", lanes)
        seeded = await conn.fetchval("SELECT count(*) FROM items")
        if seeded < items:
            await conn.execute(
                "INSERT INTO items (id, name, price_cents) "
                "SELECT g, 'item ' || g, 100 + g % 9900 FROM generate_series(1, $1) AS g "
                "ON CONFLICT (id) DO NOTHING",
                items,
            )
