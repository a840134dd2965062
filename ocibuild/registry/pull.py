"""`--base docker://HOST/REPO:TAG` or `@sha256:…`: the manifest (the
platform's, from an index), config and layers, fetched into the local cache
and verified as they stream; what is cached is not fetched again. A base
pinned by digest whose blobs are all cached needs no network at all."""

from __future__ import annotations

import json
from urllib.parse import quote

from ..errors import BlobError, InputError, RegistryError, TransientError
from ..oci import documents
from ..oci.blobs import Blob, Layer
from ..oci.digest import sha256_digest
from ..oci.documents import artifact_payloads, config_json, manifest_parts, pick_platform
from ..oci.image import Image
from ..oci.model import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Platform,
    parse_json,
)
from ..oci.reference import RegistryRef
from ._http import httpx
from .auth import scope
from .cache import BlobCache
from .client import RegistryClient
from .options import RegistryOptions

ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))
MAX_MANIFEST = 4 << 20      # the distribution registry's own limit
SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
           "application/vnd.docker.distribution.manifest.v1+prettyjws")


def pull_image(ref: RegistryRef, platform: Platform | None, options: RegistryOptions) -> Image:
    with Puller(ref, options) as p:
        try:
            return p.image(platform or Platform.host())
        except RegistryError as e:
            raise type(e)(f"{p.name}: {e}") from None


