"""Several serving processes on one port: a master binds it and forks the servers.

One Python process answers a few thousand small requests a second on one core; a fleet
resolving its fine-tune at once needs every core. The master holds the listening socket
and never serves; each child accepts on the same socket, so a connection waiting in the
kernel's queue is taken by whichever child is free, and nothing queued is lost while a
child stops or dies (unlike one SO_REUSEPORT socket per process, whose queue dies with
it). Signals to the master:

- SIGTERM / SIGINT: every child stops gracefully (in-flight requests finish, the audit
  is drained, `shutdown_grace_seconds`), then the master exits.
- SIGHUP: a new set of children starts; once each accepts, the old set stops gracefully.
  New settings (the environment and config file are read again) apply to the new set.
- A child that exits unasked is replaced; one that dies before it accepts stops the
  master (a setting or the database is wrong: a restart loop would hide it).

The master starts no threads, so forking it is safe.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
from collections.abc import Callable

from tunevault.settings import Settings

log = logging.getLogger("tunevault.server")
SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
BACKLOG = 1024
READY_SECONDS = 120  # a child that is not accepting by then is taken as failed
# child_main(settings, listening socket, fd to write one byte to once accepting)
ChildMain = Callable[[Settings, socket.socket, int], None]


def bind(host: str, port: int) -> socket.socket:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family, backlog=BACKLOG)


class ChildFailed(RuntimeError):
    pass


class Master:
    def __init__(
        self,
        settings: Settings,
        sock: socket.socket,
        child_main: ChildMain,
        reload: Callable[[], Settings],
    ) -> None:
        self.settings = settings
        self.sock = sock
        self.child_main = child_main
        self.reload = reload
        self.current: set[int] = set()
        self.retiring: set[int] = set()

    def _spawn(self) -> tuple[int, int]:
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: serve, and never return into the master's code
            os.close(ready_r)
            code = 1
            try:
                for sig in SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
                self.child_main(self.settings, self.sock, ready_w)
                code = 0
            except BaseException:
                log.exception("serving process %d failed", os.getpid())
            finally:
                logging.shutdown()
                os._exit(code)
        os.close(ready_w)
        return pid, ready_r

    def _await_ready(self, pid: int, ready_r: int) -> None:
        try:
            readable, _, _ = select.select([ready_r], [], [], READY_SECONDS)
            if not readable or os.read(ready_r, 1) != b"1":
                if not readable:
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise ChildFailed(f"serving process {pid} did not start; its log says why")
        finally:
            os.close(ready_r)

    def start(self) -> set[int]:
        """A full set of children, each accepting when this returns."""
        pending = [self._spawn() for _ in range(self.settings.processes)]
        ready: set[int] = set()
        try:
            while pending:
                pid, ready_r = pending.pop(0)
                self._await_ready(pid, ready_r)
                ready.add(pid)
        except ChildFailed:
            # Every other child goes too, those not yet awaited included: none outlives
            # a failed start.
            for _, ready_r in pending:
                os.close(ready_r)
            for pid in ready | {pid for pid, _ in pending}:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            raise
        return ready

    def restart(self) -> None:
        try:
            self.settings = self.reload()
            fresh = self.start()
        except (ChildFailed, ValueError) as e:
            log.error("restart refused, the running processes stay: %s", e)
            return
        for pid in self.current:
            os.kill(pid, signal.SIGTERM)
        self.retiring |= self.current
        self.current = fresh
        log.info("restarted: processes %s serve, %s stop gracefully", fresh, self.retiring)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.retiring.discard(pid)
            if pid in self.current:
                self.current.discard(pid)
                log.warning(
                    "serving process %d exited (%s); starting another",
                    pid,
                    _describe(status),
                )
                fresh, ready_r = self._spawn()
                self._await_ready(fresh, ready_r)
                self.current.add(fresh)

    def stop(self) -> None:
        for pid in self.current | self.retiring:
            os.kill(pid, signal.SIGTERM)
        for pid in self.current | self.retiring:
            os.waitpid(pid, 0)

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT; signals wait their turn (blocked, then taken)."""
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        self.current = self.start()
        host, port = self.sock.getsockname()[:2]
        log.info("serving on http://%s:%d with %d processes", host, port, len(self.current))
        try:
            while (sig := signal.sigwait(SIGNALS)) not in (signal.SIGTERM, signal.SIGINT):
                if sig == signal.SIGHUP:
                    self.restart()
                self.reap()
        except ChildFailed:
            log.error("a replacement serving process did not start: stopping")
            raise
        finally:
            self.stop()
        log.info("stopped")


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
