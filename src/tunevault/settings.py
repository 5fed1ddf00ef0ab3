"""Service configuration: one object, built at the edge (CLI or test) and passed down.

Nothing here is read at import time; `Settings()` reads `TUNEVAULT_*` variables when it is
constructed, and CLI flags of the same name override them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tunevault.layout import blob_dir, database_file


class Settings(BaseSettings):
    """Every setting of the server and worker; see docs/settings.md."""

    model_config = SettingsConfigDict(env_prefix="TUNEVAULT_", extra="ignore")

    data_dir: Path = Field(
        default=Path("./data"),
        description="Directory for the embedded defaults: the SQLite file and local blobs.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the metadata database "
        "(sqlite:///path or postgresql+psycopg://...). Default: SQLite in data_dir.",
    )
    storage_url: str | None = Field(
        default=None,
        description="Where blobs live: file:///path or s3://bucket/prefix. "
        "Default: data_dir/blobs.",
    )
    host: str = Field(default="127.0.0.1", description="Address the server binds.")
    port: int = Field(default=8000, description="TCP port the server binds.")
    serve_mode: Literal["proxy", "redirect", "x-accel"] = Field(
        default="proxy",
        description="How archive bytes reach clients: sent by tunevault (proxy), a 307 to a "
        "presigned object-store URL (redirect), or X-Accel-Redirect to nginx (x-accel).",
    )
    x_accel_prefix: str = Field(
        default="/_tunevault_blobs/",
        description="The nginx internal location that maps to the local storage root.",
    )
    presign_seconds: int = Field(
        default=300,
        ge=10,
        le=7 * 24 * 3600,
        description="Lifetime of the presigned URLs of the redirect mode.",
    )
    zstd_level: int = Field(default=3, ge=1, le=22, description="zstd level of archives.")
    zstd_threads: int = Field(
        default=-1, description="zstd worker threads for archive builds (-1: one per core)."
    )
    build_workers: int = Field(
        default=1,
        ge=0,
        description="Build worker threads inside `tunevault serve` (0: run `tunevault worker`).",
    )
    job_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long a build job stays claimed without a heartbeat before another "
        "worker may take it over.",
    )
    job_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often an idle worker looks for new build jobs."
    )
    rate_limit_per_minute: int = Field(
        default=6000,
        ge=0,
        description="Requests per minute one API key may make to one replica (0: no limit).",
    )
    max_downloads_per_key: int = Field(
        default=32,
        ge=0,
        description="Downloads one API key may have in progress on one replica (0: no limit).",
    )
    shutdown_grace_seconds: float = Field(
        default=60.0,
        ge=0,
        description="On SIGTERM, how long in-flight requests (downloads) may take to finish.",
    )
    log_format: Literal["json", "text"] = Field(
        default="json", description="Log lines as JSON objects (json) or plain text (text)."
    )
    log_level: str = Field(default="INFO", description="Python logging level.")

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{database_file(self.data_dir).resolve()}"

    def resolved_storage_url(self) -> str:
        return self.storage_url or blob_dir(self.data_dir).resolve().as_uri()
