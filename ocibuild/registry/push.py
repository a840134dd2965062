"""`--output docker://HOST/REPO:TAG`: the distribution-spec push as an Output.

stage() puts every blob (skipped when the repository has it, mounted when
another repository of the registry is known to hold it, else uploaded —
whole, or in chunks that resume where the registry says) and then the
manifest by digest: the registry checks it, yet no tag moves. commit() is
the one step that makes the image visible: the manifest PUT by tag. So a
failed push never leaves a tag on a partial image.

Blobs go in parallel (`RegistryOptions.parallel` at once, the largest
first), each streamed from disk; so do the manifests of one kind (every
platform's, then every referrer's). What must come first still does:
every blob before any manifest, images before their referrers, manifests
before the index, fallback tags before the image's tag. The first failure
stops the other threads at their next step (their upload sessions
cancelled) and is the one reported."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import BinaryIO, TypeVar
from urllib.parse import quote

from ..errors import BlobError, OutputError, RegistryError, TransientError
from ..oci.blobs import Blob, WorkStore
from ..oci.digest import CHUNK, sha256_digest
from ..oci.imageset import ImageSet, Referrer
from ..oci.model import OCI_INDEX, OCI_MANIFEST, Descriptor, canonical_json, index_json
from ..oci.reference import RegistryRef
from ._http import httpx
from .auth import scope
from .cache import BlobCache
from .client import RETRY_STATUS, RegistryClient, Stopped
from .options import RegistryOptions
from .pull import get_index

MAX_MOUNT_SOURCES = 3
FINISH_TIMEOUT = 600.0     # the registry may re-hash a large blob before answering the last PUT
STOP_WAIT = 5.0            # after an interrupt: how long the threads get to cancel their sessions
PROBE = "sha256:" + "0" * 64     # a blob no image has
T = TypeVar("T")


@dataclass
class PushStats:
    """What a push did, blob by blob (for progress lines and tests)."""
    present: int = 0
    mounted: int = 0
    uploaded: int = 0


class RegistryOutput:
    """An Output (ocibuild.outputs); it commits before local files do.

    A multi-platform set goes as its registries expect: every image's blobs
    and manifest by digest, then the index by digest, the tag last. Each
    referrer (an SBOM) is PUT by digest with its `subject`; a registry that
    does not answer with `OCI-Subject` has no referrers API, and gets the
    distribution spec's fallback instead: the tag `sha256-<subject hex>` on
    an index listing the subject's referrers (updated in commit, before the
    image's tag)."""
    commit_first = True
    single_platform = False

    def __init__(self, ref: RegistryRef, options: RegistryOptions,
                 client: RegistryClient | None = None):
        self.ref = ref
        self.target = ref
        self.options = options
        self.stats = PushStats()
        self.written = 0
        self._client = client
        self._images: ImageSet | None = None
        self._fallback: list[Referrer] = []     # referrers the registry did not index itself

    @property
    def client(self) -> RegistryClient:
        if self._client is None:
            self._client = RegistryClient(self.target.host, self.options)
        return self._client

    @property
    def scopes(self) -> frozenset:
        return frozenset({scope(self.target.repo, "pull,push")})

    def check(self) -> None:
        """Reach the registry and authenticate for a push before anything is
        built: HEAD a blob no image has (404 is the expected answer), with a
        token for pull and push where the registry asks for one. No upload
        session is opened, so nothing is left in the registry. One retry
        only: a registry that is down at the start fails fast.

        That HEAD is the first request, so it also finds the scheme and the
        challenge (no separate GET /v2/ before it). An answer without
        `Docker-Distribution-API-Version` (which distribution and most
        registries send) is followed by GET /v2/ all the same, whose 200 or
        401 says a registry answered, not some other web server's 404."""
        try:
            c = self.client
            resp = c.request("HEAD", f"/v2/{self.target.repo}/blobs/{PROBE}", scopes=self.scopes, retries=1)
            if resp.status_code == 401 and c.auth.scheme is None:
                raise c.unknown_scheme(resp)
            if resp.status_code not in (200, 404):
                raise c.error(resp, f"a push to {self.target.name}")
            if not resp.headers.get("docker-distribution-api-version"):
                c.confirm(retries=1)
        except RegistryError as e:
            raise type(e)(f"{self.ref}: {e}") from None

    def stage(self, images: ImageSet, work: WorkStore) -> None:
        t = self.target
        if t.digest and t.digest != images.digest:
            raise OutputError(f"cannot push to {self.ref}: the image is {images.digest}, "
                              f"not the digest {t.digest} the reference names")
        cache = BlobCache(self.options.cache_dir) if self.options.cache_dir else None
        c, jobs = self.client, self.options.parallel
        try:
            c.ping()            # the scheme, known before the threads start (check() found it)
            blobs = sorted(images.blobs(), key=lambda b: -b.descriptor.size)      # the longest first
            hows = in_parallel(c, [partial(push_blob, c, t.repo, b, self.options, cache) for b in blobs], jobs)
            for blob, how in zip(blobs, hows, strict=True):
                setattr(self.stats, how, getattr(self.stats, how) + 1)
                if how == "uploaded":
                    self.written += blob.descriptor.size
            # By digest first: the registry validates each manifest now, before
            # any output commits, and no tag points at it yet.
            in_parallel(c, [partial(put_manifest, c, t, i.digest, i.manifest, i.media_type)
                            for i in images.images], jobs)
            stored = in_parallel(c, [partial(put_manifest, c, t, r.digest, r.manifest, OCI_MANIFEST)
                                     for r in images.referrers], jobs)
            self._fallback = [r for r, s in zip(images.referrers, stored, strict=True) if not s.subject]
            if images.index is not None:
                put_manifest(c, t, images.digest, images.index, OCI_INDEX)
        except RegistryError as e:
            raise type(e)(f"{e}; {t} was left as it was") from None
        self._images = images

    def commit(self) -> None:
        try:
            subjects = dict.fromkeys(r.subject.digest for r in self._fallback)
            in_parallel(self.client, [partial(put_fallback, self.client, self.target, subject,
                                              [r.descriptor for r in self._fallback if r.subject.digest == subject])
                                      for subject in subjects], self.options.parallel)
            if self._images is not None and self.target.tag:
                put_manifest(self.client, self.target, self.target.tag,
                             self._images.manifest, self._images.media_type)
            self._images = None
        finally:
            self.abort()

    def abort(self) -> None:
        self._images = None
        self._fallback = []
        if self._client is not None:
            self._client.close()
            self._client = None


