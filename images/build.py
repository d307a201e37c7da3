#!/usr/bin/env python3
"""Build hegui's images here, without pulling any base image: `images/build.py [NAME...]`.

Each image is defined once, in images/NAME.toml. Its layers, the way distroless images are made:

1. debian: the Debian packages the definition names and their dependencies, *extracted* by
   mmdebstrap (variant `extract`: no maintainer script runs, so no shell is needed or shipped);
   their control files go to /var/lib/dpkg/status.d/ so that scanners see them;
2. python: hegui's dependencies (the core and the definition's extras, from pyproject.toml)
   installed from PyPI with pip into /opt/hegui/lib;
3. hegui: hegui's own wheel, built from this checkout, and its commands in /opt/hegui/bin;
4. files: /etc/passwd and /etc/group (root and the user 65532 every hegui container runs as),
   an empty /tmp, and the definition's [files] (the Triton model repository).

Each layer is cached in .cache/images/layers under the hash of what makes it (the package list,
the requirements, the sources), so a second build of unchanged inputs takes seconds. The result
is .cache/images/NAME.tar, an OCI image layout that also carries docker's manifest.json:
`ctr -n k8s.io images import`, `docker load`, `podman load` and `skopeo copy oci-archive:` take
it. Beside it, NAME.spdx.json (the SBOM: every Debian and Python package with its version and
licence) and NAME.json (digest, sizes, layers). The images run as 65532:65532 and work with a
read-only root filesystem (only /tmp is written; mount an emptyDir there).
"""

from __future__ import annotations

import argparse
import email.parser
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
SOURCES = ("pyproject.toml", "README.md", "operator/hegui", "admission/hegui", "crds/hegui",
           "sidecars/hegui")
SUITE = "bookworm"
MIRROR = os.environ.get("HEGUI_DEBIAN_MIRROR", "http://deb.debian.org/debian")
USER = 65532
PREFIX = "/opt/hegui"
# Bumped when the way a layer is made changes, so that cached layers are remade.
BUILDER_VERSION = "1"
# Debian's documentation, manuals and translations are not needed at run time; the copyright
# files stay (the licences the SBOM names).
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*",
                 "/usr/share/locale/*", "/usr/share/lintian/*", "/usr/share/bug/*")
DPKG_INCLUDES = ("/usr/share/doc/*/copyright",)


def default_out() -> Path:
    """Beside the local cluster's binaries and state (hegui.localcluster.cluster.default_home)."""
    return Path(os.environ.get("HEGUI_CACHE_DIR") or ROOT / ".cache") / "images"


def say(text: str) -> None:
    print(f"[images] {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Definition:
    name: str
    description: str
    debian: list[str]
    extras: list[str]
    entrypoint: list[str]
    cmd: list[str]
    ports: list[int]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    triton_backend: bool = False
    #: False for an image without Python (the pause image): only the debian and files layers.
    python: bool = True

    @classmethod
    def load(cls, name: str) -> Definition:
        path = IMAGES / f"{name}.toml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in IMAGES.glob("*.toml")))
            raise SystemExit(f"images/build.py: no image {name!r} (images/{name}.toml); "
                             f"known: {known}")
        return cls(name=name, **tomllib.loads(path.read_text()))

    def environment(self) -> dict[str, str]:
        if not self.python:
            return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **self.env}
        return {"PATH": f"{PREFIX}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:"
                        "/bin",
                "PYTHONPATH": f"{PREFIX}/lib", "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONUNBUFFERED": "1", "HOME": "/tmp", **self.env}  # noqa: S108


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([BUILDER_VERSION, *parts], sort_keys=True,
                                     default=str).encode()).hexdigest()[:20]


def _run(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], check=True, text=True, **kwargs)


