"""The one exception tree. The CLI turns any of these into `error: <message>`
and exits with the class's `exit_status`; nothing else in ocibuild prints an
error. The codes tell failures apart for scripts (README, Errors → Exit
codes): 1 internal, 2 usage (click's), 3 input, 4 compile, 5 registry,
6 engine, 7 output, 130 interrupted."""

from __future__ import annotations


class OcibuildError(Exception):
    """Root of every error ocibuild reports to its user. `exit_status` is
    what the command exits with: set once per class here, read by the CLI."""

    exit_status = 1              # the root itself: only for a damaged installation (a built-in base)


class InputError(OcibuildError):
    """A flag, path or reference given by the user is wrong."""

    exit_status = 3


class PackageError(InputError):
    """A chaincode package was refused. `entry` is the archive entry at fault
    (or ""), `rule` the rule it broke; the message says both on one line."""

    def __init__(self, message: str, entry: str = "", rule: str = ""):
        super().__init__(message)
        self.entry = entry
        self.rule = rule


class BlobError(OcibuildError):
    """Content read back does not match its descriptor (digest or size):
    bad input, as it comes from an image someone else made."""

    exit_status = 3


class OutputError(OcibuildError):
    """An output could not be written; nothing of it was left behind."""

    exit_status = 7


class PartialWriteError(OutputError):
    """Some outputs were committed before another failed (or the run was
    interrupted): the message says exactly which were written."""

    def __init__(self, written: list[str], not_written: list[str], cause: BaseException):
        self.written, self.not_written = written, not_written
        self.interrupted = isinstance(cause, KeyboardInterrupt)
        if self.interrupted:
            self.exit_status = 130
        why = "interrupted" if self.interrupted else str(cause).removesuffix("; nothing was written")
        verb = "was" if len(written) == 1 else "were"
        super().__init__(f"{why}; {', '.join(written)} {verb} written, {', '.join(not_written)} not")


class EngineError(OcibuildError):
    """A container engine (docker, podman) or the host's toolchain is missing
    or refused a request."""

    exit_status = 6


class RegistryError(OcibuildError):
    """A registry could not be reached, refused a request, or answered
    something unusable. The message says which registry and what to do."""

    exit_status = 5


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

    exit_status = 4

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