# -- several at once -------------------------------------------------------------

def in_parallel(client: RegistryClient, tasks: Sequence[Callable[[], T]], jobs: int) -> list[T]:
    """Run `tasks` on up to `jobs` threads (in the calling thread when there
    is one task, or one job); their results, in order. The first failure
    sets `client.stopping`, so the others give up at their next step (an
    upload session they had open cancelled), and is raised once they have.
    An interrupt of the calling thread stops them the same way."""
    client.stopping.clear()
    if len(tasks) <= 1 or jobs <= 1:
        return [task() for task in tasks]
    results: list = [None] * len(tasks)
    failures: list[BaseException] = []
    pending = iter(range(len(tasks)))
    lock = threading.Lock()
    running = [1]             # the threads, and this one until it has started them all
    done = threading.Event()

    def finished() -> None:
        with lock:
            running[0] -= 1
            if not running[0]:
                done.set()

    def work() -> None:
        try:
            while not client.stopping.is_set():
                with lock:
                    i = next(pending, None)
                if i is None:
                    return
                try:
                    results[i] = tasks[i]()
                except BaseException as e:
                    with lock:
                        failures.append(e)
                    client.stopping.set()
                    return
        finally:
            finished()

    starting = True
    try:
        for n in range(min(jobs, len(tasks))):
            with lock:
                running[0] += 1
            threading.Thread(target=work, name=f"ocibuild-push-{n}", daemon=True).start()
        starting = False
        finished()
        # An Event, not Thread.join: a join interrupted by Ctrl-C marks the
        # thread it waited for as stopped (CPython 3.11), and a second join
        # would then not wait for it.
        done.wait()
    except BaseException:
        # Ctrl-C (perhaps while the threads were still starting): each stops
        # at its next step and cancels its session; they get STOP_WAIT.
        client.stopping.set()
        if starting:
            finished()
        done.wait(STOP_WAIT)
        raise
    client.stopping.clear()          # every thread is done
    if failures:
        raise failures[0]
    return results


