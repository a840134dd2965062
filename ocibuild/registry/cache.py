"""The local content-addressed cache of what was pulled (manifests too, so a
base pinned by digest needs no network once cached), and a small table of
which repositories of which registry are known to hold each blob — the hint
that lets a push mount a blob instead of uploading it. Every file is written
aside and renamed into place; a blob is verified before it is renamed."""

from __future__ import annotations

import json
import os
import tempfile
from typing import BinaryIO

from ..errors import BlobError
from ..fsutil import atomic_write, publish, unlink_quietly
from ..oci.digest import CHUNK, HashingWriter, file_digest, hex_of, sha256_digest
from ..oci.model import Descriptor

MAX_LOCATIONS = 16     # a hint, not a history


class BlobCache:
    def __init__(self, root: str):
        self.root = root
        self._blobs = os.path.join(root, "blobs", "sha256")
        self._locations = os.path.join(root, "locations", "sha256")

    def path(self, digest: str) -> str:
        return os.path.join(self._blobs, hex_of(digest))

    def has(self, desc: Descriptor) -> bool:
        try:
            return os.path.getsize(self.path(desc.digest)) == desc.size
        except OSError:
            return False

    def verified(self, desc: Descriptor) -> bool:
        """True when the cache holds `desc` with the right size and digest; a
        damaged copy is removed (and so fetched again)."""
        if not self.has(desc):
            return False
        if file_digest(self.path(desc.digest)) == desc.digest:
            return True
        unlink_quietly(self.path(desc.digest))
        return False

    def read(self, digest: str, limit: int) -> bytes | None:
        """A small cached blob (a manifest), checked against its digest; None
        if absent or damaged (it is then fetched again)."""
        try:
            with open(self.path(digest), "rb") as f:
                data = f.read(limit + 1)
        except OSError:
            return None
        if len(data) > limit or sha256_digest(data) != digest:
            return None
        return data

    def put(self, digest: str, data: bytes) -> None:
        with self.writer(Descriptor("application/octet-stream", digest, len(data)), "blob") as w:
            w.write(data)
            w.finish()

    def writer(self, desc: Descriptor, what: str) -> CacheWriter:
        os.makedirs(self._blobs, exist_ok=True)
        return CacheWriter(self.path(desc.digest), desc, what)

    # -- where blobs are known to be --------------------------------------------

    def locations(self, digest: str) -> list[str]:
        """"host/repo" names known to hold `digest`, most recent last."""
        try:
            with open(os.path.join(self._locations, hex_of(digest)), "rb") as f:
                doc = json.loads(f.read())
        except (OSError, ValueError):
            return []
        return [x for x in doc if isinstance(x, str)] if isinstance(doc, list) else []

    def remember(self, digest: str, host: str, repo: str) -> None:
        """Note that host/repo holds `digest`. Best effort: a cache that
        cannot be written only loses the hint."""
        name = f"{host}/{repo}"
        known = self.locations(digest)
        if known and known[-1] == name:
            return
        known = [x for x in known if x != name][-(MAX_LOCATIONS - 1):] + [name]
        try:
            os.makedirs(self._locations, exist_ok=True)
            atomic_write(os.path.join(self._locations, hex_of(digest)), json.dumps(known).encode())
        except OSError:
            pass


class CacheWriter:
    """One blob being written into the cache: size-bounded and hashed as it
    is written; finish() verifies and renames it into place, otherwise the
    temporary file is removed on exit. restart() begins again (a download
    whose resumption the server refused)."""

    def __init__(self, path: str, desc: Descriptor, what: str):
        self.path, self.desc, self.what = path, desc, what
        fd, self._tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".partial-")
        self._f: BinaryIO = os.fdopen(fd, "wb", buffering=CHUNK)
        self._w = HashingWriter(self._f)

    @property
    def size(self) -> int:
        return self._w.size

    def write(self, data: bytes) -> None:
        if self.size + len(data) > self.desc.size:
            raise BlobError(f"{self.what} is corrupt: more than the {self.desc.size} bytes "
                            "its descriptor says")
        self._w.write(data)

    def restart(self) -> None:
        self._f.seek(0)
        self._f.truncate()
        self._w = HashingWriter(self._f)

    def finish(self) -> str:
        self._f.close()
        got = self._w.digest
        if self.size != self.desc.size:
            raise BlobError(f"{self.what} is truncated: {self.size} of {self.desc.size} bytes")
        if got != self.desc.digest:
            raise BlobError(f"{self.what} is corrupt: its content hashes to {got}, "
                            f"not {self.desc.digest}")
        publish(self._tmp, self.path)
        self._tmp = ""
        return self.path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self._f.closed:
            self._f.close()
        if self._tmp:
            unlink_quietly(self._tmp)
