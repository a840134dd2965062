"""Nothing left running, nothing left behind (issue 9, item 4, in part):
the compiler and engine processes ocibuild starts itself die with it, even
after kill -9, and what a killed run left (work directories, staged
archives and layouts) carries its pid, so the next run removes it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import FIXTURES, OCIBUILD, processes_mentioning, wait_for


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_killed_runs_leftovers_are_removed_by_the_next_run(tmp_path, static_binary):
    tmp, out = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir()
    out.mkdir()
    dead, alive = _dead_pid(), os.getpid()
    stale_work = tmp / f"ocibuild-{dead}-abcd1234"
    live_work = tmp / f"ocibuild-{alive}-abcd1234"
    unrelated = tmp / "ocibuild-setup.x1y2z3"
    for d in (stale_work, live_work, unrelated):
        d.mkdir()
        (d / "blob").write_bytes(b"x" * 1000)
    stale_archive = out / f".cc.tar.{dead}-q1w2e3.partial"
    stale_archive.write_bytes(b"half an archive")
    layout = out / "lay"
    env = {**os.environ, "TMPDIR": str(tmp)}
    add = ["--add", f"{static_binary.path}:/usr/local/bin/cc"]
    subprocess.run([OCIBUILD, "-q", "assemble", *add, "--output", f"oci:{layout}:a"], env=env, check=True)
    stale_stage = layout / f".ocibuild-{dead}-r4t5y6.partial"
    stale_stage.mkdir()
    (stale_stage / "big").write_bytes(b"y" * 1000)
    r = subprocess.run([OCIBUILD, "-q", "assemble", *add, "--output", f"oci-archive:{out / 'cc.tar'}",
                        "--output", f"oci:{layout}:b"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not stale_work.exists() and not stale_archive.exists() and not stale_stage.exists()
    assert live_work.exists() and unrelated.exists()      # another live run's, and not ours at all
    assert sorted(os.listdir(tmp)) == sorted([live_work.name, unrelated.name])


def _fake_tool(bin_dir: Path, name: str) -> Path:
    """A stand-in that hangs; its command line names its own path. A shell
    script, so it also runs inside the host builder's sandbox (which sees
    /usr, not this checkout's Python). A `go` is a GOROOT's bin/go, with
    the VERSION file the host builder finds toolchains by (1.19.8, the
    version the chaincode fixture's go line picks; PATH's go comes first)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    fake = bin_dir / name
    fake.write_text("#!/bin/sh\nsleep 300\n")
    fake.chmod(0o755)
    if name == "go":
        (bin_dir.parent / "VERSION").write_text("go1.19.8\n")
    return fake


@pytest.mark.parametrize("builder, tool", [("docker", "docker"), ("host", "go")])
def test_the_compiler_dies_with_a_killed_ocibuild(tmp_path, builder, tool):
    """kill -9 of ocibuild while its `docker buildx build` (or the host's
    `go build`) runs: the child gets the parent-death signal and ends."""
    fake = _fake_tool(tmp_path / "goroot" / "bin", tool)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
    _kill_while_it_runs([OCIBUILD, "-q", "build", str(FIXTURES / "chaincode"), "--builder", builder,
                         "--output", f"oci-archive:{tmp_path / 'o.tar'}"], env, fake, tool)


def _kill_while_it_runs(argv: list, env: dict, fake: Path, what: str) -> None:
    """Run ocibuild; once the stand-in `fake` runs, kill -9 ocibuild; the
    stand-in must end too (the parent-death signal)."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: processes_mentioning(str(fake)), f"the stand-in {what} to start", timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        wait_for(lambda: not processes_mentioning(str(fake)), f"the stand-in {what} to end", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        for line in processes_mentioning(str(fake)):
            os.kill(int(line.split(":")[0]), signal.SIGKILL)


@pytest.mark.engine
@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_an_engine_load_dies_with_a_killed_ocibuild(tmp_path, static_binary, engine, require_engine):
    """kill -9 of ocibuild while python-on-whales runs `ENGINE image load`:
    the client gets the parent-death signal (set through setpriv, as
    python-on-whales takes no preexec_fn) and ends. The stand-in hangs in
    `load` only and passes every other call to the real engine."""
    require_engine(engine)
    real = shutil.which(engine)
    assert real, f"no {engine} on PATH"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / engine
    # exec: the hanging process is the one python-on-whales started (its pid,
    # its parent-death signal); its command line names the stand-in's path.
    fake.write_text("#!/bin/sh\ncase \" $* \" in *\" load \"*)\n"
                    f"  exec /usr/bin/python3 -c 'import time; time.sleep(300)' \"$0\" ;;\nesac\n"
                    f"exec {real} \"$@\"\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
    name = f"localhost/ocibuild-test/killed-load:{os.getpid()}"
    prefix = "docker-daemon" if engine == "docker" else "containers-storage"
    _kill_while_it_runs([OCIBUILD, "-q", "assemble", "--add", f"{static_binary.path}:/usr/local/bin/cc",
                         "--output", f"{prefix}:{name}"], env, fake, f"{engine} load")