# -- blobs ----------------------------------------------------------------------

def push_blob(client: RegistryClient, repo: str, blob: Blob, options: RegistryOptions,
              cache: BlobCache | None = None) -> str:
    """Make `blob` present in `repo`: "present", "mounted" or "uploaded"."""
    client.check_stopped()
    d = blob.descriptor
    scopes = frozenset({scope(repo, "pull,push")})
    resp = client.request("HEAD", f"/v2/{repo}/blobs/{d.digest}", scopes=scopes)
    if resp.status_code == 200:
        _remember(cache, d.digest, client.host, repo)
        return "present"
    if resp.status_code != 404:
        raise client.error(resp, f"checking for {d.digest} in {client.host}/{repo}")
    location = None
    for source in _mount_sources(cache, d.digest, client.host, repo):
        # Pull access to the source is part of the mount's token.
        mscopes = scopes | {scope(source, "pull")}
        resp = client.request("POST", f"/v2/{repo}/blobs/uploads/?mount={quote(d.digest, safe=':')}"
                              f"&from={quote(source, safe='/')}", scopes=mscopes)
        if resp.status_code == 201:
            _remember(cache, d.digest, client.host, repo)
            return "mounted"
        if resp.status_code == 202:      # not mounted: an upload session instead
            location = _location(resp)
            break
    if d.size > options.chunk_size:
        _chunked(client, repo, blob, scopes, options, location)
    else:
        _monolithic(client, repo, blob, scopes, options, location)
    _remember(cache, d.digest, client.host, repo)
    return "uploaded"


def _chunk_body(src: _Source, offset: int, n: int) -> Callable[[], Iterator[bytes]]:
    return lambda: src.chunks(offset, n)


def _monolithic(client: RegistryClient, repo: str, blob: Blob, scopes: frozenset,
                options: RegistryOptions, location: str | None) -> None:
    """POST, then PUT ?digest= with the whole blob. A failed PUT may have
    left part of the bytes in its session, so a retry opens a new one."""
    d = blob.descriptor
    src = _Source(blob, client.stopping)
    try:
        for attempt in range(options.retries + 1):
            try:
                client.check_stopped()
                if location is None:
                    location = _start(client, repo, scopes)
                resp = client.request(
                    "PUT", _with_digest(location, d.digest), scopes=scopes, retries=0,
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(d.size)},
                    body=lambda: src.chunks(0, d.size), timeout=FINISH_TIMEOUT)
                if resp.status_code in (201, 204):
                    return
                raise client.error(resp, f"the upload of {d.digest} to {client.host}/{repo}")
            except TransientError as e:
                src.drop()
                if location is not None:
                    _cancel(client, location, scopes)
                    location = None
                if attempt == options.retries:
                    raise e.after(attempt + 1) from None
                client.pause(attempt)
            except RegistryError:
                _cancel(client, location, scopes)
                raise
    finally:
        src.close()


