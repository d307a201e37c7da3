"""Each install profile of hegui on its own (marker `profiles`): the wheel installed into a
virtual environment of its own with only that profile's extras, then its commands run there.

The test environment (.venv) has every extra, so it cannot notice a command that imports an extra
it does not need: `pip install hegui` once gave a `hegui` that crashed on start because the CLI
imported the labeling verifier (Pillow, the `sidecar` extra), so the operator/webhook image could
not start. Profiles:

- core (no extras): the operator/webhook image: `hegui operator run`, `hegui webhook serve`;
- sidecar: the sidecar image: `python -m hegui.sidecar`, `hegui label verify`; no torch;
- ml: the sidecar with the neural watermark and classifier (torch).

The environments are kept in .cache/profiles, keyed by the profile's requirements and the
interpreter, so a
second run only reinstalls the freshly built wheel (`--no-deps`); a change to the dependencies
makes a new one. The first build downloads through pip's cache, which dev/bootstrap filled.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.profiles

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "profiles"
PROFILES = {"core": "", "sidecar": "sidecar", "ml": "sidecar,ml"}
# torch and the CUDA libraries it brings from PyPI are 5.6 GB, 20 minutes to download and unpack
# again on 2 cores (PyPI's answers are not kept in pip's cache here). The ml profile links them
# from the test environment instead, exactly the distributions `torch` requires and nothing else,
# and pip resolves hegui[sidecar,ml] against them like any installed distribution.
BORROWED = ("torch",)


def _run(*args: str | Path, check: bool = True, timeout: float = 120,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=check,
                          timeout=timeout, cwd=cwd)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, ROOT, timeout=600)
    (built,) = out.glob("hegui-*.whl")
    return built


def _closure(names: tuple[str, ...]) -> list[metadata.Distribution]:
    """These distributions of this environment and every one they require, extras included."""
    found: dict[str, metadata.Distribution] = {}
    pending = [(name, "") for name in names]
    while pending:
        name, extra = pending.pop()
        dist = metadata.distribution(name)
        key = f"{dist.metadata['Name'].lower()}[{extra}]"
        if key in found:
            continue
        found[key] = dist
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
                continue
            pending += [(requirement.name, e) for e in ("", *requirement.extras)]
    unique = {d.metadata["Name"].lower(): d for d in found.values()}
    return list(unique.values())


def _borrow(venv: Path) -> None:
    borrowed = venv / "borrowed"
    borrowed.mkdir()
    for dist in _closure(BORROWED):
        site = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            if (site / top).exists() and not (borrowed / top).exists():
                (borrowed / top).symlink_to(site / top)
    (site_packages,) = venv.glob("lib/python3.*/site-packages")
    (site_packages / "hegui-borrowed.pth").write_text(f"{borrowed}\n")


def _environment(profile: str, wheel: Path) -> Path:
    """A virtual environment with hegui[profile] and nothing else; made once per dependency set,
    the wheel reinstalled every time."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [project["dependencies"]] + [project["optional-dependencies"][extra] for extra in
                                          PROFILES[profile].split(",") if extra]
    key = hashlib.sha256(json.dumps([wanted, sys.version]).encode()).hexdigest()[:12]
    venv = CACHE / f"{profile}-{key}"
    python = venv / "bin" / "python"
    started = time.monotonic()
    if not (venv / ".complete").exists():
        for stale in CACHE.glob(f"{profile}-*"):
            shutil.rmtree(stale)
        _run(sys.executable, "-m", "venv", venv)
        if "ml" in PROFILES[profile].split(","):
            _borrow(venv)
        extras = PROFILES[profile]
        _run(python, "-m", "pip", "install", "-q", f"{wheel}[{extras}]" if extras else wheel,
             timeout=1800)
        (venv / ".complete").write_text(f"{time.monotonic() - started:.0f}s\n")
    else:
        _run(python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", wheel)
    print(f"profile {profile}: environment ready in {time.monotonic() - started:.1f}s "
          f"(first made in {(venv / '.complete').read_text().strip()})")
    return venv


@pytest.fixture(scope="module", params=list(PROFILES))
def profile(request: pytest.FixtureRequest, wheel: Path) -> Iterator[tuple[str, Path]]:
    yield request.param, _environment(request.param, wheel)


def _hegui(venv: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # Run outside the checkout so that nothing but the installed wheel can be imported.
    return _run(venv / "bin" / "hegui", *args, check=check, cwd=venv)


def _importable(venv: Path, module: str) -> bool:
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return _run(venv / "bin" / "python", "-c", probe, check=False, cwd=venv).returncode == 0


def test_every_profile_starts_the_operator_and_webhook(profile: tuple[str, Path]) -> None:
    _, venv = profile
    assert "operator" in _hegui(venv, "--help").stdout
    assert "--leader-election" in _hegui(venv, "operator", "run", "--help").stdout
    assert "--cert-file" in _hegui(venv, "webhook", "serve", "--help").stdout
    # What `operator run` and `webhook serve` import once started (the commands themselves need
    # a cluster; the images' tests start them).
    modules = ("hegui.operator.handlers", "hegui.operator.assessment_handlers",
               "hegui.operator.leader", "hegui.admission.main", "hegui.admission.server",
               "hegui.admission.informer")
    _run(venv / "bin" / "python", "-c", f"import {', '.join(modules)}", cwd=venv)
    # Commands that work offline, for real: the CEL policies and a pipeline check.
    policies = _hegui(venv, "webhook", "cel-policies", str(ROOT / "samples" / "compliance"))
    assert '"ValidatingAdmissionPolicy"' in policies.stdout
    checked = _hegui(venv, "check", str(ROOT / "samples"), check=False)
    assert checked.returncode in (0, 1) and "Traceback" not in checked.stderr, checked.stderr


def test_no_profile_carries_development_code(profile: tuple[str, Path]) -> None:
    _, venv = profile
    for module in ("hegui.localcluster", "hegui.localcluster.cluster", "hegui.demo",
                   "hegui.demo_serving", "hegui.demo_realnode", "hegui.admission.local",
                   "hegui.api.testing"):
        assert not _importable(venv, module), module
    for command in (("cluster", "up"), ("demo",)):
        refused = _hegui(venv, *command, check=False)
        assert refused.returncode == 2, refused.stdout
        assert "a development command" in refused.stderr and "Traceback" not in refused.stderr


def test_core_has_no_extra_and_names_the_missing_one(profile: tuple[str, Path]) -> None:
    name, venv = profile
    if name != "core":
        pytest.skip("the core profile only")
    assert not _importable(venv, "PIL") and not _importable(venv, "torch")
    refused = _hegui(venv, "label", "verify", "-", check=False)
    assert refused.returncode == 2
    assert "pip install 'hegui[sidecar]'" in refused.stderr and "Traceback" not in refused.stderr


def test_sidecar_profiles_start_the_sidecar(profile: tuple[str, Path]) -> None:
    name, venv = profile
    if name == "core":
        pytest.skip("the sidecar and ml profiles")
    python = venv / "bin" / "python"
    assert "--service" in _run(python, "-m", "hegui.sidecar", "--help", cwd=venv).stdout
    assert "--key-file" in _hegui(venv, "label", "verify", "--help").stdout
    # The sidecar image must not carry torch unless the neural watermark is wanted.
    assert _importable(venv, "torch") == (name == "ml")
    if name == "ml":
        _run(python, "-c", "import hegui.labeling.watermark_image, "
             "hegui.labeling.watermark_text, hegui.moderation.classifier", cwd=venv)
