"""Waking idle build workers when a job is queued: no poll interval between commit and build.

In one process (SQLite, or the server's own worker threads) a `JobSignal` wakes the workers
after the transaction that queued a job commits. Across processes on PostgreSQL, that
transaction also says `NOTIFY tunevault_jobs` (delivered at commit), and `listen_for_jobs`
turns each notification into the same wake-up. Workers still poll, rarely, as a fallback
(a lost connection, a lease that expired).
"""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa

log = logging.getLogger("tunevault.service.worker")
CHANNEL = "tunevault_jobs"
RECONNECT_S = 2.0  # after a lost listening connection; the fallback poll covers the gap


class JobSignal:
    """A counter that waiters watch: each queued job (or a stop) moves it on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        with self._cond:
            return self._generation

    def notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        """Return once the counter has moved past `seen`, or after `timeout` seconds.
        Taking `seen` before looking at the queue means no wake-up is missed in between."""
        with self._cond:
            self._cond.wait_for(lambda: self._generation != seen, timeout)


def announce(conn: sa.Connection) -> None:
    """Inside a transaction that queues jobs: tell other processes' workers at commit."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f"NOTIFY {CHANNEL}"))


def listen_for_jobs(url: str, signal: JobSignal, stop: threading.Event) -> None:
    """Relay PostgreSQL notifications to `signal` until `stop` is set (a thread's body)."""
    import psycopg

    conninfo = sa.make_url(url).set(drivername="postgresql").render_as_string(False)
    while not stop.is_set():
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                signal.notify()  # a job queued while we were not listening is found now
                while not stop.is_set():
                    for _ in conn.notifies(timeout=1.0, stop_after=1):
                        signal.notify()
        except psycopg.Error as e:
            log.warning("listening for build jobs failed (%s); retrying in %g s", e, RECONNECT_S)
            stop.wait(RECONNECT_S)
