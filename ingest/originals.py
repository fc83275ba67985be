"""The originals one piece of work stores (an ingest call, an upload request), each pinned from before it is
stored until its document is written, its job holds it, or its file fails: another request releasing an
original it no longer uses (a replaced version) can never delete one this work is about to reference.

    originals = Originals(blobs, release, holder="upload")
    digest = originals.put(data)     # pinned, then stored
    originals.written(digest)        # a document (or a queued job) names it now: unpinned, kept
    originals.release(digest)        # its file failed or was refused: unpinned and deleted unless used elsewhere
    originals.close()                # the work is over: whatever is still pinned is unpinned
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from .blobs import BlobStore, digest_of


class Originals:
    def __init__(self, blobs: BlobStore, release: Callable[[str], None], *, holder: str) -> None:
        """`release(digest)` deletes an original nothing uses any more (the ingestor's `release_quietly`);
        `holder` names the work in the pins (a unique suffix is added)."""
        self.blobs = blobs
        self._release = release
        self.holder = f"{holder}-{uuid.uuid4().hex}"
        self.held: set[str] = set()

    def put(self, data: bytes) -> str:
        digest = digest_of(data)
        self.blobs.pin(digest, self.holder)  # before it exists: no release can slip in between
        self.held.add(digest)
        return self.blobs.put(data)

    def written(self, digest: str) -> None:
        """A document (or a queued job) names it now, which keeps it from here on."""
        if digest in self.held:
            self.held.discard(digest)
            self.blobs.unpin(digest, self.holder)

    def release(self, digest: str) -> None:
        """Its file failed or was refused: the original goes, unless something else uses it."""
        self.written(digest)
        self._release(digest)

    def close(self) -> None:
        for digest in list(self.held):
            self.written(digest)
