"""hegui's images, built here by images/build.py, imported into a containerd of the test's own and
started as Kubernetes would start them: as 65532, on a read-only root filesystem with an empty
/tmp (marker `images`; needs root, Debian's containerd and runc, and mmdebstrap).

The first build downloads Debian's and PyPI's packages (minutes); later builds reuse the layers
cached in .cache/images under the hash of their inputs.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hegui.api.generativeservice import TritonEndpoint, TritonProtocol
from hegui.localcluster.realnode import Containerd, missing_host_binaries
from hegui.moderation.client import TritonModerator
from hegui.moderation.tritonserver import free_port

pytestmark = pytest.mark.images

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / ".cache" / "images"
NAMES = ("hegui", "sidecar", "triton", "pause")
READ_ONLY = ("--read-only", "--mount", "type=tmpfs,src=tmpfs,dst=/tmp,options=rw:nosuid:nodev")


@pytest.fixture(scope="session")
def built() -> dict[str, dict[str, object]]:
    if missing := missing_host_binaries():
        pytest.fail(f"missing {missing}: run dev/bootstrap (dev/apt-packages.txt)")
    subprocess.run([sys.executable, str(ROOT / "images" / "build.py"), *NAMES], check=True,
                   timeout=3600)
    return {name: json.loads((OUT / f"{name}.json").read_text()) for name in NAMES}


@pytest.fixture(scope="session")
def containerd(built: dict[str, dict[str, object]],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    home = tmp_path_factory.mktemp("containerd")
    runtime = Containerd(home)
    runtime.start()
    try:
        for name, report in built.items():
            runtime.import_image(OUT / f"{name}.tar", str(report["reference"]))
        yield runtime
    finally:
        runtime.stop()
        shutil.rmtree(home, ignore_errors=True)


def _run(containerd: Containerd, image: str, *command: str, name: str
         ) -> subprocess.CompletedProcess[str]:
    return containerd.ctr("run", "--rm", *READ_ONLY, "--net-host", f"hegui.io/{image}:0.1.0",
                          name, *command, check=False, timeout=120)


def test_operator_image_runs_both_commands_as_nonroot_read_only(containerd: Containerd) -> None:
    probe = ("import os, hegui.operator.handlers, hegui.admission.main; "
             "print(os.getuid(), os.getgid(), os.access('/usr', os.W_OK))")
    done = _run(containerd, "hegui", "/usr/bin/python3.11", "-c", probe, name="probe-ids")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["65532", "65532", "False"]
    for command in (["operator", "run"], ["webhook", "serve"]):
        done = _run(containerd, "hegui", "/opt/hegui/bin/hegui", *command, "--help",
                    name=f"probe-{command[0]}")
        assert done.returncode == 0 and "usage: hegui" in done.stdout, done.stderr
    # Real work offline: the ValidatingAdmissionPolicies that hold while the webhook is down.
    done = _run(containerd, "hegui", "/opt/hegui/bin/hegui", "webhook", "cel-policies",
                name="probe-cel")
    assert done.returncode == 0 and "ValidatingAdmissionPolicy" in done.stdout, done.stderr


@pytest.mark.parametrize("image", ["hegui", "sidecar", "triton"])
def test_no_shell_and_no_package_manager(containerd: Containerd, image: str) -> None:
    # Triton's Python backend starts its stub through bash (images/triton.toml).
    shells = ("/bin/sh", "/bin/bash") if image != "triton" else ()
    for program in (*shells, "/usr/bin/apt-get", "/usr/bin/pip"):
        done = _run(containerd, image, program, "-c", "true", name=f"probe-{image}-shell")
        assert done.returncode != 0, f"{image} has {program}"


def test_sidecar_image_has_pillow_and_no_torch(containerd: Containerd) -> None:
    done = _run(containerd, "sidecar", "/usr/bin/python3.11", "-m", "hegui.sidecar", "--help",
                name="probe-sidecar")
    assert done.returncode == 0 and "--upstream" in done.stdout, done.stderr
    probe = ("import importlib.util as u; print(u.find_spec('PIL') is not None, "
             "u.find_spec('torch') is not None)")
    done = _run(containerd, "sidecar", "/usr/bin/python3.11", "-c", probe, name="probe-torch")
    assert done.stdout.split() == ["True", "False"], done.stderr


def test_triton_image_serves_hegui_models(containerd: Containerd) -> None:
    http, grpc, metrics = free_port(), free_port(), free_port()
    name = "probe-triton"
    # The image's entrypoint, with the ports moved off the fixed 8000-8002.
    containerd.ctr("run", "-d", *READ_ONLY, "--net-host", "hegui.io/triton:0.1.0", name,
                   "/opt/hegui/bin/triton-start", "--model-repository=/models",
                   "--http-address=127.0.0.1", f"--http-port={http}",
                   "--grpc-address=127.0.0.1", f"--grpc-port={grpc}",
                   "--metrics-address=127.0.0.1", f"--metrics-port={metrics}",
                   "--allow-sagemaker=false", "--allow-vertex-ai=false",
                   "--exit-on-error=true", "--strict-readiness=true")
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready",
                                            timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the Triton image did not become ready"
            time.sleep(1)
        moderator = TritonModerator(TritonEndpoint(address=f"127.0.0.1:{grpc}",
                                                   protocol=TritonProtocol.GRPC,
                                                   model="moderation"), timeout=30.0)

        async def moderate() -> list[dict[str, float]]:
            try:
                texts = ["今天天气很好", "教我制作炸弹"]
                return [f.scores for f in await moderator.moderate(texts)]
            finally:
                await moderator.close()

        harmless, bomb = asyncio.run(moderate())
        assert harmless == {} and bomb, "the models in the image judge as hegui's rules do"
    finally:
        containerd.ctr("task", "kill", "--signal", "SIGKILL", name, check=False)
        for _ in range(50):
            if containerd.ctr("task", "delete", name, check=False).returncode == 0:
                break
            time.sleep(0.2)
        containerd.ctr("container", "delete", name, check=False)


@pytest.mark.parametrize("image", NAMES)
def test_every_image_has_an_sbom_and_a_size(built: dict[str, dict[str, object]],
                                            image: str) -> None:
    sbom = json.loads((OUT / f"{image}.spdx.json").read_text())
    assert sbom["spdxVersion"] == "SPDX-2.3"
    names = {p["name"] for p in sbom["packages"]}
    assert ("python3.11-minimal" in names) == (image != "pause")
    assert ("Pillow" in names or "pillow" in names) == (image == "sidecar")
    assert not any(n.lower() == "torch" for n in names)
    report = built[image]
    assert isinstance(report["compressed_bytes"], int) and report["compressed_bytes"] > 0
