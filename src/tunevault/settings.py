"""Service configuration: one object, built at the edge (CLI or test) and passed down.

Nothing here is read at import time; `Settings()` reads `TUNEVAULT_*` variables when it is
constructed, beneath them the TOML file `config` names (configfile.py), and CLI flags of
the same name override both.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from tunevault.configfile import TomlFile
from tunevault.layout import base_cache_dir, blob_dir, database_file


class Settings(BaseSettings):
    """Every setting of the server and worker; see docs/settings.md."""

    model_config = SettingsConfigDict(env_prefix="TUNEVAULT_", extra="ignore")

    config: Path | None = Field(
        default=None,
        description="A TOML file of settings (keys: these names), read beneath the "
        "environment: a TUNEVAULT_* variable or a flag wins over the file.",
    )

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
    s3_presign_access_key_id: str | None = Field(
        default=None,
        description="Access key id of a read-only S3 identity that signs the presigned URLs "
        "of the redirect mode (every URL shows it). Default: the identity storage reads and "
        "writes with (the AWS chain).",
    )
    s3_presign_secret_access_key: SecretStr | None = Field(
        default=None,
        description="That identity's secret access key; set both or neither.",
    )
    auto_migrate: bool = Field(
        default=True,
        description="Whether serve, worker, keys and gc bring an older database schema to "
        "the newest revision at start (true), or refuse to start, naming `tunevault migrate` "
        "(false: for deployments that migrate in a release step).",
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
    base_cache_dir: Path | None = Field(
        default=None,
        description="Where merges on object storage keep base models between merges "
        "(best on data_dir's filesystem: merges hard-link from it). Default: "
        "data_dir/base-cache.",
    )
    base_cache_gib: float = Field(
        default=50,
        ge=0,
        description="Size budget of the base-model cache in GiB, least recently used out; "
        "0 turns it off (every merge fetches its base).",
    )
    build_workers: int = Field(
        default=1,
        ge=0,
        description="Build worker threads inside `tunevault serve` (0: run `tunevault worker`).",
    )
    worker_metrics_address: str | None = Field(
        default=None,
        description="HOST:PORT where `tunevault worker` serves /metrics (read with an "
        "`operator` key, as the server's). Default: no metrics port.",
    )
    derived_budget_bytes: int = Field(
        default=0,
        ge=0,
        description="Bytes of derived data (archives, merged files) the store keeps built; "
        "past it gc and every build evict the least recently downloaded archives, rebuilt "
        "on their next download (0: no budget, nothing is evicted).",
    )
    derived_evict_grace_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="An archive built or downloaded (a download's start and its end both "
        "count) within this time is never evicted; keep it above presign_seconds and the "
        "longest download from S3 (docs/storage.md).",
    )
    rebuild_hold_seconds: float = Field(
        default=40.0,
        ge=0,
        le=55,
        description="How long a download without `Prefer: respond-async` (tunevault's client "
        "sends it) waits inside the request for an evicted archive's rebuild (when its "
        "estimate fits) before answering 409 with Retry-After; under the together SDK's 60 s "
        "read timeout.",
    )
    audit_retention_days: float = Field(
        default=0,
        ge=0,
        description="`tunevault gc` deletes download audit rows older than this many days, as "
        "`tunevault audit prune` does (0: gc keeps every row).",
    )
    job_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long a build job stays claimed without a heartbeat before another "
        "worker may take it over.",
    )
    job_poll_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often an idle worker looks for build jobs anyway: a queued job wakes "
        "it at once; this fallback finds jobs whose worker died.",
    )
    rate_limit_per_minute: int = Field(
        default=60_000,
        ge=0,
        description="Requests per minute an API key without its own limit may make to one "
        "replica (0: no limit). High enough for a fleet of a few hundred inference replicas "
        "sharing one deployment key; set lower per key with `tunevault keys limits`.",
    )
    max_downloads_per_key: int = Field(
        default=1000,
        ge=0,
        description="Downloads an API key without its own limit may have in progress on one "
        "replica (0: no limit).",
    )
    auth_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        description="How long a replica reuses an API key's lookup: a revoked key or a "
        "changed limit takes effect within this time (0: look every key up every request).",
    )
    resolve_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        description="How long a replica reuses what a download or a Hub file resolved to: a "
        "deleted fine-tune or a new checkpoint is seen within this time (0: resolve every "
        "request).",
    )
    memory_cache_bytes: int = Field(
        default=64 << 20,
        ge=0,
        description="Bytes of small local blobs (up to 2 MiB each: an adapter's archive) "
        "each serving process keeps in memory, answered without opening the file "
        "(0: none).",
    )
    processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Serving processes on the one port (`serve --processes`): a master "
        "binds it and forks them; SIGHUP restarts them without dropping a request.",
    )
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated CIDRs of the proxies in front of the server: only from "
        "them are Forwarded / X-Forwarded-For believed (access log, audit, per-client limits).",
    )
    auth_failures_per_minute: int = Field(
        default=60,
        ge=0,
        description="Requests with a missing or wrong API key one client address may make "
        "per minute to one replica (0: no limit).",
    )
    shutdown_grace_seconds: float = Field(
        default=60.0,
        ge=0,
        description="On SIGTERM, how long in-flight requests (downloads) may take to finish.",
    )
    console_session_hours: float = Field(
        default=12.0,
        gt=0,
        le=24 * 30,
        description="How long a web console sign-in lasts before the key is asked for again.",
    )
    share_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key that signs share links; every replica needs the same one. "
        "Default: a random key kept in data_dir/share_secret.",
    )
    log_format: Literal["json", "text"] = Field(
        default="json", description="Log lines as JSON objects (json) or plain text (text)."
    )
    log_level: str = Field(default="INFO", description="Python logging level.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: flags, the environment, then the config file they name.
        toml = TomlFile(settings_cls, init_settings, env_settings)
        return init_settings, env_settings, toml, dotenv_settings, file_secret_settings

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_cidrs(cls, value: object) -> object:
        if isinstance(value, str):  # TUNEVAULT_TRUSTED_PROXIES=10.0.0.0/8,192.168.1.7
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _presign_identity_whole(self) -> Settings:
        if (self.s3_presign_access_key_id is None) != (self.s3_presign_secret_access_key is None):
            raise ValueError(
                "set both s3_presign_access_key_id and s3_presign_secret_access_key, or neither"
            )
        return self

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{database_file(self.data_dir).resolve()}"

    def resolved_base_cache_dir(self) -> Path:
        return self.base_cache_dir or base_cache_dir(self.data_dir)

    def resolved_storage_url(self) -> str:
        return self.storage_url or blob_dir(self.data_dir).resolve().as_uri()
