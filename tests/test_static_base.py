"""The `static` base: static-bare plus Debian's CA certificates and time
zones, shipped as data files in layers/ (see ocibuild/oci/bases.py and
scripts/update-bases).

Checked here: the same bytes on every build whatever SOURCE_DATE_EPOCH; the
data files' recorded sha256 refusing a modified file; hostile archive
content refused; the certificates and zones present with their modes and
owners and readable (by Python's own zoneinfo and x509 readers); and, in
docker, a static Go program on `static` loading Europe/Berlin, finding more
than 100 system roots and verifying certificates against them, while the
same program on `static-bare` fails. Golden digests: tests/test_bases.py."""

from __future__ import annotations

import datetime
import fnmatch
import hashlib
import io
import json
import lzma
import os
import shutil
import subprocess
import tarfile
import tomllib
import warnings
import zoneinfo
from pathlib import Path

import pytest
from conftest import read_layout, unique_name
from test_bases import BARE_DIFF_ID, STATIC_DIFF_ID, STATIC_GZIP_DIGEST

from ocibuild.errors import BlobError, InputError, OcibuildError
from ocibuild.oci import bases
from ocibuild.oci.bases import archive_entries, builtin_base, builtin_definition, tar_entries
from ocibuild.oci.blobs import WorkStore
from ocibuild.oci.compression import compression

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ROOT / "layers"
BUNDLE = "etc/ssl/certs/ca-certificates.crt"
ZONEINFO = "usr/share/zoneinfo"
ENGINE = pytest.mark.engine


def static_tar(base: str = "static") -> bytes:
    with WorkStore() as store:
        image, _ = builtin_base(base, store, compression("none"))
        with open(store.path(image.layers[0].descriptor.digest), "rb") as f:
            return f.read()


@pytest.fixture(scope="module")
def layer():
    """(members by name, file contents by name) of the static layer."""
    with tarfile.open(fileobj=io.BytesIO(static_tar())) as tf:
        members = {m.name: m for m in tf.getmembers()}
        contents = {m.name: tf.extractfile(m).read() for m in members.values() if m.isfile()}
    return members, contents


def pem_certificates(bundle: bytes) -> list:
    """The certificates of a PEM bundle (cryptography warns that one
    Mozilla root has a serial number RFC 5280 disallows; Go reads it)."""
    from cryptography import x509
    from cryptography.utils import CryptographyDeprecationWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return x509.load_pem_x509_certificates(bundle)


def archive_specs() -> list[dict]:
    return builtin_definition("static")["archives"]


# --- the same bytes, every time ------------------------------------------------------

def test_static_layer_is_the_same_bytes_on_every_build():
    first = static_tar()
    assert static_tar() == first
    assert "sha256:" + hashlib.sha256(first).hexdigest() == STATIC_DIFF_ID


@pytest.mark.parametrize("epoch", [None, "0", "1700000000", "4102444800"])
def test_static_base_layer_ignores_source_date_epoch_in_the_cli(ocibuild, tmp_path, epoch):
    """The CLI, with SOURCE_DATE_EPOCH unset or set to anything: the base
    layer is the golden one (gzip and uncompressed); only the added layer
    and the config carry the time."""
    f = tmp_path / "cc"
    f.write_bytes(b"chaincode")
    env = {} if epoch is None else {"SOURCE_DATE_EPOCH": epoch}
    for comp, want in (("gzip", STATIC_GZIP_DIGEST), ("none", STATIC_DIFF_ID)):
        out = tmp_path / f"l-{comp}"
        r = ocibuild("-q", "assemble", "--add", f"{f}:/usr/local/bin/cc", "--compression", comp,
                     "--output", f"oci:{out}", env=env)
        assert r.returncode == 0, r.stderr
        image = read_layout(out)
        assert image.layer_digests[0] == want
        assert image.diff_ids[0] == STATIC_DIFF_ID


# --- the data files and their records --------------------------------------------------

