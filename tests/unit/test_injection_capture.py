"""The capture step's rules (hegui.sidecar.capture; Art.14, issue 16). The rules in a real
network namespace: tests/integration/test_capture_netns.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from hegui.sidecar import capture


def test_everything_inbound_goes_to_the_sidecar_but_its_port_and_the_declared_ones() -> None:
    table = capture.rules(8443, [capture.PortRange(8002, 8002),
                                 capture.PortRange(29500, 29509)])
    lines = table.splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT"
    # Only PREROUTING: what arrives at the pod. The sidecar's own dial to 127.0.0.1 goes through
    # OUTPUT and is never redirected back to it.
    assert [line for line in lines if line.startswith("-A ") and "HEGUI_INBOUND" not in
            line.split()[1]] == ["-A PREROUTING -p tcp -j HEGUI_INBOUND"]
    chain = [line for line in lines if line.startswith("-A HEGUI_INBOUND")]
    assert chain == ["-A HEGUI_INBOUND -p tcp --dport 8443 -j RETURN",
                     "-A HEGUI_INBOUND -p tcp --dport 8002 -j RETURN",
                     "-A HEGUI_INBOUND -p tcp --dport 29500:29509 -j RETURN",
                     "-A HEGUI_INBOUND -p tcp -j REDIRECT --to-ports 8443"]  # last: the rest


@pytest.mark.parametrize("text", ["0", "70000", "9:3", "x", "1:y", ""])
def test_bad_ports_are_refused_with_the_rule(text: str) -> None:
    with pytest.raises(Exception, match="port"):
        capture.PortRange.parse(text)


def test_print_changes_nothing_and_shows_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert capture.main(["--to-port", "8443", "--open", "9100", "--print"]) == 0
    assert "--dport 9100 -j RETURN" in capsys.readouterr().out


def test_ipv6_is_captured_whenever_the_pod_has_an_ipv6_address(tmp_path: Path) -> None:
    if_inet6 = tmp_path / "if_inet6"
    if_inet6.write_text("00000000000000000000000000000001 01 80 10 80       lo\n")
    assert not capture._has_ipv6(if_inet6)
    if_inet6.write_text(if_inet6.read_text()
                        + "fe8000000000000018a2b2fffe3b50bd 0b 40 20 c0    eth0\n")
    assert capture._has_ipv6(if_inet6)  # link-local too: a pod on the same bridge reaches it
    assert not capture._has_ipv6(tmp_path / "absent")  # IPv6 disabled


def test_an_image_without_iptables_fails_closed_saying_what_is_missing(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(capture, "_SEARCH", str(tmp_path))  # an image with no iptables in it
    assert capture.main(["--to-port", "8443"]) == 1
    error = capsys.readouterr().err
    assert "needs Debian's iptables package" in error and "does not start uncaptured" in error
