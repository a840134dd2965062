"""A builder that compiles nothing: it returns a fixed binary. For testing
everything above the builders without a toolchain or an engine."""

from __future__ import annotations

import os
import shutil

from ..gosource import BINARY, GoBuild
from . import Say


class FakeBuilder:
    name = "fake"

    def __init__(self, binary: str):
        self.binary = binary
        self.jobs: list[GoBuild] = []

    def compile(self, job: GoBuild, out_dir: str, say: Say) -> str:
        self.jobs.append(job)
        output = os.path.join(out_dir, BINARY)
        shutil.copyfile(self.binary, output)
        os.chmod(output, 0o755)
        say(f"fake build of {job.source.root}")
        return output
