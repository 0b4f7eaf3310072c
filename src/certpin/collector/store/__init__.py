"""The collector's database, through SQLAlchemy Core: `Store` (engines, migrations, the group
commit and the queries), its tables and migrations (`schema`), the batch write (`writes`) and
the queries (`reads`)."""

from certpin.collector.store.database import (
    DEFAULT_DB_DIR,
    Store,
    StoreError,
    database_url,
    is_transient,
    now_us,
)
from certpin.collector.store.schema import MIGRATIONS, SCHEMA_VERSION
from certpin.collector.store.writes import Outcome

__all__ = [
    "DEFAULT_DB_DIR",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Outcome",
    "Store",
    "StoreError",
    "database_url",
    "is_transient",
    "now_us",
]
