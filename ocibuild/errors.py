"""The one exception tree. The CLI turns any of these into `error: <message>`
and exits non-zero; nothing else in ocibuild prints an error."""

from __future__ import annotations


class OcibuildError(Exception):
    """Root of every error ocibuild reports to its user."""


class InputError(OcibuildError):
    """A flag, path or reference given by the user is wrong."""


class PackageError(InputError):
    """A chaincode package was refused. `entry` is the archive entry at fault
    (or ""), `rule` the rule it broke; the message says both on one line."""

    def __init__(self, message: str, entry: str = "", rule: str = ""):
        super().__init__(message)
        self.entry = entry
        self.rule = rule


class BlobError(OcibuildError):
    """Content read back does not match its descriptor (digest or size)."""


class OutputError(OcibuildError):
    """An output could not be written; nothing of it was left behind."""


class PartialWriteError(OutputError):
    """Some outputs were committed before another failed (or the run was
    interrupted): the message says exactly which were written."""

    def __init__(self, written: list[str], not_written: list[str], cause: BaseException):
        self.written, self.not_written = written, not_written
        self.interrupted = isinstance(cause, KeyboardInterrupt)
        why = "interrupted" if self.interrupted else str(cause).removesuffix("; nothing was written")
        verb = "was" if len(written) == 1 else "were"
        super().__init__(f"{why}; {', '.join(written)} {verb} written, {', '.join(not_written)} not")


class EngineError(OcibuildError):
    """A container engine (docker, podman) is missing or refused a request."""


class RegistryError(OcibuildError):
    """A registry could not be reached, refused a request, or answered
    something unusable. The message says which registry and what to do."""


class TransientError(RegistryError):
    """A failure that may pass: a dropped or refused connection, a 5xx or
    429. Raised once the retries are spent, or at once where the caller
    retries a larger step itself (an upload session)."""

    def after(self, attempts: int) -> TransientError:
        """The same error, saying how many attempts were made."""
        return TransientError(f"{self} (gave up after {attempts} attempts)") if attempts > 1 else self


class BuildError(OcibuildError):
    """Compiling the chaincode failed. The compiler's messages were shown as
    progress and are kept in `output`; the one-line message is made from the
    fields: which builder, its exit code, the first file:line the compiler
    named (`position`), a `hint` when the cause is known (then it replaces
    the pointer to the messages), and whether the messages were `shown`."""

    def __init__(self, builder: str, exit_code: int | None = None, output: str = "",
                 position: str = "", hint: str = "", shown: bool = True, command: str = "go build"):
        self.builder, self.exit_code, self.output = builder, exit_code, output
        self.position, self.hint, self.shown, self.command = position, hint, shown, command
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where = "on the host" if self.builder == "host" else f"in the {self.builder} builder"
        head = f"{self.command} failed {where}" + (f" (exit {self.exit_code})" if self.exit_code is not None else "")
        if self.hint:
            return f"{head}: {self.hint}"
        at = f" at {self.position}" if self.position else ""
        more = ("see the compiler messages above" if self.shown
                else "run without -q to see all of the compiler's messages")
        return f"{head}{at}; {more}"

    def __str__(self) -> str:
        return self.message
