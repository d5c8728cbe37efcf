"""config.settings: defaults, overrides, and errors that name the key at fault."""

from pathlib import Path

import msgspec
import pytest

from config.settings import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    LedgerSettings,
    Settings,
    load_settings,
)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pubex.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_defaults_load() -> None:
    settings = load_settings()
    assert settings.data_dir == "./var"
    assert settings.ledger.batch_max_entries == 1024
    assert settings.ledger.batch_max_bytes == 4 * 1024 * 1024
    assert settings.ledger.snapshot_every_entries == 100_000
    assert settings.ledger.checkpoint_every_entries == 1_000
    assert settings.ledger.map_size_bytes == 64 * 1024 * 1024
    assert settings.clock.max_slew_ppm == 500
    assert (settings.net.host, settings.net.ws_port, settings.net.http_port) == (
        "127.0.0.1",
        8765,
        8080,
    )


def test_default_toml_and_struct_defaults_agree() -> None:
    # default.toml is the documentation; the Struct defaults serve partial files.
    assert load_settings() == Settings()
    raw = msgspec.toml.decode(DEFAULT_CONFIG_PATH.read_bytes())
    assert msgspec.to_builtins(Settings()) == raw


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        load_settings().ledger.batch_max_entries = 1  # type: ignore[misc]


def test_partial_file_keeps_other_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[net]\nws_port = 9000\n"))
    assert settings.net.ws_port == 9000
    assert settings.net.http_port == 8080
    assert settings.ledger == LedgerSettings()


def test_nested_and_dotted_overrides() -> None:
    settings = load_settings(
        overrides={"ledger": {"batch_max_entries": 8}, "net.ws_port": 0, "data_dir": "/tmp/x"}
    )
    assert settings.ledger.batch_max_entries == 8
    assert settings.ledger.batch_max_bytes == 4 * 1024 * 1024
    assert settings.net.ws_port == 0
    assert settings.data_dir == "/tmp/x"


def test_overrides_apply_on_top_of_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[ledger]\nbatch_max_entries = 16\nbatch_max_bytes = 65536\n")
    settings = load_settings(path, overrides={"ledger.batch_max_entries": 32})
    assert settings.ledger.batch_max_entries == 32
    assert settings.ledger.batch_max_bytes == 65536


def test_malformed_toml_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[ledger]\nbatch_max_entries = 8\nbatch_max_bytes = 4 MiB\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == "ledger.batch_max_bytes"
    assert "ledger.batch_max_bytes" in str(info.value)
    assert "malformed TOML" in str(info.value)


def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, '[net]\nws_port = "8765"\n'))
    assert info.value.key == "net.ws_port"
    assert "net.ws_port" in str(info.value)
    assert "Expected `int`, got `str`" in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[ledger]\nbatch_max_entries = 0\n", "ledger.batch_max_entries"),
        ("[net]\nhttp_port = 70000\n", "net.http_port"),
        ("[ledger]\nbatch_max_entries = 1.5\n", "ledger.batch_max_entries"),
        ("[ledger]\nsnapshot_every = 10\n", "ledger.snapshot_every"),  # unknown: typo
        ("data_dri = './var'\n", "data_dri"),
        ("clock = 3\n", "clock"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert info.value.key == key


def test_bad_override_names_the_key_and_source() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"ledger.batch_max_bytes": "4MiB"})
    assert info.value.key == "ledger.batch_max_bytes"
    assert info.value.source == "overrides"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(str(tmp_path / "absent.toml"))
