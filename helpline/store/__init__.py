"""Persistence: CDRs, per-call event logs and security events (SQLAlchemy 2 + Alembic).

Server wiring::

    await upgrade(url)                 # migrations, in a worker thread
    store = Store(url)
    sink = StoreSink(store); sink.start(); bus.subscribe(sink)
    ...
    await sink.aclose(); await store.close()
"""

from helpline.store.migrate import current_revision, head_revision, upgrade, upgrade_sync
from helpline.store.models import Disposition
from helpline.store.records import CallDetail, CallEventRecord, CallRecord, Page, SecurityEventRecord
from helpline.store.repository import CallFilters, CallRepository, InvalidCursor, SecurityEventFilters
from helpline.store.sink import StoreSink
from helpline.store.store import Store

__all__ = [
    "CallDetail",
    "CallEventRecord",
    "CallFilters",
    "CallRecord",
    "CallRepository",
    "Disposition",
    "InvalidCursor",
    "Page",
    "SecurityEventFilters",
    "SecurityEventRecord",
    "Store",
    "StoreSink",
    "current_revision",
    "head_revision",
    "upgrade",
    "upgrade_sync",
]
