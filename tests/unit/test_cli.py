"""The `hegui` command's own behaviour, without a cluster."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

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


def test_help_lists_every_command_without_importing_any() -> None:
    # The operator/webhook image installs hegui without extras: `hegui --help` must not import
    # the labeling verifier (Pillow) or anything else a command needs only when it runs.
    probe = ("import sys\nfrom hegui import cli\ntry:\n    cli.main(['--help'])\n"
             "except SystemExit:\n    pass\n"
             "print(sorted(m for m in sys.modules if m.startswith('hegui.')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip().splitlines()[-1] == "['hegui.cli']"
    for command in cli.COMMANDS:
        assert command.name in done.stdout


def test_listed_help_is_the_commands_own() -> None:
    # cli.COMMANDS repeats each command's help so that --help imports nothing; the module's
    # add_parser is the source.
    parser = cli.build_parser(everything=True)
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    own = {action.dest: action.help for action in subparsers._choices_actions}
    assert own == {command.name: command.help for command in cli.COMMANDS}


def test_modules_of_extras_match_pyproject() -> None:
    extras = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())[
        "project"]["optional-dependencies"]
    distributions = metadata.packages_distributions()
    for module, extra in cli.EXTRA_OF_MODULE.items():
        names = {re.split(r"[<>=!~\[; ]", requirement)[0].lower() for requirement in
                 extras[extra]}
        assert {d.lower() for d in distributions[module]} & names, (module, extra)


def test_a_missing_extra_is_named_not_a_traceback() -> None:
    # Pillow is removed from this interpreter (a fault injected: the test environment has every
    # extra); tests/profiles does the same on a real core-only installation.
    probe = ("import sys\nsys.modules['PIL'] = None\nfrom hegui import cli\n"
             "sys.exit(cli.main(['label', 'verify', '-']))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 2
    assert "'PIL'" in done.stderr and "pip install 'hegui[sidecar]'" in done.stderr
    assert "Traceback" not in done.stderr
