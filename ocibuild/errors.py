"""The one exception tree. The CLI turns any of these into `error: <message>`."""


class OcibuildError(Exception):
    """Root of every error ocibuild reports to its user."""


class InputError(OcibuildError):
    """A flag, path or reference given by the user is wrong."""


class BlobError(OcibuildError):
    """Content read back does not match its descriptor (digest or size)."""


class OutputError(OcibuildError):
    """An output could not be written; nothing of it was left behind."""


class EngineError(OcibuildError):
    """A container engine (docker, podman) is missing or refused a request."""


class BuildError(OcibuildError):
    """Compiling the chaincode failed; the compiler's own messages were shown
    and are kept in `output` (to recognise, e.g., a missing network)."""

    def __init__(self, message: str, output: str = ""):
        super().__init__(message)
        self.output = output
