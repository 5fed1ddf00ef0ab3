"""`DIR/.tunevault-push.json`: what a push already did, so that a rerun continues it.

Per server URL: the fine-tune created and the steps done (events, metrics rows, status),
so that a rerun sends only what is left (the server also skips event and metric rows whose
ids it has, so a step done but not recorded here is not doubled), and the manifest of each
checkpoint published, so that a rerun tells an unchanged directory from another training
run before uploading anything (publisher/repush.py). `tunevault push` and the Trainer
callback write the same file, so either resumes what the other published. Beside them, a
cache of file digests keyed by (size, mtime) so a rerun does not hash gigabytes again.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tunevault.publisher.files import LocalFile

STATE_FILE = ".tunevault-push.json"
VERSION = 1


class PushState:
    def __init__(self, root: Path, server: str, data: dict[str, Any]) -> None:
        self.path = root / STATE_FILE
        self.server = server
        self.data = data
        self.run: dict[str, Any] = data.setdefault("servers", {}).setdefault(server, {})
        self.writable = True

    @classmethod
    def load(cls, root: Path, server: str, *, fresh: bool = False) -> PushState:
        path = root / STATE_FILE
        data: dict[str, Any] = {}
        if path.is_file():
            try:
                loaded = json.loads(path.read_text())
            except ValueError:
                loaded = {}  # a torn file from an older crash: start over, nothing is lost
            if isinstance(loaded, dict) and loaded.get("version") == VERSION:
                data = loaded
        data["version"] = VERSION
        state = cls(root, server, data)
        if fresh:
            state.run.clear()
        return state

    @property
    def fine_tune_id(self) -> str | None:
        value = self.run.get("fine_tune_id")
        return value if isinstance(value, str) else None

    def creation_key(self) -> str:
        """The Idempotency-Key for creating this push's fine-tune, saved before it is
        used: a rerun after a lost answer gets the fine-tune that request created."""
        key = self.run.get("creation_key")
        if not isinstance(key, str):
            key = self.run["creation_key"] = f"push:{uuid.uuid4()}"
            self.save()
        return key

    def start(self, ft_id: str) -> None:
        self.run.clear()
        self.run["fine_tune_id"] = ft_id
        self.save()

    def done(self, step: str) -> bool:
        return step in self.run.get("done", [])

    def mark(self, step: str) -> None:
        self.run.setdefault("done", []).append(step)
        self.save()

    def published(self, step: int, kind: str) -> dict[str, str] | None:
        """The manifest (path -> sha256) this directory published at (step, kind), if any."""
        record = self.run.get("published", {}).get(f"{step}:{kind}")
        return record if isinstance(record, dict) else None

    def record_published(self, step: int, kind: str, files: dict[str, str]) -> None:
        self.run.setdefault("published", {})[f"{step}:{kind}"] = files
        self.save()

    @property
    def metrics_sent(self) -> int:
        return int(self.run.get("metrics_sent", 0))

    def add_metrics_sent(self, n: int) -> None:
        self.run["metrics_sent"] = self.metrics_sent + n
        self.save()

    def _key(self, f: LocalFile) -> str:
        return f.source.relative_to(self.path.parent.resolve()).as_posix()

    def cached_digest(self, f: LocalFile) -> str | None:
        hit = self.data.get("digests", {}).get(self._key(f))
        if isinstance(hit, list) and hit[:2] == [f.size, f.mtime_ns]:
            return str(hit[2])
        return None

    def remember_digests(self, files: list[LocalFile], digests: dict[Path, str]) -> None:
        table = self.data.setdefault("digests", {})
        for f in files:
            table[self._key(f)] = [f.size, f.mtime_ns, digests[f.source]]
        self.save()

    def save(self) -> None:
        """Atomic replace; a read-only directory only costs the ability to resume."""
        if not self.writable:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
            tmp.replace(self.path)
        except OSError:
            self.writable = False
