"""Hyperledger Fabric knowledge, engine-free: chaincode packages read as
untrusted input (package.py: lifecycle .tar.gz, legacy ChaincodeDeploymentSpec
via cds.py, or a directory; extract.py: the untrusted-tar reader), the Go
source the peer would build from them, the names a peer computes (names.py:
package ID, image name), the conventions of its chaincode images
(conventions.py), lifecycle packages written deterministically (writer.py:
golang, ccaas, k8s), and what they share (common.py: limits, label rule).

Import from the modules themselves: this file imports nothing, so a command
that needs only the limits or the conventions does not load the readers."""
