"""Frozen records passed between the metadata store, the routes and the builders."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Scope(StrEnum):
    READ = "read"
    PUBLISH = "publish"
    ADMIN = "admin"
    # The server's operator: process-wide views across organizations (/metrics). Never
    # implied by admin, which any organization's own administrator holds.
    OPERATOR = "operator"


class JobKind(StrEnum):
    """A build job: `archive` packs a checkpoint, `merge` makes a merged checkpoint's
    archive, `merge_files` stores its files as blobs (for the Hub protocol's reads)."""

    ARCHIVE = "archive"
    MERGE = "merge"
    MERGE_FILES = "merge_files"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class ArchiveFormat(StrEnum):
    """Where an archive's `SHA256SUMS` member sits. First when every file's digest is known
    before packing (uploads); last in a merged archive packed as it is merged, so that the
    merge runs once (docs/merge.md). An archive is rebuilt in the format it was built in."""

    SUMS_FIRST = "tv-archive-1"
    SUMS_LAST = "tv-archive-2"


class Kind(StrEnum):
    """What a checkpoint holds; the values are the `checkpoint` query parameter's."""

    ADAPTER = "adapter"
    MERGED = "merged"
    MODEL_OUTPUT = "model_output_path"


# The `kind` of a download that sent a built archive; a Hub file's is `hub:<kind>`.
ARCHIVE_KINDS = frozenset(k.value for k in Kind)

FT_STATUSES = (
    "pending",
    "queued",
    "running",
    "compressing",
    "uploading",
    "cancel_requested",
    "cancelled",
    "error",
    "completed",
)


@dataclass(frozen=True)
class Organization:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    id: str
    org_id: str
    name: str
    scopes: frozenset[Scope]
    created_at: datetime
    revoked_at: datetime | None
    limits: KeyLimitOverrides = field(default_factory=lambda: KeyLimitOverrides())
    expires_at: datetime | None = None


@dataclass(frozen=True)
class KeyLimitOverrides:
    """A key's own limits; None takes the server's default, 0 means no limit."""

    requests_per_minute: int | None = None
    max_downloads: int | None = None


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from the bearer token on every request."""

    key_id: str
    key_name: str
    org_id: str
    org_name: str
    scopes: frozenset[Scope]
    limits: KeyLimitOverrides = field(default_factory=lambda: KeyLimitOverrides())
    expires_at: datetime | None = None


@dataclass(frozen=True)
class FineTune:
    id: str
    org_id: str
    model: str
    model_output_name: str
    suffix: str | None
    status: str
    training_type: str  # "Lora" or "Full"
    lora_r: int | None
    lora_alpha: int | None
    lora_dropout: float | None
    lora_trainable_modules: str | None
    created_at: datetime
    updated_at: datetime
    external_base: bool = False  # a LoRA whose base is not in the store: never merged

    @property
    def is_lora(self) -> bool:
        return self.training_type == "Lora"

    @property
    def natural_kind(self) -> Kind:
        """What `checkpoint=default` means: the merged model of a LoRA job (its adapter when
        the base lives elsewhere), else the output."""
        if not self.is_lora:
            return Kind.MODEL_OUTPUT
        return Kind.ADAPTER if self.external_base else Kind.MERGED


@dataclass(frozen=True)
class Event:
    created_at: datetime
    level: str
    type: str
    message: str
    step: int | None = None


@dataclass(frozen=True)
class NewEvent:
    type: str
    message: str
    level: str = "info"
    step: int | None = None
    client_id: str | None = None  # the publisher's id for the row: sent again, it is skipped


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Checkpoint:
    id: int
    ft_id: str
    step: int
    kind: Kind
    final: bool
    created_at: datetime
    files: tuple[FileEntry, ...] = field(default=())


@dataclass(frozen=True)
class Archive:
    checkpoint_id: int
    storage_key: str
    sha256: str
    size: int
    created_at: datetime
    format: ArchiveFormat


@dataclass(frozen=True)
class MetricRow:
    step: int
    values: dict[str, Any]
    client_id: str | None = None  # the publisher's id for the row: sent again, it is skipped


@dataclass(frozen=True)
class BaseModel:
    """A base model registered by an organization, that merges of its LoRA adapters need."""

    id: int
    org_id: str
    name: str
    created_at: datetime
    files: tuple[FileEntry, ...] = field(default=())


@dataclass(frozen=True)
class BuildJob:
    """A row of the build queue (tunevault.service.worker runs them)."""

    id: int
    checkpoint_id: int
    kind: JobKind
    state: JobState
    attempts: int
    lease_owner: str | None
    error_code: str | None
    error_message: str | None
    taken_from: str | None = None  # set by a claim: the worker whose expired lease it took


@dataclass(frozen=True)
class DownloadRecord:
    created_at: datetime
    org_id: str
    key_id: str
    ft_id: str
    step: int
    kind: str
    archive_sha256: str
    range_start: int
    bytes_planned: int
    bytes_sent: int
    status: int  # 200/206 sent, 307 redirected, 499 the client went away
    mode: str
    client: str | None
    user_agent: str | None
    id: int = 0


@dataclass(frozen=True)
class OrgUsage:
    """An organization's stored bytes: uploads (never rebuilt) and what builds made."""

    org_id: str
    org: str
    source_bytes: int  # blobs it uploaded: adapters, full outputs, base models
    archive_bytes: int  # archives of its checkpoints
    merged_bytes: int  # the files of its merged checkpoints
    source_quota_bytes: int | None  # None: no quota
    # archives the derived budget evicted, not rebuilt since (tunevault.service.cache)
    evicted_archives: int = 0
    evicted_bytes: int = 0

    @property
    def derived_bytes(self) -> int:
        return self.archive_bytes + self.merged_bytes

    def as_json(self) -> dict[str, Any]:
        """What the usage route and `tunevault usage --json` print."""
        return {
            "org_id": self.org_id,
            "org": self.org,
            "source_bytes": self.source_bytes,
            "derived_bytes": self.derived_bytes,
            "archive_bytes": self.archive_bytes,
            "merged_bytes": self.merged_bytes,
            "source_quota_bytes": self.source_quota_bytes,
            "evicted_archives": self.evicted_archives,
            "evicted_bytes": self.evicted_bytes,
        }


@dataclass(frozen=True)
class Retention:
    """Keep the newest `keep_last` intermediate steps, drop those older than
    `max_age_days`; None: no such rule."""

    keep_last: int | None = None
    max_age_days: int | None = None


@dataclass(frozen=True)
class IntermediateStep:
    """A step of a fine-tune with no final checkpoint, and the checkpoints it holds."""

    ft_id: str
    org_id: str
    step: int
    created_at: datetime  # its newest checkpoint's
    checkpoint_ids: tuple[int, ...]
    kinds: tuple[str, ...]
    policy: Retention  # the fine-tune's own, else its organization's


@dataclass(frozen=True)
class ShareLink:
    """A signed, expiring link to one checkpoint's archive (service/shares.py)."""

    id: str
    org_id: str
    checkpoint_id: int
    ft_id: str
    step: int
    kind: Kind
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None

    @property
    def audit_key(self) -> str:
        """What the download audit records as the downloader's key."""
        return f"share:{self.id}"


@dataclass(frozen=True)
class ShareTarget:
    """A checkpoint a link may point at; archive_size None while its archive is unbuilt."""

    ft_id: str
    step: int
    archive_size: int | None
