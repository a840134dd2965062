"""Names a Fabric peer computes: the package ID of a lifecycle package, and
the image name it looks for before building chaincode itself."""

from __future__ import annotations

import hashlib
import re

from ..errors import InputError
from .common import Limits

# Characters the peer replaces with '-', and the repository rule it checks.
_NOT_ALLOWED = re.compile(r"[^a-zA-Z0-9_.\-]")
_DOCKER_REPO = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")


def package_id(path: str, limits: Limits = Limits()) -> str:
    """`<label>:<hex sha256 of the whole file>` of a lifecycle package, as the
    peer computes it at install. The package's metadata.json is read and
    checked (label rule, type); its code is not extracted."""
    from .package import read_lifecycle_metadata
    meta, digest = read_lifecycle_metadata(path, limits)
    return f"{meta['label']}:{digest}"


def package_id_of(label: str, sha256_hex: str) -> str:
    return f"{label}:{sha256_hex}"


def peer_image_name(network_id: str, peer_id: str, ccid: str) -> str:
    """The repository name (tag `latest` implied) under which a peer with
    these ids looks for the image of chaincode `ccid` (a package ID, or
    `name:version` for 1.x chaincode):

    the non-empty of network id and peer id, then the ccid, joined with '-';
    every ':' replaced with '-'; the sha256 (hex) of that string; every
    character outside [a-zA-Z0-9-_.] replaced with '-'; `<that>-<hash>`
    lower-cased; refused unless it matches the peer's repository rule
    ^[a-z0-9]+(([._-][a-z0-9]+)+)?$."""
    if not ccid:
        raise InputError("a chaincode id (package ID label:hash, or name:version) is needed for the image name")
    name = ccid
    if network_id and peer_id:
        name = f"{network_id}-{peer_id}-{name}"
    elif network_id:
        name = f"{network_id}-{name}"
    elif peer_id:
        name = f"{peer_id}-{name}"
    name = name.replace(":", "-")
    try:
        digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()
    except UnicodeEncodeError:
        raise InputError("the network id, peer id or chaincode id is not valid text") from None
    image = f"{_NOT_ALLOWED.sub('-', name)}-{digest}".lower()
    if not _DOCKER_REPO.fullmatch(image):
        raise InputError(f"the image name {image!r} breaks Docker's repository naming rules, so a peer "
                         "with these ids cannot use an image for this chaincode (it refuses the same "
                         "name); check the network id, peer id and chaincode id")
    return image
