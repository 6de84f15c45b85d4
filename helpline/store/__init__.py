"""Persistence: CDRs, per-call event logs, security events, agents and agent events (SQLAlchemy 2 +
Alembic).

Server wiring::

    await upgrade(url)                 # migrations, in a worker thread
    store = Store(url)
    sink = StoreSink(store); sink.start(); bus.subscribe(sink)
    ...
    await sink.aclose(); await store.close()
"""

from helpline.store.agents import (
    AgentChanges,
    AgentError,
    AgentEventFilters,
    AgentExists,
    AgentNotFound,
    AgentRepository,
    InvalidAgent,
)
from helpline.store.migrate import current_revision, head_revision, upgrade, upgrade_sync
from helpline.store.models import Disposition
from helpline.store.queue_history import QueueHistory
from helpline.store.records import (
    AgentEventRecord,
    AgentRecord,
    CallDetail,
    CallEventRecord,
    CallRecord,
    Page,
    SecurityEventRecord,
    StoredAgent,
)
from helpline.store.repository import CallFilters, CallRepository, InvalidCursor, SecurityEventFilters
from helpline.store.sink import StoreSink
from helpline.store.store import Store

__all__ = [
    "AgentChanges",
    "AgentError",
    "AgentEventFilters",
    "AgentEventRecord",
    "AgentExists",
    "AgentNotFound",
    "AgentRecord",
    "AgentRepository",
    "CallDetail",
    "CallEventRecord",
    "CallFilters",
    "CallRecord",
    "CallRepository",
    "Disposition",
    "InvalidAgent",
    "InvalidCursor",
    "Page",
    "QueueHistory",
    "SecurityEventFilters",
    "SecurityEventRecord",
    "Store",
    "StoreSink",
    "StoredAgent",
    "current_revision",
    "head_revision",
    "upgrade",
    "upgrade_sync",
]