def _chunked(client: RegistryClient, repo: str, blob: Blob, scopes: frozenset,
             options: RegistryOptions, location: str | None) -> None:
    """POST, PATCH chunk by chunk (Content-Range), PUT ?digest=. After a
    failure, ask the session where it stands (GET → Range) and go on from
    there; start over only if the registry cannot say. Attempts are counted
    since the last chunk that got through."""
    d = blob.descriptor
    src = _Source(blob, client.stopping)
    offset, attempt, resync = 0, 0, False
    try:
        while True:
            try:
                if location is None:
                    location, offset, resync = _start(client, repo, scopes), 0, False
                elif resync:
                    location, offset = _status(client, location, scopes)
                    resync = False
                    if location is None:
                        continue
                while offset < d.size:
                    client.check_stopped()
                    n = min(options.chunk_size, d.size - offset)
                    resp = client.request(
                        "PATCH", location, scopes=scopes, retries=0,
                        headers={"Content-Type": "application/octet-stream",
                                 "Content-Range": f"{offset}-{offset + n - 1}",
                                 "Content-Length": str(n)},
                        body=_chunk_body(src, offset, n))
                    if resp.status_code == 416:      # out of step with the session: a new one
                        _cancel(client, location, scopes)
                        location = None
                        raise TransientError(f"{client.host} refused chunk {offset}-{offset + n - 1} "
                                             f"of {d.digest} (416)")
                    if resp.status_code != 202:
                        raise client.error(resp, f"a chunk of {d.digest} for {client.host}/{repo}")
                    location = _location(resp, location)
                    offset = _range_end(resp.headers.get("range"), offset + n)
                    attempt = 0
                resp = client.request("PUT", _with_digest(location, d.digest), scopes=scopes,
                                      retries=0, headers={"Content-Length": "0"}, body=b"",
                                      timeout=FINISH_TIMEOUT)
                if resp.status_code in (201, 204):
                    return
                raise client.error(resp, f"the upload of {d.digest} to {client.host}/{repo}")
            except TransientError as e:
                src.drop()
                if attempt >= options.retries:
                    if location is not None:
                        _cancel(client, location, scopes)
                    raise e.after(attempt + 1) from None
                try:
                    client.pause(attempt)
                except Stopped:              # another blob failed meanwhile: this session goes too
                    _cancel(client, location, scopes)
                    raise
                attempt += 1
                resync = location is not None
            except RegistryError:
                _cancel(client, location, scopes)
                raise
    finally:
        src.close()


def _status(client: RegistryClient, location: str, scopes: frozenset) -> tuple[str | None, int]:
    """Where an upload session stands: (its new location, the next offset),
    or (None, 0) when it is gone or cannot say — then the upload starts over."""
    resp = client.request("GET", location, scopes=scopes, retries=0)
    if resp.status_code != 204 or not resp.headers.get("range"):
        if resp.status_code in RETRY_STATUS:
            raise client.error(resp, "asking an upload session where it stands")
        _cancel(client, location, scopes)
        return None, 0
    # distribution says "0-0" both for an empty session and for one byte:
    # take the lower; a wrong guess gets a 416, and a new session.
    end = _range_end(resp.headers["range"], 0)
    return _location(resp, location), (0 if end == 1 else end)


def _start(client: RegistryClient, repo: str, scopes: frozenset) -> str:
    resp = client.request("POST", f"/v2/{repo}/blobs/uploads/", scopes=scopes, retries=0)
    if resp.status_code != 202:
        raise client.error(resp, f"starting an upload to {client.host}/{repo}")
    return _location(resp)


def _cancel(client: RegistryClient, location: str | None, scopes: frozenset) -> None:
    """Best effort: the registry expires abandoned sessions anyway."""
    if not location:
        return
    try:
        client.request("DELETE", location, scopes=scopes, retries=0, reauth=False).close()
    except RegistryError:
        pass


def _location(resp: httpx.Response, previous: str | None = None) -> str:
    """The session's next URL: Location, which may be relative (to the
    request), with its query (the registry's upload state) kept as is."""
    loc = resp.headers.get("location")
    if not loc:
        if previous:
            return previous
        raise RegistryError(f"{resp.url.netloc.decode()} opened an upload session without a Location")
    return str(resp.url.join(loc))


def _with_digest(location: str, digest: str) -> str:
    return location + ("&" if "?" in location else "?") + "digest=" + quote(digest, safe=":")


def _range_end(value: str | None, default: int) -> int:
    """The offset after "0-N" (a Range header of an upload): N + 1."""
    if not value:
        return default
    try:
        return int(value.strip().removeprefix("bytes=").split("-", 1)[1]) + 1
    except (IndexError, ValueError):
        return default


