"""Storage and database latency reported to a process's metrics (server or worker).

The services a process opened, with its storage wrapped to time every call at the
interface (tunevault.storage.timed) and its database engine timing every statement
(tunevault.metadata.timing). The observers are plain callables: this layer knows nothing
of Prometheus.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from tunevault.service.context import Services
from tunevault.storage.timed import TimedStorage


def instrumented(
    svc: Services,
    storage: Callable[[str, str, float], None],
    database: Callable[[str, float], None],
) -> Services:
    """`storage(backend, operation, seconds)`, `database(statement, seconds)`."""
    backend = svc.storage.url.split("://", 1)[0]

    def observe_storage(operation: str, seconds: float) -> None:
        storage(backend, operation, seconds)

    svc.store.time_statements(database)
    return dataclasses.replace(svc, storage=TimedStorage(svc.storage, observe_storage))
