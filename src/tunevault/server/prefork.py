"""Several serving processes on one port: a master binds it and forks the servers.

One Python process answers a few thousand small requests a second on one core; a fleet
resolving its fine-tune at once needs every core. The master binds one listening socket
per serving slot, all on the same port with SO_REUSEPORT, so the kernel spreads incoming
connections evenly across the slots (with one shared socket, the first process to wake
accepted most of a burst of keep-alive connections and kept them while the other idled).
The master holds every socket and never serves; the child of slot i accepts on socket i,
and a child that replaces it (after a death, or at SIGHUP) inherits the same socket, so a
connection waiting in that socket's kernel queue is never lost while a child stops or
dies. Signals to the master:

- SIGTERM / SIGINT: every child stops gracefully (in-flight requests finish, the audit
  is drained, `shutdown_grace_seconds`), then the master exits.
- SIGHUP: a new set of children starts; once each accepts, the old set stops gracefully.
  New settings (the environment and config file are read again) apply to the new set,
  except `processes`: the sockets are the master's, so a new count needs a full restart.
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


def bind(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on one port (the first picks it when `port` is 0)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    socks: list[socket.socket] = []
    for _ in range(count):
        sock = socket.create_server((host, port), family=family, backlog=BACKLOG, reuse_port=True)
        port = sock.getsockname()[1]
        socks.append(sock)
    return socks


class ChildFailed(RuntimeError):
    pass


class Master:
    def __init__(
        self,
        settings: Settings,
        socks: list[socket.socket],
        child_main: ChildMain,
        reload: Callable[[], Settings],
    ) -> None:
        self.settings = settings
        self.socks = socks  # one per slot, held for the master's life
        self.child_main = child_main
        self.reload = reload
        self.current: dict[int, int] = {}  # pid -> its slot
        self.retiring: set[int] = set()

    def _spawn(self, slot: int) -> tuple[int, int]:
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: serve, and never return into the master's code
            os.close(ready_r)
            code = 1
            try:
                for sig in SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
                self.child_main(self.settings, self.socks[slot], ready_w)
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

    def start(self) -> dict[int, int]:
        """A full set of children, one per slot, each accepting when this returns."""
        pending = [(slot, *self._spawn(slot)) for slot in range(len(self.socks))]
        ready: dict[int, int] = {}
        try:
            while pending:
                slot, pid, ready_r = pending.pop(0)
                self._await_ready(pid, ready_r)
                ready[pid] = slot
        except ChildFailed:
            # Every other child goes too, those not yet awaited included: none outlives
            # a failed start.
            for _, _, ready_r in pending:
                os.close(ready_r)
            for pid in ready.keys() | {pid for _, pid, _ in pending}:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            raise
        return ready

    def restart(self) -> None:
        try:
            settings = self.reload()
            if settings.processes != len(self.socks):
                raise ValueError(
                    f"processes changed from {len(self.socks)} to {settings.processes}:"
                    " a new count takes a full restart (stop, then start) of the master"
                )
            self.settings = settings
            fresh = self.start()
        except (ChildFailed, ValueError) as e:
            log.error("restart refused, the running processes stay: %s", e)
            return
        for pid in self.current:
            os.kill(pid, signal.SIGTERM)
        self.retiring |= self.current.keys()
        self.current = fresh
        log.info("restarted: processes %s serve, %s stop gracefully", set(fresh), self.retiring)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.retiring.discard(pid)
            if (slot := self.current.pop(pid, None)) is not None:
                log.warning(
                    "serving process %d exited (%s); starting another",
                    pid,
                    _describe(status),
                )
                fresh, ready_r = self._spawn(slot)  # on the same socket: its queue waits
                self._await_ready(fresh, ready_r)
                self.current[fresh] = slot

    def stop(self) -> None:
        for pid in self.current.keys() | self.retiring:
            os.kill(pid, signal.SIGTERM)
        for pid in self.current.keys() | self.retiring:
            os.waitpid(pid, 0)

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT; signals wait their turn (blocked, then taken)."""
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        self.current = self.start()
        host, port = self.socks[0].getsockname()[:2]
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
