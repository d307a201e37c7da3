"""The `hegui` command's own behaviour, without a cluster."""

from __future__ import annotations

import pytest

from hegui import cli
from hegui.localcluster.cluster import ClusterError, LocalCluster


def test_bad_port_base_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HEGUI_CLUSTER_PORT_BASE", "80")
    with pytest.raises(ClusterError, match="HEGUI_CLUSTER_PORT_BASE='80'"):
        LocalCluster.from_environment()
    assert cli.main(["cluster", "down"]) == 1
    assert "HEGUI_CLUSTER_PORT_BASE" in capsys.readouterr().err


def test_missing_binaries_name_the_build_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HEGUI_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HEGUI_CLUSTER_PORT_BASE", "29400")
    assert cli.main(["cluster", "up", "--timeout", "5"]) == 1
    err = capsys.readouterr().err
    assert "kube-apiserver" in err and "dev/controlplane/build" in err
    assert "Traceback" not in err


def test_status_of_a_stopped_cluster_exits_3(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HEGUI_CACHE_DIR", str(tmp_path))
    assert cli.main(["cluster", "status"]) == 3
    assert "kube-apiserver" in capsys.readouterr().out


def test_subcommand_is_required() -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2
