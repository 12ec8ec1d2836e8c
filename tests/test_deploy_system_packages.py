"""scripts/ensure_system_packages.py, the step of ``./dev test`` that installs docker-compose.

Rules checked: present packages are left alone (exit 0, no apt-get); missing
ones with ``--check`` or without root and sudo give exit 1 and a line naming them
and the install command, and never call apt-get; without root it goes through
sudo; as root it runs ``apt-get update`` then
``apt-get install --no-install-recommends`` with exactly the missing packages and
fails when they are still missing afterwards. apt-get itself is replaced by a
recorder, so no package is touched.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ensure_system_packages.py"


@pytest.fixture
def esp(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("ensure_system_packages", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "PACKAGES", {"docker-compose": "compose", "openssl": "certificates"})
    return module


def fake_system(
    esp: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    present: set[str],
    root: bool,
    installs: bool = True,
    sudo: bool = False,
) -> list[tuple[str, ...]]:
    calls: list[tuple[str, ...]] = []

    def run(*cmd: str) -> int:
        calls.append(cmd)
        if installs and cmd[cmd[0] == "sudo" :][:2] == ("apt-get", "install"):
            present.update(c for c in cmd if c in esp.PACKAGES)
        return 0

    monkeypatch.setattr(esp, "installed", lambda package: package in present)
    monkeypatch.setattr(esp, "run", run)
    monkeypatch.setattr(esp.os, "geteuid", lambda: 0 if root else 1000)
    monkeypatch.setattr(esp.shutil, "which", lambda name: None if name == "sudo" and not sudo else f"/usr/bin/{name}")
    return calls


def test_present_packages_are_left_alone(
    esp: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = fake_system(esp, monkeypatch, {"docker-compose", "openssl"}, root=True)
    assert esp.main([]) == 0
    assert calls == []
    assert "present: docker-compose, openssl" in capsys.readouterr().out


def test_missing_without_root_fails_clearly(
    esp: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = fake_system(esp, monkeypatch, {"openssl"}, root=False)
    assert esp.main([]) == 1
    assert calls == []
    out = capsys.readouterr().out
    assert "missing docker-compose" in out
    assert "not root and no sudo, cannot install docker-compose; run as root: apt-get install" in out


def test_missing_without_root_installs_through_sudo(esp: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_system(esp, monkeypatch, {"openssl"}, root=False, sudo=True)
    assert esp.main([]) == 0
    assert [c[:2] for c in calls] == [("sudo", "apt-get"), ("sudo", "apt-get")]
    assert calls[-1][-1] == "docker-compose"


def test_check_only_reports(esp: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_system(esp, monkeypatch, set(), root=True)
    assert esp.main(["--check"]) == 1
    assert calls == []


def test_root_installs_exactly_the_missing_packages(esp: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    present = {"openssl"}
    calls = fake_system(esp, monkeypatch, present, root=True)
    assert esp.main([]) == 0
    assert calls == [
        ("apt-get", "update", "-q"),
        ("apt-get", "install", "-y", "-q", "--no-install-recommends", "docker-compose"),
    ]
    assert esp.main([]) == 0 and len(calls) == 2, "a second run installs nothing"


def test_install_that_leaves_a_package_missing_fails(esp: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_system(esp, monkeypatch, set(), root=True, installs=False)
    assert esp.main([]) == 1


def test_not_debian(esp: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake_system(esp, monkeypatch, set(), root=True)
    monkeypatch.setattr(esp.shutil, "which", lambda name: None)
    assert esp.main([]) == 1
    assert "no dpkg/apt-get" in capsys.readouterr().out