def requirements(extras: Iterable[str]) -> list[str]:
    """hegui's requirements for these extras, as pyproject.toml states them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    return wanted


def source_files() -> list[Path]:
    files: list[Path] = []
    for source in SOURCES:
        path = ROOT / source
        files += [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
            and p.suffix != ".pyc")
    return files


def _files_digest(files: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


# --- layers ---------------------------------------------------------------------------------

@dataclass
class Layer:
    """A gzipped layer tar in the cache, with what the image config and the SBOM need."""

    path: Path
    digest: str  # of the gzipped blob
    diff_id: str  # of the uncompressed tar
    size: int  # of the gzipped blob
    unpacked: int  # bytes of the files in it
    packages: list[dict[str, str]]
    seconds: float = 0.0
    cached: bool = True


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "layers").mkdir(parents=True, exist_ok=True)

    def layer(self, kind: str, key: str, make: Any) -> Layer:
        """The layer of this key, made by `make(directory) -> packages` when not cached."""
        base = self.root / "layers" / f"{kind}-{key}"
        meta = base.with_suffix(".json")
        if meta.is_file() and base.with_suffix(".tar.gz").is_file():
            return Layer(path=base.with_suffix(".tar.gz"), **json.loads(meta.read_text()))
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"hegui-image-{kind}-", dir=self.root) as tmp:
            directory = Path(tmp) / "root"
            directory.mkdir()
            packages = make(directory)
            layer = _pack(directory, base.with_suffix(".tar.gz"), packages)
        layer.seconds = round(time.monotonic() - started, 1)
        layer.cached = False
        meta.write_text(json.dumps({k: v for k, v in layer.__dict__.items()
                                    if k not in ("path", "cached")}))
        return layer


def _pack(directory: Path, target: Path, packages: list[dict[str, str]]) -> Layer:
    """A reproducible tar of the directory (sorted, owned by root), gzipped."""
    raw = io.BytesIO()
    unpacked = 0
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(directory.rglob("*"), key=lambda p: p.relative_to(directory).parts):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(directory)))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if info.isreg():
                unpacked += info.size
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    data = raw.getvalue()
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    blob = gzip.compress(data, compresslevel=6, mtime=0)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    partial.write_bytes(blob)
    partial.rename(target)
    return Layer(path=target, digest="sha256:" + hashlib.sha256(blob).hexdigest(),
                 diff_id=diff_id, size=len(blob), unpacked=unpacked, packages=packages)


def debian_layer(cache: Cache, definition: Definition) -> Layer:
    packages = sorted(definition.debian)

    def make(root: Path) -> list[dict[str, str]]:
        if not shutil.which("mmdebstrap"):
            raise SystemExit("images/build.py: mmdebstrap is missing (dev/apt-packages.txt; "
                             "dev/bootstrap installs it)")
        say(f"{definition.name}: extracting Debian {SUITE} packages {', '.join(packages)} "
            "and their dependencies (mmdebstrap)")
        options = [f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES]
        options += [f"--dpkgopt=path-include={p}" for p in DPKG_INCLUDES]
        _run("mmdebstrap", "--quiet", "--variant=extract", "--skip=cleanup/apt/cache",
             f"--include={','.join(packages)}", *options, SUITE, root, MIRROR,
             stdout=subprocess.DEVNULL)
        found = []
        status = root / "var" / "lib" / "dpkg" / "status.d"
        status.mkdir(parents=True, exist_ok=True)
        for deb in sorted((root / "var" / "cache" / "apt" / "archives").glob("*.deb")):
            control = _run("dpkg-deb", "-f", deb, capture_output=True).stdout
            fields = dict(email.parser.Parser().parsestr(control).items())
            (status / fields["Package"]).write_text(control)
            found.append({"type": "deb", "name": fields["Package"],
                          "version": fields["Version"], "arch": fields["Architecture"],
                          "source": fields.get("Source", fields["Package"]).split()[0],
                          "license": "see /usr/share/doc/" + fields["Package"] + "/copyright"})
        # Package manager state of the build, not of the image.
        for leftover in ("var/cache/apt", "var/lib/apt", "var/log", "etc/apt",
                         "var/cache/ldconfig"):
            shutil.rmtree(root / leftover, ignore_errors=True)
        if not found:
            raise SystemExit("images/build.py: mmdebstrap extracted no package")
        # The dynamic loader's cache, so that libraries resolve as on an installed system.
        if shutil.which("ldconfig"):
            (root / "etc").mkdir(exist_ok=True)
            _run("ldconfig", "-r", root)
        return found

    return cache.layer("debian", _hash(SUITE, MIRROR, packages, DPKG_EXCLUDES), make)


def _python_packages(site: Path) -> list[dict[str, str]]:
    found = []
    for info in sorted(site.glob("*.dist-info")):
        meta = email.parser.Parser().parsestr((info / "METADATA").read_text(errors="replace"))
        licence = meta.get("License-Expression") or meta.get("License") or ""
        if not licence or len(licence) > 100:
            classifiers = [c.rsplit(" :: ", 1)[-1] for c in meta.get_all("Classifier") or []
                           if c.startswith("License ::")]
            licence = " OR ".join(classifiers) or ("see dist-info" if licence else "")
        found.append({"type": "pypi", "name": meta["Name"], "version": meta["Version"],
                      "license": licence})
    return found


def _pip(target: Path, *args: str | Path) -> None:
    _run(sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-warn-script-location", "--no-warn-conflicts", "--target", target,
         "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", *PLATFORMS,
         *args)


# Wheels for Debian bookworm's Python 3.11 and glibc 2.36 (manylinux_2_17 ... manylinux_2_36;
# nvidia-pytriton's are manylinux_2_35), whatever the machine that builds the image.
PLATFORMS = [option for minor in range(36, 4, -1)
             for option in ("--platform", f"manylinux_2_{minor}_x86_64")] + [
    "--platform", "manylinux2014_x86_64", "--platform", "linux_x86_64"]


def python_layer(cache: Cache, definition: Definition) -> Layer:
    wanted = requirements(definition.extras)

    def make(root: Path) -> list[dict[str, str]]:
        say(f"{definition.name}: installing {len(wanted)} requirements from PyPI (pip)")
        site = root / PREFIX.lstrip("/") / "lib"
        _pip(site, *wanted)
        shutil.rmtree(site / "bin", ignore_errors=True)  # scripts with this machine's paths
        if definition.triton_backend:
            _triton_backend(site)
        _compile(site)
        return _python_packages(site)

    backend: str | bool = "python backend stub 0755" if definition.triton_backend else False
    return cache.layer("python", _hash(wanted, backend), make)


def _triton_backend(site: Path) -> None:
    """The Python backend stub for the image's Python beside libtriton_python.so (what
    hegui.moderation.tritonserver does in a private directory at run time)."""
    tritonserver = site / "pytriton" / "tritonserver"
    stub = tritonserver / "python_backend_stubs" / "3.11" / "triton_python_backend_stub"
    target = tritonserver / "backends" / "python" / "triton_python_backend_stub"
    shutil.copy2(stub, target)
    # Executable already: the backend would chmod it at start, which a read-only root refuses.
    target.chmod(0o755)
    shutil.rmtree(tritonserver / "python_backend_stubs")


def _compile(site: Path) -> None:
    # Byte-compiled with hash-checked .pyc files, which stay valid whatever the files' times:
    # the root filesystem is read-only, so Python could never write them at run time.
    _run(sys.executable, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode",
         "unchecked-hash", site, stdout=subprocess.DEVNULL)


def hegui_layer(cache: Cache, definition: Definition) -> Layer:
    files = source_files()

    def make(root: Path) -> list[dict[str, str]]:
        say(f"{definition.name}: building hegui's wheel from this checkout")
        with tempfile.TemporaryDirectory(prefix="hegui-wheel-") as tmp:
            _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", tmp, ROOT)
            (wheel,) = Path(tmp).glob("hegui-*.whl")
            site = root / PREFIX.lstrip("/") / "lib"
            _pip(site, "--no-deps", wheel)
        shutil.rmtree(site / "bin", ignore_errors=True)
        _compile(site)
        scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
        bin_dir = root / PREFIX.lstrip("/") / "bin"
        bin_dir.mkdir(parents=True)
        for name, target in scripts.items():
            module, _, function = target.partition(":")
            script = bin_dir / name
            script.write_text(f"#!/usr/bin/python3.11\nimport sys\nfrom {module} import "
                              f"{function}\nsys.exit({function}())\n")
            script.chmod(0o755)
        return _python_packages(site)

    return cache.layer("hegui", _hash(_files_digest(files)), make)


def files_layer(cache: Cache, definition: Definition) -> Layer:
    sources = {target: ROOT / source for source, target in definition.files.items()}
    copied = [p for s in sources.values() for p in ([s] if s.is_file() else sorted(
        q for q in s.rglob("*") if q.is_file() and "__pycache__" not in q.parts))]

    def make(root: Path) -> list[dict[str, str]]:
        etc = root / "etc"
        etc.mkdir()
        (etc / "passwd").write_text(f"root:x:0:0:root:/root:/sbin/nologin\n"
                                    f"nonroot:x:{USER}:{USER}:nonroot:/tmp:/sbin/nologin\n")
        (etc / "group").write_text(f"root:x:0:\nnonroot:x:{USER}:\n")
        (root / "tmp").mkdir(mode=0o1777)
        (root / "tmp").chmod(0o1777)
        for target, source in sources.items():
            destination = root / target.lstrip("/")
            destination.parent.mkdir(parents=True, exist_ok=True)
            if source.is_file():
                shutil.copy2(source, destination)
            else:
                shutil.copytree(source, destination,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return []

    return cache.layer("files", _hash(USER, sorted(definition.files.items()),
                                      _files_digest(copied)), make)


# --- the image ------------------------------------------------------------------------------

def _blob(out: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _add(out, f"blobs/sha256/{digest.split(':')[1]}", data)
    return digest, len(data)


def _add(out: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    out.addfile(info, io.BytesIO(data))


def assemble(definition: Definition, layers: list[Layer], target: Path, reference: str
             ) -> dict[str, Any]:
    """An OCI image layout in a tar, with docker's manifest.json beside index.json."""
    config = {
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"User": f"{USER}:{USER}", "Entrypoint": definition.entrypoint,
                   "Cmd": definition.cmd, "WorkingDir": "/tmp",  # noqa: S108
                   "Env": [f"{k}={v}" for k, v in definition.environment().items()],
                   "ExposedPorts": {f"{p}/tcp": {} for p in definition.ports},
                   "Labels": {"org.opencontainers.image.title": definition.name,
                              "org.opencontainers.image.description": definition.description,
                              "org.opencontainers.image.licenses": "Apache-2.0"}},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created_by": f"images/build.py: {layer.path.name.split('-')[0]} layer"}
                    for layer in layers],
    }
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    with tarfile.open(partial, "w") as out:
        _add(out, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        config_digest, config_size = _blob(out, json.dumps(config, indent=2).encode())
        for layer in layers:
            info = out.gettarinfo(str(layer.path), arcname=f"blobs/sha256/"
                                  f"{layer.digest.split(':')[1]}")
            info.mode, info.mtime, info.uid, info.gid = 0o644, 0, 0, 0
            with layer.path.open("rb") as handle:
                out.addfile(info, handle)
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": config_digest, "size": config_size},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                "digest": layer.digest, "size": layer.size} for layer in layers]}
        manifest_digest, manifest_size = _blob(out, json.dumps(manifest, indent=2).encode())
        _add(out, "index.json", json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": manifest_digest, "size": manifest_size,
                           "annotations": {"io.containerd.image.name": reference,
                                           "org.opencontainers.image.ref.name":
                                               reference.rpartition(":")[2]}}]},
            indent=2).encode())
        _add(out, "manifest.json", json.dumps([{
            "Config": f"blobs/sha256/{config_digest.split(':')[1]}", "RepoTags": [reference],
            "Layers": [f"blobs/sha256/{layer.digest.split(':')[1]}" for layer in layers]}],
            indent=2).encode())
    partial.rename(target)
    return {"reference": reference, "manifest": manifest_digest, "config": config_digest}


