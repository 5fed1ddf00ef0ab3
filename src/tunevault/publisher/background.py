"""Publishing off the training thread, so that training never waits for the store.

Jobs (create the fine-tune, publish a checkpoint, post events and metrics, set the
status) run in order on one thread. While the server cannot be reached a job is retried,
with a pause that grows to `MAX_PAUSE`, and each failed round logs a warning saying that
training goes on and how much is waiting; when the server is back the backlog drains, and
a warning says it caught up. Every job is idempotent (ids, Idempotency-Key, resumable
uploads), so a retry after a lost answer stores nothing twice. Any other failure (a
refused request) stops the backlog and is raised in the training thread at its next
submit or drain. With `background=False` each job runs at once in the caller, and a
failure raises there: the old behaviour, for those who want training to stop.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from tunevault.client.http import NetworkError
from tunevault.client.retry import Backoff, reason, where

log = logging.getLogger("tunevault.publisher")
MAX_PAUSE = 30.0

Job = Callable[[], None]


class Backlog:
    def __init__(self, url: str, *, background: bool = True) -> None:
        self.url = url
        self.background = background
        self.offline = False  # the last attempt could not reach the server
        self._jobs: queue.Queue[tuple[Job, str] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._pauses = Backoff(attempts=0, first=1.0, cap=MAX_PAUSE)

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def submit(self, job: Job, what: str) -> None:
        """Run `job` (described by `what`, for the warnings) after those submitted before."""
        self.raise_error()
        if not self.background:
            job()
            return
        with self._lock:
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tunevault-publish", daemon=True
                )
                self._thread.start()
        self._jobs.put((job, what))

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every job ran (True) or `timeout` passed (False); raise a job's error."""
        with self._idle:
            done = self._idle.wait_for(
                lambda: self._pending == 0 or self._error is not None, timeout
            )
        self.raise_error()
        return bool(done)

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop the thread; jobs still waiting are dropped (with a warning)."""
        if self._thread is None:
            return
        left = self.pending
        if left:
            log.warning(
                "tunevault: %d publishing step(s) to %s were not done; "
                "`tunevault push OUTPUT_DIR` publishes the saved checkpoints later",
                left,
                where(self.url),
            )
        self._stop.set()
        self._jobs.put(None)
        self._thread.join()
        self._thread = None

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, what = item
            if self._error is None and not self._stop.is_set():
                self._attempt(job, what)
            with self._lock:
                self._pending -= 1
                self._idle.notify_all()

    def _attempt(self, job: Job, what: str) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                job()
            except NetworkError as e:
                failures += 1
                self.offline = True
                pause = self._pauses.pause(failures)
                log.warning(
                    "tunevault: cannot reach %s (%s): %s not published yet; training goes on, "
                    "%d publishing step(s) waiting; next try in %.0f s",
                    where(self.url),
                    reason(e),
                    what,
                    self.pending,
                    pause,
                )
                self._stop.wait(pause)
                continue
            except Exception as e:  # a refused request: the training thread hears of it
                log.error("tunevault: %s failed: %s", what, e)
                self._error = e
                with self._lock:
                    self._idle.notify_all()
                return
            if self.offline:
                log.warning("tunevault: %s is reachable again; published %s", where(self.url), what)
            self.offline = False
            return
