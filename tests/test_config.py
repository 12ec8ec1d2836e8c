"""Node settings: flag over environment over file over default."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from node import config


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return parser.parse_args(argv)


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    file = tmp_path / "node.toml"
    file.write_text('node_id = 3\ndata_dir = "/file"\nlisten = "0.0.0.0:1"\nauto_create_topics = true\n')
    env = {"KETCH_DATA_DIR": "/env", "KETCH_LISTEN": "127.0.0.1:2"}
    loaded = config.load(parse(["--config", str(file), "--listen", "127.0.0.1:3"]), env)
    assert loaded.node_id == 3  # file
    assert loaded.data_dir == "/env"  # env over file
    assert loaded.listen == "127.0.0.1:3"  # flag over env
    assert loaded.auto_create_topics is True
    assert loaded.metrics_port == config.NodeConfig().metrics_port  # default


def test_advertised_address_defaults_to_a_dialable_listen_address() -> None:
    assert config.load(parse(["--listen", "0.0.0.0:9092"]), {}).advertised_host_port == ("127.0.0.1", 9092)
    cfg = config.load(parse(["--advertised-listener", "ketch-1:9092"]), {})
    assert cfg.advertised_host_port == ("ketch-1", 9092)


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["--node-id", "x"], {}, "node_id"),
        (["--listen", "nowhere"], {}, "HOST:PORT"),
        ([], {"KETCH_AUTO_CREATE_TOPICS": "maybe"}, "auto_create_topics"),
        (["--max-message-bytes", "100", "--max-request-bytes", "10"], {}, "must not exceed"),
    ],
)
def test_bad_settings_are_named(argv: list[str], env: dict[str, str], fragment: str) -> None:
    with pytest.raises(config.ConfigError, match=fragment):
        config.load(parse(argv), env)


def test_unknown_file_keys_are_refused(tmp_path: Path) -> None:
    file = tmp_path / "node.toml"
    file.write_text("node_idd = 1\n")
    with pytest.raises(config.ConfigError, match="node_idd"):
        config.load(parse(["--config", str(file)]), {})
