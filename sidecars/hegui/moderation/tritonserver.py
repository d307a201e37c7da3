"""Start and stop a real Triton Inference Server with hegui's model repository, on loopback.

Used by the tests and by developers; in a cluster Triton runs as its own Deployment. The server is
the `tritonserver` binary shipped in the `nvidia-pytriton` wheel, which runs on CPU with two
settings (see shared/design/brief.md, "Real parts"):

- the Python backend needs its stub for this interpreter's version next to
  `libtriton_python.so`; we build a private backend directory (links to the wheel's files plus
  a copy of the stub) instead of writing into the installed wheel;
- `LD_LIBRARY_PATH` must name the directory of the running interpreter's `libpython3.X.so`,
  otherwise the stub loads the system's libpython and fails inside `multiprocessing`.

The stub also needs numpy<2 (it is built against numpy 1.x), which `start` checks.

`PYTHONPATH` carries this interpreter's import path so that the model files can import
`hegui.moderation` and numpy. Ports are free ones picked on 127.0.0.1, never the fixed
8000/8001/8002.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

#: hegui's model repository (lexicon, pii), in the source tree.
MODEL_REPOSITORY = Path(__file__).resolve().parents[2] / "triton" / "models"


class TritonUnavailable(RuntimeError):
    """The tritonserver binary is not installed (the nvidia-pytriton wheel is missing)."""


def pytriton_root() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonUnavailable("the nvidia-pytriton wheel (which carries tritonserver) is not "
                                "installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    if not (root / "tritonserver" / "bin" / "tritonserver").is_file():
        raise TritonUnavailable(f"no tritonserver binary under {root}/tritonserver/bin")
    return root


def check_numpy() -> None:
    """The wheel's Python backend stub is built against numpy 1.x; under numpy 2 every model
    loads and then its stub dies on the first request ("Stub process is not healthy")."""
    try:
        numpy_version = importlib.metadata.version("numpy")
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError("numpy is not installed; the Triton Python backend needs it") from None
    if int(numpy_version.split(".")[0]) >= 2:
        raise RuntimeError(f"numpy {numpy_version} is installed; the Python backend stub of the "
                           "nvidia-pytriton wheel needs numpy<2")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _backend_dir(root: Path, into: Path) -> Path:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonUnavailable(f"the wheel has no Python backend stub for Python {version}")
    python = into / "backends" / "python"
    python.mkdir(parents=True)
    for item in (root / "tritonserver" / "backends" / "python").iterdir():
        if item.name != "__pycache__":
            (python / item.name).symlink_to(item)
    shutil.copy2(stub, python / "triton_python_backend_stub")
    return into / "backends"


@dataclass
class TritonServer:
    model_repository: Path = MODEL_REPOSITORY
    log_verbose: int = 0
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0
    workdir: Path | None = None
    #: More tritonserver options, e.g. --model-control-mode=explicit to load new versions.
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "tritonserver.log"

    def environment(self, root: Path) -> dict[str, str]:
        env = dict(os.environ)
        libdir = str(sysconfig.get_config_var("LIBDIR") or "")
        libs = [libdir, str(root.parent / "nvidia_pytriton.libs"), env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
        env["HEGUI_TRITON_PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        return env

    def command(self, root: Path, backends: Path) -> list[str]:
        return [str(root / "tritonserver" / "bin" / "tritonserver"),
                f"--model-repository={self.model_repository}",
                f"--backend-directory={backends}",
                f"--cache-directory={root / 'tritonserver' / 'caches'}",
                "--http-address=127.0.0.1", f"--http-port={self.http_port}",
                "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
                "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}",
                "--allow-sagemaker=false", "--allow-vertex-ai=false",
                "--exit-on-error=true", "--strict-readiness=true",
                f"--log-verbose={self.log_verbose}", *self.extra_args]

    def start(self, timeout: float = 120.0) -> TritonServer:
        root = pytriton_root()
        check_numpy()
        self.workdir = Path(tempfile.mkdtemp(prefix="hegui-triton-"))
        backends = _backend_dir(root, self.workdir)
        ports = {free_port() for _ in range(3)}
        while len(ports) < 3:
            ports.add(free_port())
        self.http_port, self.grpc_port, self.metrics_port = sorted(ports)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(self.command(root, backends), stdout=log,
                                            stderr=subprocess.STDOUT, env=self.environment(root),
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}:\n"
                                   + self.log_tail())
            if self.ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"tritonserver not ready after {timeout}s:\n{self.log_tail()}")

    def ready(self) -> bool:
        url = f"http://{self.http_url}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, size: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would: the fail-mode tests use it."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is not None and self.process.poll() is None:
            # The process group holds the backend stubs too.
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
