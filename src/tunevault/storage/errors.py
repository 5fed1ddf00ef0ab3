"""What storage raises besides the built-in OSError/FileNotFoundError: its own classes,
with no HTTP in them. The domain translates them (tunevault.service.context.translated)."""


class StorageError(Exception):
    """A failure of the blob store; the message is safe to show a client."""


class BackendUnavailable(StorageError):
    """The store cannot be reached, or refused the request (credentials, permissions)."""


class StorageFull(StorageError):
    """The disk (or quota) under the store has no room for the write."""


class BlobTooLarge(StorageError):
    """The blob exceeds what the backend can hold as one object."""
