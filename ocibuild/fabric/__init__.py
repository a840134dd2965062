"""Hyperledger Fabric knowledge, engine-free: chaincode packages read as
untrusted input (lifecycle .tar.gz, legacy ChaincodeDeploymentSpec, or a
directory), the Go source the peer would build from them, the names a peer
computes (package ID, image name), the conventions of its chaincode images,
and lifecycle packages written deterministically (golang, ccaas, k8s)."""

from ..errors import PackageError
from .common import LABEL_RULE, Limits, valid_label
from .names import package_id, package_id_of, peer_image_name
from .package import (
                      CHAINCODE_TYPES,
                      DIRECTORY,
                      LEGACY,
                      LIFECYCLE,
                      ChaincodePackage,
                      go_source,
                      open_package,
                      read_lifecycle_metadata,
)
from .writer import write_ccaas, write_golang, write_k8s

__all__ = [
    "CHAINCODE_TYPES", "DIRECTORY", "LABEL_RULE", "LEGACY", "LIFECYCLE", "ChaincodePackage", "Limits",
    "PackageError", "go_source", "open_package", "package_id", "package_id_of", "peer_image_name",
    "read_lifecycle_metadata", "valid_label", "write_ccaas", "write_golang", "write_k8s",
]
