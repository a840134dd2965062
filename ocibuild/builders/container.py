"""What the container builders (docker, podman) share and cost nothing to
import: the Go environment inside the builder and where the source goes."""

from __future__ import annotations

import os
import shutil

from ..gosource import GOPATH, INPUT, GoBuild

CACHE = "/ocibuild-cache"                          # GOCACHE and GOMODCACHE live below it
GOPATH_IN_BUILDER = f"{INPUT}:/usr/share/gocode"   # Debian's Go libraries in the image


def builder_env(job: GoBuild) -> dict[str, str]:
    """The Go environment inside a builder container, caches included."""
    env = job.env(GOPATH_IN_BUILDER if job.source.mode == GOPATH else None)
    env.update(GOCACHE=f"{CACHE}/go-build", GOMODCACHE=f"{CACHE}/mod")
    return env


def source_mount(job: GoBuild) -> tuple[str, str]:
    """(host directory, where it goes in the builder container), read-only.
    Usually the source at its workdir; a GOPATH-mode source that brings its
    own GOPATH tree (a Fabric package: `gopath_root` holding src/) is that
    whole tree, as the GOPATH entry /chaincode/input."""
    if job.source.mode == GOPATH and job.source.gopath_root:
        return job.source.gopath_root, INPUT
    return job.source.root, job.source.workdir


def mirror(source: str, dest: str, skip: str = "") -> None:
    """`source` copied to `dest` as hard links where the file system allows
    (no bytes copied), else as copies; `skip`: a top-level name left out."""
    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, dest, symlinks=True, copy_function=link_or_copy,
                    ignore=lambda d, names: [skip] if d == source and skip in names else [])
