"""The sidecar starts with exactly the command line the injector gives it, for a posture that
declares no dataProtection: it used to crash-loop ("pseudonymised records need a key") in every
such pod on a real node."""

from __future__ import annotations

import copy
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import yaml

from hegui.admission.local import free_port
from hegui.sidecar.suspension import SuspensionNotice

SAMPLE = Path(__file__).parents[2] / "samples" / "compliance" / "chat-service.yaml"


def test_a_posture_without_data_protection_still_serves_with_pseudonymised_records(
        tmp_path: Path) -> None:
    posture = copy.deepcopy(yaml.safe_load(SAMPLE.read_text("utf-8")))
    posture["spec"].pop("dataProtection", None)
    service = tmp_path / "service.yaml"
    service.write_text(yaml.safe_dump(posture))
    (tmp_path / "notice.yaml").write_text(SuspensionNotice().to_yaml())
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hegui.sidecar", "--service", str(service), "--port", str(port),
         "--records", str(tmp_path / "records.jsonl"), "--strikes",
         str(tmp_path / "strikes.json"), "--suspension", str(tmp_path / "notice.yaml"),
         "--evidence-credentials-dir", str(tmp_path / "no-evidence")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/hegui/healthz",
                                            timeout=2) as answer:
                    assert answer.status == 200
                break
            except OSError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "the sidecar never answered"
                time.sleep(0.2)
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=60)
    assert "pseudonymise users with a key of this process only (Art.11)" in errors


def test_a_sidecar_started_before_its_configuration_waits_for_it_closed(tmp_path: Path) -> None:
    """A pod applied together with its GenerativeService starts before the operator's ConfigMap
    is projected: the sidecar waits for it, serving nothing (the startupProbe holds the model
    back), then serves. It used to exit, and the kubelet's back-off kept the pod down for up
    to five minutes."""
    posture = yaml.safe_load(SAMPLE.read_text("utf-8"))
    service = tmp_path / "config" / "service.yaml"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hegui.sidecar", "--service", str(service), "--port", str(port),
         "--evidence-credentials-dir", str(tmp_path / "no-evidence")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def health() -> int | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/hegui/healthz",
                                        timeout=2) as answer:
                return int(answer.status)
        except OSError:
            return None

    said: list[str] = []
    assert process.stderr is not None
    reader = threading.Thread(target=lambda: said.extend(process.stderr or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any(f"waiting for {service}" in line for line in said):
            assert process.poll() is None, f"the sidecar exited: {said}"
            assert time.monotonic() < deadline, "the sidecar never said it waits"
            time.sleep(0.2)
        time.sleep(2)  # two more polls of the file
        assert process.poll() is None, "the sidecar exited without its configuration"
        assert health() is None  # nothing listens: closed
        service.parent.mkdir()
        (service.parent / "suspension.yaml").write_text(SuspensionNotice().to_yaml())
        service.write_text(yaml.safe_dump(posture))  # the kubelet projects the ConfigMap
        deadline = time.monotonic() + 60
        while health() != 200:
            assert process.poll() is None, f"the sidecar exited: {said}"
            assert time.monotonic() < deadline, "the sidecar never served"
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=60)
