"""Hyperledger Fabric knowledge, engine-free: chaincode packages read as
untrusted input (lifecycle .tar.gz, legacy ChaincodeDeploymentSpec, or a
directory), the Go source the peer would build from them, the names a peer
computes (package ID, image name), and lifecycle packages written
deterministically (golang, ccaas, k8s)."""

from .common import LABEL_RULE, Limits, PackageError, valid_label
from .names import image_name, package_id, package_id_of
from .package import (DIRECTORY, LEGACY, LIFECYCLE, TYPES, ChaincodePackage, go_source,
                      open_package, read_lifecycle_metadata)
from .writer import write_ccaas, write_golang, write_k8s

__all__ = [
    "ChaincodePackage", "DIRECTORY", "LABEL_RULE", "LEGACY", "LIFECYCLE", "Limits", "PackageError",
    "TYPES", "go_source", "image_name", "open_package", "package_id", "package_id_of",
    "read_lifecycle_metadata", "valid_label", "write_ccaas", "write_golang", "write_k8s",
]
