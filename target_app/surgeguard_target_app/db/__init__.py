"""The demo's database: a real PostgreSQL server (``postgres``, when
``SURGEGUARD_DATABASE_URL`` is set) or the in-process simulated one (``simulated``).
Both answer the same calls (``Database``), each one call inside the db's bulkhead."""

from surgeguard_target_app.db.model import Database
from surgeguard_target_app.db.simulated import SimulatedDb

__all__ = ["Database", "SimulatedDb"]