class _Source:
    """A blob's bytes from any offset, read from one open stream while the
    upload moves forward; reopened (and skipped ahead) only after a failure.
    Chunks of at most 1 MiB: memory stays flat whatever the blob's size.
    Once `stopping` is set, the next chunk raises Stopped instead (the
    request is abandoned mid-body; its session is then cancelled)."""

    def __init__(self, blob: Blob, stopping: threading.Event | None = None):
        self.blob = blob
        self.stopping = stopping
        self._f: BinaryIO | None = None
        self._pos = 0

    def chunks(self, offset: int, n: int) -> Iterator[bytes]:
        if self._f is None or self._pos != offset:
            self.drop()
            self._f = self.blob.open()
            self._pos = 0
            self._skip(offset)
        left = n
        while left > 0:
            if self.stopping is not None and self.stopping.is_set():
                raise Stopped()
            data = self._f.read(min(CHUNK, left))
            if not data:
                raise BlobError(f"{self.blob.where} is shorter than its {self.blob.descriptor.size} bytes")
            self._pos += len(data)
            left -= len(data)
            yield data

    def _skip(self, offset: int) -> None:
        f = self._f
        assert f is not None
        if offset and getattr(f, "seekable", lambda: False)():
            f.seek(offset)
            self._pos = offset
            return
        while self._pos < offset:        # a verifying reader: read through, still verified
            data = f.read(min(CHUNK, offset - self._pos))
            if not data:
                raise BlobError(f"{self.blob.where} is shorter than its {self.blob.descriptor.size} bytes")
            self._pos += len(data)

    def drop(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    close = drop


# -- manifests ------------------------------------------------------------------

@dataclass(frozen=True)
class Stored:
    digest: str
    subject: str        # the OCI-Subject the registry answered with: it indexes referrers itself


def put_manifest(client: RegistryClient, target: RegistryRef, reference: str,
                 data: bytes, media_type: str) -> Stored:
    """PUT a manifest or index by tag or digest, with its own media type;
    the registry must store exactly these bytes (same digest)."""
    digest = sha256_digest(data)
    repo = target.repo
    resp = client.request("PUT", f"/v2/{repo}/manifests/{reference}",
                          scopes=frozenset({scope(repo, "pull,push")}),
                          headers={"Content-Type": media_type}, body=data)
    if resp.status_code not in (200, 201, 202, 204):
        raise client.error(resp, f"the manifest {digest} for {client.host}/{repo}"
                                 + (f":{reference}" if not reference.startswith("sha256:") else ""))
    got = resp.headers.get("docker-content-digest")
    if got and got != digest:
        raise RegistryError(f"{client.host} stored the manifest for {client.host}/{repo} as {got}, "
                            f"not {digest}: it changed the bytes; the image was not pushed as built")
    return Stored(digest, resp.headers.get("oci-subject", ""))


def fallback_tag(subject: str) -> str:
    """The distribution spec's referrers tag for a registry without the API."""
    algorithm, _, hexa = subject.partition(":")
    return f"{algorithm}-{hexa}"


def put_fallback(client: RegistryClient, target: RegistryRef, subject: str, add: list[Descriptor]) -> None:
    """Add `add` to the index the fallback tag of `subject` names (made when
    there is none), keeping the referrers others attached before."""
    tag = fallback_tag(subject)
    have = get_index(client, target.repo, tag)
    kept = [d for d in have if d.get("digest") not in {a.digest for a in add}]
    doc = json.loads(index_json([]))
    doc["manifests"] = kept + [d.to_json() for d in add]
    put_manifest(client, target, tag, canonical_json(doc), OCI_INDEX)


def _mount_sources(cache: BlobCache | None, digest: str, host: str, repo: str) -> list[str]:
    if cache is None:
        return []
    found = []
    for name in reversed(cache.locations(digest)):
        h, _, r = name.partition("/")
        if h == host and r and r != repo and r not in found:
            found.append(r)
    return found[:MAX_MOUNT_SOURCES]


def _remember(cache: BlobCache | None, digest: str, host: str, repo: str) -> None:
    if cache is not None:
        cache.remember(digest, host, repo)
