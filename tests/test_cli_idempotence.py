"""``ketch produce`` and ``ketch perf produce`` take --enable-idempotence; a conflict is a config error."""

from __future__ import annotations

import pytest

from ketch.cli import build_parser, main


def test_conflicting_flags_are_refused_before_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["produce", "t", "--acks", "1", "--enable-idempotence", "true", "--bootstrap", "127.0.0.1:1"])
    assert code == 2
    assert "enable_idempotence=True conflicts with acks=1" in capsys.readouterr().err


def test_flags_parse() -> None:
    parser = build_parser()
    assert parser.parse_args(["produce", "t"]).enable_idempotence is None
    assert parser.parse_args(["produce", "t", "--enable-idempotence", "false"]).enable_idempotence == "false"
    perf = parser.parse_args(["perf", "produce", "--topic", "t", "--num-records", "1", "--enable-idempotence", "true"])
    assert perf.enable_idempotence == "true"