def test_definition_records_the_debian_packages():
    specs = {s["debian"]["package"]: s for s in archive_specs()}
    assert sorted(specs) == ["ca-certificates", "tzdata"]
    for pkg, spec in specs.items():
        deb = spec["debian"]
        assert deb["version"] and deb["suite"].startswith("bookworm"), deb
        assert deb["pool"].startswith(f"pool/main/{pkg[0]}/{pkg}/{pkg}_{deb['version']}_") and \
            deb["pool"].endswith(".deb"), deb
        assert len(deb["deb_sha256"]) == 64 and int(deb["deb_sha256"], 16) >= 0
        data = (LAYERS / spec["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == spec["sha256"] and len(data) == spec["size"]
        tar = lzma.decompress(data)
        assert hashlib.sha256(tar).hexdigest() == spec["tar_sha256"] and len(tar) == spec["tar_size"]
    # the versions are in the image's history too
    with WorkStore() as store:
        image, _ = builtin_base("static", store, compression("gzip"))
    made = image.config_doc["history"][0]["created_by"]
    for pkg, spec in specs.items():
        assert f"{pkg} {spec['debian']['version']}" in made


def test_data_files_ship_as_package_data():
    """Every data file a definition names matches a package-data pattern of
    ocibuild.builtin_layers in pyproject.toml (else an installed ocibuild
    could not build `static`)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["ocibuild.builtin_layers"]
    assert project["tool"]["setuptools"]["package-dir"]["ocibuild.builtin_layers"] == "layers"
    names = [s["file"] for s in archive_specs()] + [p.name for p in LAYERS.glob("*.json")]
    for name in names:
        assert any(fnmatch.fnmatch(name, p) for p in patterns), name
    assert {p.name for p in LAYERS.glob("*.tar.xz")} == {s["file"] for s in archive_specs()}


def test_update_bases_is_an_executable_script():
    script = ROOT / "scripts" / "update-bases"
    assert os.access(script, os.X_OK)
    compile(script.read_text(), str(script), "exec")


@pytest.fixture
def layers_copy(tmp_path, monkeypatch):
    """A copy of layers/ that bases.py reads instead of the package's own."""
    copy = tmp_path / "layers"
    shutil.copytree(LAYERS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(bases, "_data", lambda: copy)
    return copy


@pytest.mark.parametrize("name", ["tzdata.tar.xz", "ca-certificates.tar.xz"])
def test_a_modified_data_file_is_refused(layers_copy, name):
    path = layers_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with WorkStore() as store:
        with pytest.raises(BlobError, match=f"{name} is damaged: sha256 .* its definition says"):
            builtin_base("static", store, compression("gzip"))
        # static-bare does not read it
        image, _ = builtin_base("static-bare", store, compression("gzip"))
        assert image.layers[0].diff_id == BARE_DIFF_ID


def test_a_truncated_or_grown_data_file_is_refused(layers_copy):
    path = layers_copy / "tzdata.tar.xz"
    data = path.read_bytes()
    for changed in (data[:-1], data + b"\0"):
        path.write_bytes(changed)
        with WorkStore() as store, pytest.raises(BlobError, match="tzdata.tar.xz is damaged"):
            builtin_base("static", store, compression("gzip"))


def test_the_tar_inside_is_checked_too():
    """A file re-compressed around other content, with its own sha256 updated
    but the tar's left alone, is refused (the tar sha256 and size)."""
    spec = dict(next(s for s in archive_specs() if s["file"] == "tzdata.tar.xz"))
    tar = lzma.decompress((LAYERS / spec["file"]).read_bytes())
    other = bytearray(tar)
    other[len(other) // 2] ^= 1                      # one bit of some file's content: same size
    blob = lzma.compress(bytes(other))
    spec.update(sha256=hashlib.sha256(blob).hexdigest(), size=len(blob))
    with pytest.raises(BlobError, match="the tar in built-in base data tzdata.tar.xz is damaged"):
        archive_entries(spec, blob)
    spec["tar_size"] -= 1                            # a tar longer than recorded: not read past it
    with pytest.raises(BlobError, match="does not hold exactly"):
        archive_entries(spec, blob)


def test_a_missing_data_file_fails(layers_copy):
    (layers_copy / "ca-certificates.tar.xz").unlink()
    with WorkStore() as store, pytest.raises(OSError):
        builtin_base("static", store, compression("gzip"))


def test_extends_merges_and_refuses_loops(layers_copy):
    defn = builtin_definition("static")
    bare = builtin_definition("static-bare")
    assert defn["entries"] == bare["entries"] and defn["config"] == bare["config"]
    assert "archives" not in bare and len(defn["archives"]) == 2 and "extends" not in defn
    bare_file = layers_copy / "static-bare.json"
    looped = {**json.loads(bare_file.read_text()), "extends": "static"}
    bare_file.write_text(json.dumps(looped))
    with pytest.raises(ValueError, match="extends 'static', which is itself or a base extending it"):
        builtin_definition("static")
    bare_file.write_text(json.dumps({**looped, "extends": "nosuch"}))
    with pytest.raises(ValueError, match="extends 'nosuch', which is not a built-in base"):
        builtin_definition("static")


# --- hostile archive content -------------------------------------------------------------

def _member(name, kind=tarfile.REGTYPE, data=b"", mode=0o644, uid=0, gid=0, link="", pax=None):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.linkname = kind, mode, uid, gid, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if pax:
        info.pax_headers = pax
    return info, data


def _tar(*members, fmt=tarfile.USTAR_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def _raw_name(tar: bytes, old: str, new: str) -> bytes:
    """`tar` with a member's name field rewritten in place (tarfile itself
    would not write such names), checksum recomputed."""
    i = tar.index(old.encode().ljust(100, b"\0"))
    header = bytearray(tar[i:i + 512])
    header[0:100] = new.encode().ljust(100, b"\0")
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return tar[:i] + bytes(header) + tar[i + 512:]


HOSTILE = {
    "dotdot": (lambda: _tar(_member("usr/../../etc/shadow", data=b"x")), "normalised"),
    "absolute": (lambda: _raw_name(_tar(_member("Xetc/passwd", data=b"x")), "Xetc/passwd", "/etc/passwd"),
                 "normalised"),
    "dot": (lambda: _tar(_member("./etc/passwd", data=b"x")), "normalised"),
    "double-slash": (lambda: _raw_name(_tar(_member("etcX/passwd", data=b"x")), "etcX/passwd", "etc//passwd"),
                     "normalised"),
    "hard-link": (lambda: _tar(_member("a", data=b"x"), _member("b", tarfile.LNKTYPE, link="a")),
                  "only regular files"),
    "char-device": (lambda: _tar(_member("dev/null", tarfile.CHRTYPE)), "only regular files"),
    "fifo": (lambda: _tar(_member("fifo", tarfile.FIFOTYPE)), "only regular files"),
    "setuid": (lambda: _tar(_member("bin/x", data=b"x", mode=0o4755)), "setuid"),
    "sticky-dir": (lambda: _tar(_member("tmp2", tarfile.DIRTYPE, mode=0o1777)), "sticky"),
    "owner": (lambda: _tar(_member("etc/x", data=b"x", uid=500)), "owner 500:0"),
    "twice": (lambda: _tar(_member("etc/x", data=b"x"), _member("etc/x", data=b"y")), "twice"),
    "absolute-link": (lambda: _tar(_member("zone", tarfile.SYMTYPE, link="/etc/shadow")), "not a relative"),
    "escaping-link": (lambda: _tar(_member("usr/share/z", tarfile.SYMTYPE, link="../../../etc/shadow")),
                      "outside the image root"),
    "pax": (lambda: _tar(_member("etc/x", data=b"x", pax={"comment": "hi"}), fmt=tarfile.PAX_FORMAT),
            "pax"),
}


def _spec_for(tar: bytes) -> tuple[dict, bytes]:
    blob = lzma.compress(tar)
    return ({"file": "hostile.tar.xz", "sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob),
             "tar_sha256": hashlib.sha256(tar).hexdigest(), "tar_size": len(tar)}, blob)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_content_is_refused(case):
    make, why = HOSTILE[case]
    spec, blob = _spec_for(make())
    with pytest.raises(OcibuildError, match=f"hostile.tar.xz: entry .* refused: .*{why}"):
        archive_entries(spec, blob)


def test_hostile_archive_refused_through_the_definition(layers_copy):
    """Consistent digests do not make bad content acceptable: a definition
    naming a tar with a `..` path (and the right sha256s) is refused when
    the base is built."""
    spec, blob = _spec_for(HOSTILE["dotdot"][0]())
    (layers_copy / spec["file"]).write_bytes(blob)
    defn = json.loads((layers_copy / "static.json").read_text())
    defn["archives"].append({**spec, "debian": {"package": "hostile", "version": "1"}})
    (layers_copy / "static.json").write_text(json.dumps(defn))
    with WorkStore() as store, pytest.raises(OcibuildError, match="refused: not a normalised"):
        builtin_base("static", store, compression("gzip"))


def test_an_entry_under_an_archive_symlink_is_refused():
    """A file placed below a symlink of the same archive would be written
    through it by an unpacker: refused when the layer's entries are made."""
    spec, blob = _spec_for(_tar(_member("usr", tarfile.DIRTYPE, mode=0o755),
                                _member("usr/z", tarfile.SYMTYPE, link="."),
                                _member("usr/z/x", data=b"x")))
    entries = archive_entries(spec, blob)
    from ocibuild.oci.entries import with_parents
    with pytest.raises(InputError, match="usr/z is added as a symlink"):
        with_parents(entries)


def test_a_plain_archive_is_read_as_written():
    tar = _tar(_member("etc", tarfile.DIRTYPE, mode=0o755), _member("etc/a", data=b"hello\n"),
               _member("etc/b", tarfile.SYMTYPE, mode=0o777, link="a"), _member("etc/c", data=b"", mode=0o755))
    got = [(e.path, e.kind, oct(e.mode), e.data, e.link) for e in tar_entries(tar, "test")]
    assert got == [("etc", "dir", "0o755", None, ""), ("etc/a", "file", "0o644", b"hello\n", ""),
                   ("etc/b", "symlink", "0o777", None, "a"), ("etc/c", "file", "0o755", b"", "")]


# --- what the layer holds ------------------------------------------------------------------

def test_ca_bundle_is_present_readable_and_complete(layer):
    from cryptography import x509
    members, contents = layer
    m = members[BUNDLE]
    assert (m.type, m.mode, m.uid, m.gid, m.mtime) == (tarfile.REGTYPE, 0o644, 0, 0, 0)
    for d in ("etc/ssl", "etc/ssl/certs"):
        assert (members[d].type, members[d].mode, members[d].uid, members[d].gid) == (tarfile.DIRTYPE, 0o755, 0, 0)
    bundle = contents[BUNDLE]
    certs = pem_certificates(bundle)
    assert len(certs) > 100
    assert bundle.count(b"-----BEGIN CERTIFICATE-----") == bundle.count(b"-----END CERTIFICATE-----") == len(certs)
    assert bundle.endswith(b"-----END CERTIFICATE-----\n")
    assert all(c.issuer == c.subject for c in certs), "a Mozilla root bundle holds self-issued roots only"
    names = {a.value for c in certs for a in c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)}
    assert {"ISRG Root X1", "DigiCert Global Root G2"} <= names
    # only the Mozilla set: no CA of this machine's /usr/local/share/ca-certificates
    assert b"Custom" not in bundle and b"egress" not in bundle.lower()


def test_zoneinfo_is_present_readable_and_without_the_dropped_parts(layer):
    members, contents = layer
    zones = {n: m for n, m in members.items() if n.startswith(ZONEINFO + "/")}
    assert len(zones) > 500
    for name, m in zones.items():
        assert (m.uid, m.gid, m.mtime, m.uname, m.gname) == (0, 0, 0, "", ""), name
        assert m.type in (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE), name
        assert m.mode == {tarfile.REGTYPE: 0o644, tarfile.DIRTYPE: 0o755, tarfile.SYMTYPE: 0o777}[m.type], name
    rel = {n[len(ZONEINFO) + 1:] for n in zones}
    assert not any(r == "right" or r.startswith("right/") for r in rel)
    assert "localtime" not in rel and "tzdata.zi" not in rel
    assert {"zone1970.tab", "zone.tab", "iso3166.tab", "posixrules", "Etc/UTC"} <= rel
    # every symlink leads to something in the layer
    for name, m in zones.items():
        if m.issym():
            target = os.path.normpath(os.path.join(os.path.dirname(name), m.linkname))
            assert target in members, f"{name} -> {m.linkname}"
    assert members[f"{ZONEINFO}/posix/Europe"].linkname == "../Europe"
    # Python's own TZif reader agrees on what Berlin's clock says
    berlin = contents[f"{ZONEINFO}/Europe/Berlin"]
    assert berlin.startswith(b"TZif")
    tz = zoneinfo.ZoneInfo.from_file(io.BytesIO(berlin), key="Europe/Berlin")
    winter = datetime.datetime(2024, 1, 15, 12, tzinfo=tz)
    summer = datetime.datetime(2024, 7, 15, 12, tzinfo=tz)
    assert (winter.utcoffset(), summer.utcoffset()) == (datetime.timedelta(hours=1), datetime.timedelta(hours=2))


def test_static_bare_has_neither(layer):
    with tarfile.open(fileobj=io.BytesIO(static_tar("static-bare"))) as tf:
        names = tf.getnames()
    assert not any(n.startswith(("etc/ssl", "usr/share")) for n in names)
    members, _ = layer
    assert set(names) < set(members)


# --- in a real engine ------------------------------------------------------------------------

PROBE_GO = r'''
// A static program that does what a chaincode needing time zones and TLS
// does: load a zone, read the system roots, verify certificate chains.
package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"time"
)

func verify(path, dnsName string, roots *x509.CertPool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return fmt.Errorf("no certificate in %s", path)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: dnsName})
	if err != nil {
		return err
	}
	top := chains[0][len(chains[0])-1]
	fmt.Printf("verified %s: chain of %d to %q\n", path, len(chains[0]), top.Subject.CommonName)
	return nil
}

func main() {
	failed := false
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		fmt.Println("zone error:", err)
		failed = true
	} else {
		_, winter := time.Date(2024, 1, 15, 12, 0, 0, 0, time.UTC).In(loc).Zone()
		_, summer := time.Date(2024, 7, 15, 12, 0, 0, 0, time.UTC).In(loc).Zone()
		fmt.Printf("Europe/Berlin offset winter %d summer %d\n", winter, summer)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		fmt.Println("pool error:", err)
		pool, failed = x509.NewCertPool(), true
	}
	fmt.Printf("system pool %d certs\n", len(pool.Subjects()))
	// arguments: PEM file and DNS name ("" for none), pairs
	for i := 1; i+1 < len(os.Args); i += 2 {
		if err := verify(os.Args[i], os.Args[i+1], pool); err != nil {
			fmt.Printf("verify %s failed: %v\n", os.Args[i], err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}
'''
LEAF_DNS = "peer0.org1.example.com"


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    """PROBE_GO built with the host's Go: static (CGO_ENABLED=0), reproducible."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("the host Go toolchain (`go`) is not installed; run scripts/setup")
    src = tmp_path_factory.mktemp("probe-src")
    (src / "go.mod").write_text("module probe\n\ngo 1.19\n")
    (src / "main.go").write_text(PROBE_GO)
    out = tmp_path_factory.mktemp("probe") / "probe"
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOPROXY": "off", "GO111MODULE": "on"}
    r = subprocess.run([go, "build", "-trimpath", "-ldflags=-buildid=", "-o", str(out), "."], cwd=src, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"go build of the probe failed:\n{r.stderr}"
    return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory, layer) -> dict[str, Path]:
    """Certificates for the probe, all made offline:
    - `root`: ISRG Root X1 exactly as in static's bundle. Go's Verify finds a
      certificate that is itself in Roots and accepts it as its own chain,
      so this passes only if the bundle was read and parsed into the pool
      (missing or unreadable: an empty pool, "unknown authority").
    - `leaf` (for LEAF_DNS) and its CA `ca`, made here: no Mozilla root will
      sign a test certificate, so this chain verifies only where `ca` is in
      the bundle. On plain `static` it must FAIL (the probe really checks
      signatures against the pool, it does not accept anything); in a
      derived image whose /etc/ssl/certs/ca-certificates.crt is static's
      bundle plus `ca` it must pass (Go reads exactly that file).
    - `bundle`: that extended bundle."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    _, contents = layer
    d = tmp_path_factory.mktemp("pki")
    bundle = contents[BUNDLE]
    isrg = next(c for c in pem_certificates(bundle)
                if [a.value for a in c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["ISRG Root X1"])
    (d / "root.pem").write_bytes(isrg.public_bytes(serialization.Encoding.PEM))

    now = datetime.datetime.now(datetime.UTC)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ocibuild test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LEAF_DNS)])).issuer_name(ca_name)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(LEAF_DNS)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    (d / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (d / "bundle.crt").write_bytes(bundle + ca_pem)
    for p in d.iterdir():
        p.chmod(0o644)
    return {"root": d / "root.pem", "leaf": d / "leaf.pem", "bundle": d / "bundle.crt"}


def _probe_image(ocibuild, engine, cleanup, base, probe, pki, *extra) -> str:
    name = cleanup.image(engine, unique_name(f"probe-{base}") + ":v1")
    r = ocibuild("-q", "assemble", "--base", base, "--add", f"{probe}:/usr/local/bin/probe",
                 "--add", f"{pki['root']}:/probe/root.pem", "--add", f"{pki['leaf']}:/probe/leaf.pem",
                 *extra, "--entrypoint", '["/usr/local/bin/probe"]', "--output", f"docker-daemon:{name}")
    assert r.returncode == 0, r.stderr
    return name


def _run_probe(engine, cleanup, image, *args) -> subprocess.CompletedProcess:
    name = cleanup.container(engine, unique_name("probe").replace("/", "-"))
    return engine("run", "--rm", "--name", name, "--network", "none", image, *args)


@ENGINE
def test_go_program_on_static_has_zones_and_roots(require_engine, engine_cleanup, ocibuild, probe, pki):
    docker = require_engine("docker")
    image = _probe_image(ocibuild, docker, engine_cleanup, "static", probe, pki)
    r = _run_probe(docker, engine_cleanup, image, "/probe/root.pem", "")
    assert r.returncode == 0, f"probe failed on static ({r.returncode}):\n{r.stdout}{r.stderr}"
    assert "Europe/Berlin offset winter 3600 summer 7200" in r.stdout, r.stdout
    count = int(r.stdout.split("system pool ")[1].split()[0])
    assert count > 100, r.stdout
    assert 'verified /probe/root.pem: chain of 1 to "ISRG Root X1"' in r.stdout, r.stdout
    # the test CA's leaf is not trusted by the Mozilla set: verification is real
    r = _run_probe(docker, engine_cleanup, image, "/probe/leaf.pem", LEAF_DNS)
    assert r.returncode == 1, r.stdout
    assert "verify /probe/leaf.pem failed: x509: certificate signed by unknown authority" in r.stdout, r.stdout


@ENGINE
def test_go_program_trusts_what_the_bundle_file_holds(require_engine, engine_cleanup, ocibuild, probe, pki):
    """A derived image whose bundle is static's plus the test CA: the leaf
    verifies for its name, and the pool is one larger: Go reads
    /etc/ssl/certs/ca-certificates.crt, the file the base provides."""
    docker = require_engine("docker")
    image = _probe_image(ocibuild, docker, engine_cleanup, "static", probe, pki,
                         "--add", f"{pki['bundle']}:/{BUNDLE}")
    r = _run_probe(docker, engine_cleanup, image, "/probe/leaf.pem", LEAF_DNS, "/probe/root.pem", "")
    assert r.returncode == 0, f"probe failed on the derived image:\n{r.stdout}{r.stderr}"
    assert 'verified /probe/leaf.pem: chain of 2 to "ocibuild test CA"' in r.stdout, r.stdout
    assert 'verified /probe/root.pem: chain of 1 to "ISRG Root X1"' in r.stdout, r.stdout
    in_static = pki["bundle"].read_bytes().count(b"-----BEGIN CERTIFICATE-----") - 1
    assert f"system pool {in_static + 1} certs" in r.stdout, r.stdout


@ENGINE
def test_same_go_program_fails_on_static_bare(require_engine, engine_cleanup, ocibuild, probe, pki):
    """The discriminating run: on static-bare the zone is unknown, the pool
    is empty and the root does not verify."""
    docker = require_engine("docker")
    image = _probe_image(ocibuild, docker, engine_cleanup, "static-bare", probe, pki)
    r = _run_probe(docker, engine_cleanup, image, "/probe/root.pem", "")
    assert r.returncode == 1, r.stdout
    assert "zone error: unknown time zone Europe/Berlin" in r.stdout, r.stdout
    assert "system pool 0 certs" in r.stdout, r.stdout
    assert "verify /probe/root.pem failed: x509: certificate signed by unknown authority" in r.stdout, r.stdout
