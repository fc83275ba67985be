"""Originals of ingested files, stored once each and addressed by the SHA-256 of their bytes.

Every file ingested (from the CLI, an upload, a queued job) is put here before it
is parsed, so a collection can be rebuilt from its originals with other settings
(`ragkb reindex`) and a document's file can be served back (`GET
/v1/documents/{id}/file`). A document's chunks name their original in the `blob`
metadata field; a queued job pins the original it carries (`pin`) until it ends.

`BlobStore` is the small interface an S3-compatible backend would implement; the
one backend today keeps files under `<data_dir>/blobs`:

    blobs/sha256/ab/abcdef...    the bytes (written to a temporary name, then renamed: never half a file)
    blobs/pins/abcdef.../<name>  one empty file per job that still needs the original

Whether an original may go is decided from what uses it, not from a counter that a
crash could leave wrong: `Ingestor.release_blob` deletes it when no document of any
collection names it and no job pins it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from .config import Settings
from .errors import RagkbError

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_HOLDER = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class BlobNotFound(RagkbError):
    """No original is stored under this digest (never stored, or released)."""


def digest_of(data: bytes) -> str:
    """The address of an original: the hex SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def _check_digest(digest: str) -> str:
    if not _DIGEST.match(digest):
        raise BlobNotFound(f"not a blob reference: {digest!r} (64 lowercase hex characters of SHA-256)")
    return digest


class BlobStore(Protocol):
    """Content-addressed originals. Every method is safe to call from several processes at once."""

    def put(self, data: bytes) -> str:
        """Store the bytes (once: storing them again is a no-op) and return their digest."""

    def get(self, digest: str) -> bytes:
        """The bytes of an original, or `BlobNotFound`."""

    def local_path(self, digest: str) -> Path | None:
        """A file on this machine holding the original, to stream it (None for a remote backend)."""

    def exists(self, digest: str) -> bool: ...

    def delete(self, digest: str) -> bool:
        """Remove an original (True if it was there). Callers decide first that nothing uses it."""

    def pin(self, digest: str, holder: str) -> None:
        """Mark the original as needed by `holder` (a job id) until `unpin`."""

    def unpin(self, digest: str, holder: str) -> None: ...

    def pinned(self, digest: str) -> bool: ...

    def digests(self) -> Iterator[str]:
        """Every stored digest (for garbage collection and tests)."""


class LocalBlobStore:
    """Originals as files under a directory (by default `<data_dir>/blobs`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "sha256"
        self.pins = root / "pins"

    def _path(self, digest: str) -> Path:
        _check_digest(digest)
        return self.objects / digest[:2] / digest

    def put(self, data: bytes) -> str:
        digest = digest_of(data)
        path = self._path(digest)
        if path.exists():
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)  # atomic: a reader sees the whole file or none
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def get(self, digest: str) -> bytes:
        try:
            return self._path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(f"no original stored under {digest[:12]}... (it was released or never stored)") from None

    def local_path(self, digest: str) -> Path | None:
        path = self._path(digest)
        return path if path.exists() else None

    def exists(self, digest: str) -> bool:
        return self._path(digest).exists()

    def delete(self, digest: str) -> bool:
        try:
            self._path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def _pin_dir(self, digest: str) -> Path:
        return self.pins / _check_digest(digest)

    def pin(self, digest: str, holder: str) -> None:
        if not _HOLDER.match(holder):
            raise ValueError(f"bad pin holder {holder!r}")
        folder = self._pin_dir(digest)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / holder).touch()

    def unpin(self, digest: str, holder: str) -> None:
        folder = self._pin_dir(digest)
        (folder / holder).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # other holders remain, or it is gone already
            folder.rmdir()

    def pinned(self, digest: str) -> bool:
        folder = self._pin_dir(digest)
        return folder.is_dir() and any(folder.iterdir())

    def digests(self) -> Iterator[str]:
        if not self.objects.is_dir():
            return
        for path in sorted(self.objects.glob("*/*")):
            if _DIGEST.match(path.name):
                yield path.name


def open_blobs(settings: Settings) -> BlobStore:
    """The configured blob store (files under the data dir; the one backend today)."""
    return LocalBlobStore(settings.data_dir / "blobs")
