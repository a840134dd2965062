"""ocibuild: write OCI images for Fabric chaincode directly, without a daemon."""

__version__ = "0.1.0"