def sbom(definition: Definition, layers: list[Layer], reference: str, digest: str
         ) -> dict[str, Any]:
    """SPDX 2.3: the image, and every Debian and Python package in it."""
    packages: list[dict[str, Any]] = []
    relationships = []
    image_id = "SPDXRef-image"
    for layer in layers:
        for package in layer.packages:
            ident = re.sub(r"[^A-Za-z0-9.-]", "-",
                           f"SPDXRef-{package['type']}-{package['name']}-{package['version']}")
            if package["type"] == "deb":
                purl = (f"pkg:deb/debian/{package['name']}@{package['version']}"
                        f"?arch={package['arch']}&distro=debian-12")
            else:
                purl = f"pkg:pypi/{package['name'].lower()}@{package['version']}"
            packages.append({
                "SPDXID": ident, "name": package["name"], "versionInfo": package["version"],
                "downloadLocation": "NOASSERTION", "licenseConcluded": "NOASSERTION",
                "licenseDeclared": "NOASSERTION", "copyrightText": "NOASSERTION",
                "comment": f"licence: {package['license']}" if package["license"] else "",
                "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER",
                                  "referenceType": "purl", "referenceLocator": purl}]})
            relationships.append({"spdxElementId": image_id, "relationshipType": "CONTAINS",
                                  "relatedSpdxElement": ident})
    packages.insert(0, {
        "SPDXID": image_id, "name": reference, "versionInfo": digest,
        "downloadLocation": "NOASSERTION", "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION", "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER"})
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, digest)
    return {"spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
            "name": f"{definition.name} image",
            "documentNamespace": f"https://hegui.io/spdx/{definition.name}/{namespace}",
            "creationInfo": {"created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                             "creators": ["Tool: hegui-images/build.py"]},
            "packages": packages,
            "relationships": [{"spdxElementId": "SPDXRef-DOCUMENT",
                               "relationshipType": "DESCRIBES",
                               "relatedSpdxElement": image_id}, *relationships]}


def build(name: str, out: Path, tag: str) -> dict[str, Any]:
    definition = Definition.load(name)
    cache = Cache(out)
    started = time.monotonic()
    layers = [debian_layer(cache, definition)]
    if definition.python:
        layers += [python_layer(cache, definition), hegui_layer(cache, definition)]
    layers.append(files_layer(cache, definition))
    reference = f"hegui.io/{name}:{tag}"
    target = out / f"{name}.tar"
    key = _hash([layer.digest for layer in layers], definition.__dict__, reference)
    report_path = out / f"{name}.json"
    previous = json.loads(report_path.read_text()) if report_path.is_file() else {}
    if previous.get("key") != key or not target.is_file():
        ids = assemble(definition, layers, target, reference)
        document = sbom(definition, layers, reference, ids["manifest"])
        (out / f"{name}.spdx.json").write_text(json.dumps(document, indent=1))
    else:
        ids = {k: previous[k] for k in ("reference", "manifest", "config")}
    report = {
        **ids, "key": key, "archive": str(target), "sbom": str(out / f"{name}.spdx.json"),
        "compressed_bytes": sum(layer.size for layer in layers),
        "unpacked_bytes": sum(layer.unpacked for layer in layers),
        "packages": {"deb": sum(p["type"] == "deb" for layer in layers for p in layer.packages),
                     "pypi": sum(p["type"] == "pypi" for layer in layers
                                 for p in layer.packages)},
        "layers": [{"name": layer.path.name, "compressed_bytes": layer.size,
                    "unpacked_bytes": layer.unpacked, "cached": layer.cached,
                    "seconds": layer.seconds} for layer in layers],
        "seconds": round(time.monotonic() - started, 1),
    }
    report_path.write_text(json.dumps(report, indent=2))
    return report


def unpack(report: dict[str, Any], out: Path, rootfs: Path) -> None:
    """The image's layers, in order, as one directory."""
    rootfs.mkdir(parents=True, exist_ok=True)
    for layer in report["layers"]:
        with tarfile.open(out / "layers" / layer["name"], "r:gz") as tar:
            tar.extractall(rootfs, filter="tar")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="images/build.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="images to build (default: every "
                                                 "images/*.toml)")
    parser.add_argument("--out", type=Path, default=default_out(),
                        help="cache and output directory (default: $HEGUI_CACHE_DIR/images, "
                             ".cache/images in the checkout)")
    parser.add_argument("--rootfs", type=Path, metavar="DIR",
                        help="also unpack the image's layers into DIR (the Dockerfiles' build "
                             "stage: `COPY --from=build /rootfs /`); one image only")
    parser.add_argument("--tag", default=tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["project"]["version"])
    args = parser.parse_args(argv)
    names = args.names or sorted(p.stem for p in IMAGES.glob("*.toml"))
    if args.rootfs and len(names) != 1:
        parser.error("--rootfs takes one image")
    for name in names:
        report = build(name, args.out, args.tag)
        if args.rootfs:
            unpack(report, args.out, args.rootfs)
        say(f"{name}: {report['reference']} {report['compressed_bytes'] / 2**20:.0f} MiB "
            f"compressed, {report['unpacked_bytes'] / 2**20:.0f} MiB unpacked, "
            f"{report['packages']['deb']} Debian and {report['packages']['pypi']} Python "
            f"packages, {report['seconds']}s -> {report['archive']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
