"""Warm builder containers: `build` reuses one container per engine,
builder image, network mode and cache; the same digest as a fresh
container; idle stop; a killed or stale one replaced; concurrent builds on
one; `ocibuild builder status|stop`; and the cheap `--builder auto` probes
with their reasons. Real docker, podman and rootless podman."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from conftest import FIXTURES, OCIBUILD, ROOTLESS_USER, printed_digest, run_ocibuild, wait_for
from test_build_cli import needs, out_dir, rootless_env, run_build

CHAINCODE = FIXTURES / "chaincode"
STARTED = re.compile(r"starting builder container (ocibuild-builder-[0-9a-f]+)")
USED = re.compile(r"compiling in builder container (ocibuild-builder-[0-9a-f]+)")
KINDS = [pytest.param(k, marks=(pytest.mark.engine, *needs(k))) for k in ("docker", "podman", "podman-rootless")]


def engine_argv(kind: str, *args: str) -> list[str]:
    if kind == "podman-rootless":
        env = rootless_env()
        return ["runuser", "-u", ROOTLESS_USER, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()],
                "podman", *args]
    return [kind, *args]


def running(kind: str, name: str) -> bool:
    r = subprocess.run(engine_argv(kind, "ps", "--filter", f"name={name}", "--format", "{{.Names}}"),
                       capture_output=True, text=True, timeout=60)
    return name in r.stdout.split()


def container_id(kind: str, name: str) -> str:
    r = subprocess.run(engine_argv(kind, "inspect", "--format", "{{.Id}}", name), capture_output=True, text=True)
    return r.stdout.strip()


def builder_cli(kind: str, *args: str) -> subprocess.CompletedProcess:
    if kind == "podman-rootless":
        env = rootless_env()
        argv = ["runuser", "-u", ROOTLESS_USER, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()],
                str(OCIBUILD), "builder", *args]
        return subprocess.run(argv, capture_output=True, text=True, cwd="/", timeout=300)
    return run_ocibuild("builder", *args)


def build(kind: str, shared, *args: str) -> tuple[str, str]:
    """(digest, the warm container used) of a build of the sample."""
    d = out_dir(shared, "warm", kind)
    r = run_build(kind, CHAINCODE, "--output", f"oci:{d / 'layout'}:cc", *args)
    digest = printed_digest(r)
    m = USED.search(r.stderr)
    return digest, (m.group(1) if m else "")


@pytest.fixture(scope="module", autouse=True)
def stopped_afterwards():
    yield
    for kind in ("docker", "podman", "podman-rootless"):
        builder_cli(kind, "stop")


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_reused_builder_gives_the_fresh_digest(kind, shared):
    warm1, name = build(kind, shared)
    assert name, "the build did not use a warm builder container"
    warm2, again = build(kind, shared)
    assert again == name and running(kind, name)
    fresh, none = build(kind, shared, "--fresh-builder")
    assert none == ""
    assert warm1 == warm2 == fresh
    listed = builder_cli(kind, "status")
    assert listed.returncode == 0 and name in listed.stdout, listed.stdout + listed.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_idle_stop_removes_the_container(kind, shared):
    builder_cli(kind, "stop")
    _, name = build(kind, shared, "--builder-idle", "3")
    assert name
    wait_for(lambda: not running(kind, name), f"{name} to stop after 3 s idle", timeout=60)
    wait_for(lambda: container_id(kind, name) == "", f"{name} to be removed (--rm)", timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_killed_builder_container_is_replaced(kind, shared):
    digest, name = build(kind, shared)
    before = container_id(kind, name)
    subprocess.run(engine_argv(kind, "kill", name), capture_output=True, timeout=60)
    again, name2 = build(kind, shared)
    assert again == digest and name2 == name
    after = container_id(kind, name)
    assert after and after != before, "the dead container was reused"


@pytest.mark.slow
@pytest.mark.parametrize("kind", [k for k in KINDS if k.values[0] != "podman-rootless"])
def test_a_builder_removed_and_restarted_under_a_build(kind, shared):
    """The container goes (removed, as `builder stop` or a crash would)
    while a build compiles in it, and a second build starts its
    replacement at once: the first build's exec was killed, and the
    container it finds is not the one it ran in (started since its exec
    began): it runs again in it. Both builds succeed, with the digest of
    an undisturbed build; nothing is reported as a compile failure."""
    src = FIXTURES / "grpc-gopath"              # a longer compile: time to remove the container under it
    args = ["--import-path", "example.org/chaincode/grpchealth"]
    d0 = out_dir(shared, "undisturbed", kind)
    r = run_build(kind, src, *args, "--output", f"oci:{d0 / 'layout'}:cc")
    want = printed_digest(r)
    name = USED.search(r.stderr).group(1)
    dirs = [out_dir(shared, "disturbed", kind) for _ in range(2)]
    first = subprocess.Popen([str(OCIBUILD), "build", str(src), "--builder", kind, *args,
                              "--output", f"oci:{dirs[0] / 'layout'}:cc"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    try:
        seen = ""
        while "compiling in builder container" not in seen:
            line = first.stderr.readline()
            assert line, "the first build ended before it compiled"
            seen += line
        subprocess.run(engine_argv(kind, "rm", "-f", name), capture_output=True, timeout=60)
        second = run_build(kind, src, *args, "--output", f"oci:{dirs[1] / 'layout'}:cc")
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, seen + err
    assert second.returncode == 0, second.stderr
    assert out.strip() == printed_digest(second) == want


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_two_concurrent_builds_share_one_new_builder(kind, shared):
    builder_cli(kind, "stop")
    dirs = [out_dir(shared, "concurrent", kind) for _ in range(2)]
    if kind == "podman-rootless":
        env = rootless_env()
        base = ["runuser", "-u", ROOTLESS_USER, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()],
                str(OCIBUILD), "build", str(CHAINCODE), "--builder", "podman"]
    else:
        base = [str(OCIBUILD), "build", str(CHAINCODE), "--builder", kind]
    procs = [subprocess.Popen([*base, "--output", f"oci:{d / 'layout'}:cc"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd="/") for d in dirs]
    results = [(p.communicate(timeout=600), p.returncode) for p in procs]
    for (_, err), code in results:
        assert code == 0, err
    digests = {out.strip() for (out, _), _ in results}
    assert len(digests) == 1
    started = [m for (_, err), _ in results for m in STARTED.findall(err)]
    used = {m for (_, err), _ in results for m in USED.findall(err)}
    assert len(started) == 1 and len(used) == 1, (started, used)     # one started it, both used it
    for d in dirs:       # nothing left in the work areas: each build removed its own directory
        assert (d / "layout").is_dir()


@pytest.mark.parametrize("kind", [k for k in KINDS if k.values[0] != "podman-rootless"])
def test_a_warm_build_asks_the_engine_one_inspect_and_the_exec(kind, shared, tmp_path):
    """On a running builder the engine is asked for the builder image (one
    inspect: its ID and labels serve the toolchain, the image check and the
    container's key) and then only the exec; the container is not
    inspected first. Every call goes through a logging stand-in client."""
    import shutil
    real = shutil.which(kind)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    (bin_dir / kind).write_text(f"#!/bin/sh\necho \"$1 $2\" >> {log}\nexec {real} \"$@\"\n")
    (bin_dir / kind).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    image = "localhost/ocibuild/go-builder:bookworm"
    build(kind, shared, "--builder-image", image)                  # warm it
    log.unlink(missing_ok=True)
    d = out_dir(shared, "calls", kind)
    r = run_build(kind, CHAINCODE, "--builder-image", image, "--output", f"oci:{d / 'layout'}:cc", env=env)
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "image inspect" and calls[-1].startswith("exec "), calls
    assert len(calls) == 2, calls


@pytest.mark.slow
@pytest.mark.engine
def test_a_builder_image_replaced_under_its_name_gets_a_new_container(shared):
    name = "localhost/ocibuild-test/warm-builder:moving"
    subprocess.run(["docker", "tag", "localhost/ocibuild/go-builder:bookworm", name], check=True)
    try:
        digest, first = build("docker", shared, "--builder-image", name)
        subprocess.run(["docker", "tag", "localhost/ocibuild/go-builder:go1.24", name], check=True)
        _, second = build("docker", shared, "--builder-image", name)
        assert first and second and first != second, "the builder of the replaced image was reused"
    finally:
        subprocess.run(["docker", "rmi", name], capture_output=True)


@pytest.mark.engine
def test_builder_stop_removes_them(shared):
    _, name = build("docker", shared)
    r = run_ocibuild("builder", "stop")
    assert r.returncode == 0 and name in r.stdout
    assert container_id("docker", name) == ""


# --- --builder auto: cheap probes, right verdicts ---------------------------------------

PROBE = ("import json, os, sys, time; from ocibuild.builders import first_usable; "
         "t = time.monotonic(); r = first_usable(os.environ); "
         "print(json.dumps([r[0], r[1], time.monotonic() - t]))")


def probe(env: dict, user: str | None = None) -> tuple[str, list[str], float]:
    import json
    py = str(OCIBUILD.parent / "python")
    argv = [py, "-c", PROBE]
    if user:
        argv = ["runuser", "-u", user, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()], *argv]
        env = None
    r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd="/", timeout=60)
    assert r.returncode == 0, r.stderr
    name, skipped, took = json.loads(r.stdout)
    return name, skipped, took


@pytest.mark.engine
def test_auto_picks_docker_from_its_socket_quickly():
    name, skipped, took = probe(dict(os.environ))
    assert (name, skipped) == ("docker", [])
    assert took < 1.0      # a guard against running engine CLIs, not a benchmark (the bench measures it)


def test_auto_says_why_docker_was_skipped(tmp_path):
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/nothing.sock"}
    name, skipped, _ = probe(env)
    assert name == "podman" and skipped == [f"docker: no socket at {tmp_path}/nothing.sock"]
    r = run_ocibuild("build", str(FIXTURES / "broken"), "--output", f"oci:{tmp_path / 'l'}", env=env)
    assert f"builder: podman (auto; docker: no socket at {tmp_path}/nothing.sock)" in r.stderr


@pytest.mark.root
def test_a_socket_that_refuses_the_user_is_not_usable():
    """The rootless user cannot open docker's socket: docker is skipped
    with the reason, podman (rootless) is chosen."""
    name, skipped, _ = probe(rootless_env(), user=ROOTLESS_USER)
    assert name == "podman", skipped
    assert skipped == ["docker: permission denied on /var/run/docker.sock"], skipped


def test_a_listening_socket_that_is_no_engine_is_not_usable(tmp_path):
    import socket
    import threading
    path = str(tmp_path / "fake.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def answer():
        conn, _ = srv.accept()
        conn.recv(1024)
        conn.sendall(b"SSH-2.0-OpenSSH\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    name, skipped, _ = probe({**os.environ, "DOCKER_HOST": f"unix://{path}"})
    srv.close()
    assert skipped == [f"docker: {path} is not an engine API"] and name == "podman"



@pytest.mark.root
@pytest.mark.engine
def test_a_full_work_area_is_one_error_and_leaves_nothing(tmpfs, tmp_path):
    """The warm builders' work area (the user's runtime directory) is full:
    one `error:` line, no output, nothing left in the area."""
    import shutil
    runtime = tmpfs("256k")
    src = tmp_path / "src"
    shutil.copytree(CHAINCODE, src)
    (src / "data.bin").write_bytes(os.urandom(600 * 1024))      # more than the area holds
    r = run_ocibuild("build", str(src), "--builder", "docker", "--output", f"oci:{tmp_path / 'l'}",
                     env={"XDG_RUNTIME_DIR": str(runtime)})
    assert r.returncode != 0 and r.stdout == ""
    last = r.stderr.splitlines()[-1]
    assert last.startswith("error: ") and "No space left on device" in last, r.stderr
    assert not (tmp_path / "l").exists()
    area = runtime / "ocibuild" / "builders"
    left = [p.name for d in area.iterdir() if d.is_dir() for p in d.iterdir() if p.name.startswith("build-")]
    assert left == [], left
