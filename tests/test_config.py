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
        (["--min-cleanable-dirty-ratio", "half"], {}, "min_cleanable_dirty_ratio: 'half' is not a valid float"),
        ([], {"KETCH_MIN_CLEANABLE_DIRTY_RATIO": "1.5"}, "min_cleanable_dirty_ratio must be from 0 to 1"),
        (["--min-cleanable-dirty-ratio", "nan"], {}, "min_cleanable_dirty_ratio must be from 0 to 1"),
        (["--delete-retention-ms", "-1"], {}, "delete_retention_ms"),
        (["--min-compaction-lag-ms", "-1"], {}, "min_compaction_lag_ms"),
        (["--log-cleaner-backoff-ms", "0"], {}, "log_cleaner_backoff_ms must be >= 1"),
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


def test_cleaner_settings_by_flag_env_and_file(tmp_path: Path) -> None:
    defaults = config.load(parse([]), {})
    assert (
        defaults.delete_retention_ms,
        defaults.min_compaction_lag_ms,
        defaults.min_cleanable_dirty_ratio,
        defaults.log_cleaner_backoff_ms,
    ) == (86_400_000, 0, 0.5, 15_000)
    file = tmp_path / "node.toml"
    file.write_text("min_cleanable_dirty_ratio = 1\ndelete_retention_ms = 1000\n")
    loaded = config.load(
        parse(["--config", str(file), "--log-cleaner-backoff-ms", "200"]), {"KETCH_MIN_COMPACTION_LAG_MS": "5"}
    )
    assert loaded.min_cleanable_dirty_ratio == 1.0 and isinstance(loaded.min_cleanable_dirty_ratio, float)
    assert (loaded.delete_retention_ms, loaded.min_compaction_lag_ms, loaded.log_cleaner_backoff_ms) == (1000, 5, 200)
    assert config.load(parse(["--min-cleanable-dirty-ratio", "0.01"]), {}).min_cleanable_dirty_ratio == 0.01


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("retention_ms = 1.5", "retention_ms: 1.5 is not a valid int"),
        ("node_id = true", "node_id: True is not a valid int"),
        ("min_cleanable_dirty_ratio = true", "min_cleanable_dirty_ratio: True is not a valid float"),
    ],
)
def test_a_toml_value_of_another_type_is_refused_not_converted(tmp_path: Path, line: str, fragment: str) -> None:
    file = tmp_path / "node.toml"
    file.write_text(line + "\n")
    with pytest.raises(config.ConfigError, match=fragment):
        config.load(parse(["--config", str(file)]), {})
