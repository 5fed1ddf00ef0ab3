"""The one exception tree of tunevault, shared by server, client and CLI.

Each class carries its HTTP status, Together's error `type` and a stable string `code`.
The server turns any of them into Together's envelope
`{"error": {"message", "type", "param", "code"}}`; the client rebuilds the same class
from `code`; the CLI maps the branches to exit codes.

    TunevaultError                      500 internal_error
    ├── InvalidRequest                  400 invalid_request
    │   ├── InvalidManifest             400 invalid_manifest
    │   ├── MergeRefused                400 merge_refused
    │   └── DigestMismatch              400 digest_mismatch
    ├── Unauthenticated                 401 invalid_api_key
    ├── PermissionDenied                403 insufficient_scope
    ├── NotFound                        404 not_found
    │   ├── FineTuneNotFound            404 fine_tune_not_found
    │   ├── CheckpointNotFound          404 checkpoint_not_found
    │   ├── BaseModelNotFound           404 base_model_not_found
    │   ├── ShareLinkNotFound           404 share_link_not_found
    │   ├── RepositoryNotFound          404 repository_not_found
    │   ├── RevisionNotFound            404 revision_not_found
    │   └── EntryNotFound               404 entry_not_found
    ├── Conflict                        409 conflict
    │   ├── ArchiveNotReady             409 archive_not_ready
    │   ├── CheckpointNotReady          409 checkpoint_not_ready
    │   └── UploadOffsetMismatch        409 upload_offset_mismatch
    ├── ShareLinkGone                   410 share_link_gone
    ├── PayloadTooLarge                 413 payload_too_large
    │   └── QuotaExceeded               413 quota_exceeded
    ├── RangeNotSatisfiable             416 range_not_satisfiable
    ├── RateLimited                     429 rate_limited
    ├── StorageUnavailable              503 storage_unavailable
    ├── DatabaseUnavailable             503 database_unavailable
    ├── SchemaOutdated                  503 schema_outdated
    ├── InsufficientStorage             507 insufficient_storage
    └── IntegrityError                  500 integrity_error
"""

from __future__ import annotations

from typing import Any, ClassVar


class TunevaultError(Exception):
    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    code: ClassVar[str] = "internal_error"
    client_side: ClassVar[bool] = False  # raised by the client only, never sent by a server
    registry: ClassVar[dict[str, type[TunevaultError]]] = {}

    def __init__(
        self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}  # extra response headers (Retry-After, Content-Range)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        TunevaultError.registry[cls.code] = cls

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    @classmethod
    def from_envelope(cls, status: int, body: Any) -> TunevaultError:
        """Rebuild the server's exception from a response body (client side)."""
        err = body.get("error") if isinstance(body, dict) else None
        if not isinstance(err, dict):
            return TunevaultError(f"HTTP {status}: {str(body)[:200]}")
        klass = cls.registry.get(str(err.get("code")), None)
        message = str(err.get("message") or f"HTTP {status}")
        param = err.get("param") if isinstance(err.get("param"), str) else None
        if klass is None:
            klass = _by_status.get(status, TunevaultError)
        return klass(message, param=param)


TunevaultError.registry["internal_error"] = TunevaultError


class InvalidRequest(TunevaultError):
    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class InvalidManifest(InvalidRequest):
    code = "invalid_manifest"


class MergeRefused(InvalidRequest):
    """The base model and adapter cannot be merged exactly (shape, dtype, unsupported option)."""

    code = "merge_refused"


class DigestMismatch(InvalidRequest):
    code = "digest_mismatch"


class Unauthenticated(TunevaultError):
    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class KeyExpired(Unauthenticated):
    code = "key_expired"


class PermissionDenied(TunevaultError):
    status = 403
    error_type = "permission_error"
    code = "insufficient_scope"


class NotFound(TunevaultError):
    status = 404
    error_type = "not_found_error"
    code = "not_found"


class FineTuneNotFound(NotFound):
    code = "fine_tune_not_found"


class CheckpointNotFound(NotFound):
    code = "checkpoint_not_found"


class BaseModelNotFound(NotFound):
    code = "base_model_not_found"


class ShareLinkNotFound(NotFound):
    """A share link that was never issued, or one altered: its signature does not match."""

    code = "share_link_not_found"


class ShareLinkGone(TunevaultError):
    """A share link past its expiry, or revoked."""

    status = 410
    error_type = "invalid_request_error"
    code = "share_link_gone"


class RepositoryNotFound(NotFound):
    """Hub protocol: no fine-tune or base model by that repo id in the caller's organization."""

    code = "repository_not_found"


class RevisionNotFound(NotFound):
    """Hub protocol: the repo has no checkpoint by that revision name or commit id."""

    code = "revision_not_found"


class EntryNotFound(NotFound):
    """Hub protocol: the revision has no file (or folder) at that path."""

    code = "entry_not_found"


class Conflict(TunevaultError):
    status = 409
    error_type = "conflict_error"
    code = "conflict"


class ArchiveNotReady(Conflict):
    code = "archive_not_ready"


class CheckpointNotReady(Conflict):
    """The checkpoint's files are still being made (a merge is running)."""

    code = "checkpoint_not_ready"


class UploadOffsetMismatch(Conflict):
    code = "upload_offset_mismatch"


class PayloadTooLarge(TunevaultError):
    status = 413
    error_type = "invalid_request_error"
    code = "payload_too_large"


class QuotaExceeded(PayloadTooLarge):
    """An upload would take the organization's source bytes past its quota."""

    code = "quota_exceeded"


class RangeNotSatisfiable(TunevaultError):
    status = 416
    error_type = "invalid_request_error"
    code = "range_not_satisfiable"


class RateLimited(TunevaultError):
    status = 429
    error_type = "rate_limit_error"
    code = "rate_limited"


class StorageUnavailable(TunevaultError):
    status = 503
    error_type = "server_error"
    code = "storage_unavailable"


class DatabaseUnavailable(TunevaultError):
    status = 503
    error_type = "server_error"
    code = "database_unavailable"


class SchemaOutdated(TunevaultError):
    """The database schema is not the revision this tunevault needs (auto_migrate off):
    the process refuses to start."""

    status = 503
    error_type = "server_error"
    code = "schema_outdated"


class InsufficientStorage(TunevaultError):
    status = 507
    error_type = "server_error"
    code = "insufficient_storage"


class IntegrityError(TunevaultError):
    """Bytes do not match their digest or size: a download in the client, or a stored
    blob that rotted, which fails its archive build (and downloads of that archive)."""

    error_type = "integrity_error"
    code = "integrity_error"


class RebuildMismatch(IntegrityError):
    """An evicted archive was rebuilt to other bytes than it had: never served."""

    code = "rebuild_mismatch"


_by_status: dict[int, type[TunevaultError]] = {
    400: InvalidRequest,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    410: ShareLinkGone,
    413: PayloadTooLarge,
    416: RangeNotSatisfiable,
    429: RateLimited,
    503: StorageUnavailable,
    507: InsufficientStorage,
}
