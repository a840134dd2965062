"""What makes an image one a Fabric peer runs as its own chaincode image:
the binary `chaincode` on PATH and no entrypoint (the peer starts
`chaincode -peer.address=...`), the `chaincode` user (500), the labels and
environment the peer's own build writes, and the package's identity."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..oci.image import ConfigChanges

if TYPE_CHECKING:
    from .package import ChaincodePackage

CHAINCODE_USER = "500:500"              # Fabric's runtime base since 2.5
BINARY_PATH = "/usr/local/bin/chaincode"
INDEXES_PATH = "/META-INF/statedb/couchdb/indexes"   # as in the package
DEFAULT_VERSION = "2.5"

LABEL_TYPE = "org.hyperledger.fabric.chaincode.type"
LABEL_VERSION = "org.hyperledger.fabric.version"
ANN_LABEL = "org.hyperledger.fabric.chaincode.label"
ANN_PACKAGE_ID = "org.hyperledger.fabric.chaincode.package-id"
ANN_TITLE = "org.opencontainers.image.title"


def image_changes(pkg: ChaincodePackage, fabric_version: str) -> ConfigChanges:
    """Config and annotation defaults for a chaincode image (the user's own
    flags win over these)."""
    annotations = {}
    if pkg.label:
        annotations[ANN_LABEL] = pkg.label
        annotations[ANN_TITLE] = pkg.label
    elif pkg.name:
        annotations[ANN_TITLE] = pkg.name
    if pkg.package_id:
        annotations[ANN_PACKAGE_ID] = pkg.package_id
    return ConfigChanges(
        user=CHAINCODE_USER,
        labels={LABEL_TYPE: pkg.type.upper(), LABEL_VERSION: fabric_version},
        env={"CORE_CHAINCODE_BUILDLEVEL": fabric_version},
        annotations=annotations,
    )