class Puller:
    """One pull. The client (and so the network) is made only when something
    is missing from the cache."""

    def __init__(self, ref: RegistryRef, options: RegistryOptions,
                 client: RegistryClient | None = None):
        self.ref, self.options = ref, options
        if not options.cache_dir:
            raise InputError(f"cannot pull {ref}: RegistryOptions has no cache_dir to pull into")
        self.cache = BlobCache(options.cache_dir)
        self.scopes = frozenset({scope(ref.repo, "pull")})
        self._client = client

    @property
    def client(self) -> RegistryClient:
        if self._client is None:
            self._client = RegistryClient(self.ref.host, self.options)
            # As a push's check(): a registry that is down at the start fails
            # fast (one retry); later requests get the full retries.
            self._client.ping(retries=1)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def name(self) -> str:
        return str(self.ref)

    def image(self, platform: Platform) -> Image:
        data, media_type, digest = self.manifest(self.ref.reference)
        if media_type in INDEX_TYPES:
            index = parse_json(data, f"index {digest} of {self.name}")
            desc = pick_platform(index, platform, self.name)
            data, media_type, digest = self.manifest(desc.digest)
        if media_type in SCHEMA1:
            raise InputError(f"{self.name} has an old schema 1 manifest; push it again with a "
                             "current client to use it as a base")
        if media_type not in MANIFEST_TYPES:
            raise InputError(f"{self.name} is a {media_type}, not an image manifest")
        doc = parse_json(data, f"manifest {digest} of {self.name}")
        config_desc, layer_descs = manifest_parts(doc, f"manifest {digest} of {self.name}")
        config = self.blob(config_desc, "config")
        diff_ids = documents.diff_ids(config_json(config.read(), config.where))
        if len(diff_ids) != len(layer_descs):
            raise InputError(f"image {digest} of {self.name} has {len(layer_descs)} layers "
                             f"but {len(diff_ids)} diff_ids in its config")
        layers = []
        for d, diff_id in zip(layer_descs, diff_ids, strict=True):
            b = self.blob(d, "layer")
            layers.append(Layer(d, b.opener, b.where, diff_id=diff_id))
        return Image(data, config, tuple(layers), media_type)

    def referrers(self, subject: str, artifact_type: str) -> list[bytes]:
        """The payloads of the `artifact_type` artifacts attached to `subject`:
        found through the referrers API, or, on a registry without it (404),
        through the fallback tag `sha256-<hex>`."""
        c = self.client
        repo = self.ref.repo
        resp = c.request("GET", f"/v2/{repo}/referrers/{subject}?artifactType={quote(artifact_type, safe='')}",
                         scopes=self.scopes, headers={"Accept": OCI_INDEX})
        if resp.status_code == 200 and len(resp.content) <= MAX_MANIFEST:
            listed = documents.descriptors(parse_json(resp.content, f"the referrers of {subject}"), "manifests",
                                           f"the referrers of {subject} in {self.name}")
        elif resp.status_code in (404, 405):
            algorithm, _, hexa = subject.partition(":")
            listed = [Descriptor.from_json(d) for d in get_index(c, repo, f"{algorithm}-{hexa}")]
        else:
            raise c.error(resp, f"asking {self.name} for the referrers of {subject}")
        found = []
        for d in listed:
            if d.artifact_type != artifact_type:
                continue
            data, _, digest = self.manifest(d.digest)
            found += artifact_payloads(parse_json(data, f"manifest {digest} of {self.name}"), subject,
                                       artifact_type, lambda lay: self.blob(lay, "artifact"), self.name)
        return found

    # -- manifests ------------------------------------------------------------

    def manifest(self, reference: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest or index, from the cache
        when named by digest and cached."""
        pinned = reference.startswith("sha256:")
        data = self.cache.read(reference, MAX_MANIFEST) if pinned else None
        if data is not None:
            return data, _media_type(data, ""), reference
        data, resp = self._get_manifest(reference)
        digest = sha256_digest(data)
        said = resp.headers.get("docker-content-digest", "")
        if (pinned and digest != reference) or (said.startswith("sha256:") and said != digest):
            raise BlobError(f"the manifest of {self.name} from {self.ref.host} is corrupt: it hashes "
                            f"to {digest}, not {reference if pinned else said}")
        media_type = _media_type(data, resp.headers.get("content-type", ""))
        try:
            self.cache.put(digest, data)
        except OSError:
            pass      # an unwritable cache costs a download next time, nothing more
        self.cache.remember(digest, self.ref.host, self.ref.repo)
        return data, media_type, digest

    def _get_manifest(self, reference: str) -> tuple[bytes, httpx.Response]:
        """GET a manifest, bounded; a body cut off on the way is fetched
        again (retried as a blob is), not taken for a broken registry."""
        c = self.client
        attempt = 0
        while True:
            resp = c.request("GET", f"/v2/{self.ref.repo}/manifests/{reference}", scopes=self.scopes,
                             headers={"Accept": ACCEPT}, stream=True)
            try:
                if resp.status_code == 404:
                    raise RegistryError(f"not found{_codes(c, resp)}; check the repository, tag or digest")
                if resp.status_code != 200:
                    raise c.error(resp, f"the pull of {self.name}")
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > MAX_MANIFEST:
                        raise RegistryError(f"the manifest is larger than {MAX_MANIFEST} bytes; refusing it")
                return bytes(body), resp
            except httpx.TransportError as e:
                self._again_after(e, attempt)
                attempt += 1
            finally:
                resp.close()

    def _again_after(self, e: httpx.TransportError, attempt: int) -> None:
        """A connection dropped mid-body: raise if it is not worth another try
        or the retries are spent, else wait before attempt number `attempt` + 2."""
        c = self.client
        err = c.transport_error(e)
        if not isinstance(err, TransientError):
            raise err from None
        if attempt >= self.options.retries:
            raise err.after(attempt + 1) from None
        c.pause(attempt)

    # -- blobs ----------------------------------------------------------------

    def blob(self, desc: Descriptor, kind: str) -> Blob:
        """A blob opened from the cache, fetched first if not there. A cached
        blob is trusted by its digest, not its size: one that no longer
        hashes right (a damaged disk, a hand edit) is fetched again."""
        path = self.cache.path(desc.digest)
        if not self.cache.verified(desc):
            self._fetch(desc, kind)
        self.cache.remember(desc.digest, self.ref.host, self.ref.repo)
        return Blob(desc, lambda: open(path, "rb"),
                    f"{kind} {desc.digest} of {self.name} (cached in {path})")

    def _fetch(self, desc: Descriptor, kind: str) -> None:
        """Stream the blob into the cache, verified; after a dropped
        connection, go on from what arrived (Range) where the server allows."""
        c = self.client
        what = f"{kind} {desc.digest} from {self.ref.host}/{self.ref.repo}"
        url = f"/v2/{self.ref.repo}/blobs/{desc.digest}"
        attempt = 0
        with self.cache.writer(desc, what) as w:
            while True:
                # Identity: the digest is of the bytes as stored, not as re-encoded.
                headers = {"Accept-Encoding": "identity"}
                if w.size:
                    headers["Range"] = f"bytes={w.size}-"
                resp = c.request("GET", url, scopes=self.scopes, headers=headers, stream=True)
                try:
                    if resp.status_code == 404:
                        raise RegistryError(f"{self.ref.host} has no {what}{_codes(c, resp)}")
                    if resp.status_code == 206 and not _starts_at(resp, w.size):
                        w.restart()
                        continue
                    if resp.status_code == 200:
                        w.restart()
                    elif resp.status_code != 206:
                        raise c.error(resp, f"the pull of {what}")
                    for chunk in resp.iter_bytes():      # as they arrive: a drop keeps them
                        w.write(chunk)
                    break
                except httpx.TransportError as e:
                    self._again_after(e, attempt)
                    attempt += 1
                finally:
                    resp.close()
            w.finish()


def get_index(client: RegistryClient, repo: str, reference: str) -> list[dict]:
    """The manifests an index in `repo` lists ([] when there is none)."""
    resp = client.request("GET", f"/v2/{repo}/manifests/{reference}", scopes=frozenset({scope(repo, "pull")}),
                          headers={"Accept": OCI_INDEX})
    if resp.status_code == 404:
        return []
    if resp.status_code != 200:
        raise client.error(resp, f"reading {client.host}/{repo}:{reference}")
    if len(resp.content) > MAX_MANIFEST:
        raise RegistryError(f"{client.host}/{repo}:{reference} is larger than {MAX_MANIFEST} bytes")
    what = f"{client.host}/{repo}:{reference}"
    return [d.to_json() for d in documents.descriptors(parse_json(resp.content, what), "manifests", what)]


def _starts_at(resp: httpx.Response, offset: int) -> bool:
    value = resp.headers.get("content-range", "")      # "bytes 100-999/1000"
    try:
        return int(value.split()[1].split("-")[0]) == offset
    except (IndexError, ValueError):
        return False


def _media_type(data: bytes, content_type: str) -> str:
    """The manifest's own mediaType, else the server's Content-Type, else by shape."""
    try:
        doc = json.loads(data)
    except ValueError:
        doc = {}
    if isinstance(doc, dict) and isinstance(doc.get("mediaType"), str) and doc["mediaType"]:
        return doc["mediaType"]
    ct = content_type.split(";")[0].strip()
    if ct and ct not in ("application/json", "text/plain", "application/octet-stream"):
        return ct
    if isinstance(doc, dict) and doc.get("schemaVersion") == 1:
        return SCHEMA1[0]
    return OCI_INDEX if isinstance(doc, dict) and "manifests" in doc else OCI_MANIFEST


def _codes(client: RegistryClient, resp: httpx.Response) -> str:
    text = client.error_text(resp)
    return f" on {client.host} ({text[2:]})" if text else f" on {client.host}"
