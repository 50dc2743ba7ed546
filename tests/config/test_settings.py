"""Settings: defaults, IM_* environment, flags (flags win), validation, --help lists every setting."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from config import Settings, SettingsError, load_settings
from im.conversations.keys import keyring_from
from im.storage.secrets_file import load_or_create_secret

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_env_and_flags() -> None:
    assert load_settings([], environ={}).port == 8888
    assert load_settings([], environ={"IM_PORT": "9000"}).port == 9000
    settings = load_settings(["--port", "9100", "--journal", "false"], environ={"IM_PORT": "9000"})
    assert settings.port == 9100 and settings.journal is False


@pytest.mark.parametrize(("env", "message"), [
    ({"IM_PORT": "abc"}, "port"),
    ({"IM_LONG_POLL_DEFAULT_SECS": "90"}, "long_poll_default_secs"),
    ({"IM_WRITE_CONCERN": "some"}, "write_concern"),
    ({"IM_PULL_MAX_LIMIT": "0"}, "pull_max_limit"),
    ({"IM_EVENT_LOOP": "trio"}, "event_loop"),
    ({"IM_MONGO_MAX_IDLE_SECS": "-1"}, "mongo_max_idle_secs"),
])
def test_bad_values_are_refused_naming_the_setting(env: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings([], environ=env)


def test_help_lists_every_setting() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "server.py"), "--help"], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    for f in dataclasses.fields(Settings):
        assert "--" + f.name.replace("_", "-") in out
        assert "IM_" + f.name.upper() in out


def test_generated_secret_is_private_and_stable(tmp_path: Path) -> None:
    first = load_or_create_secret(tmp_path, "jwt_secret", protects="it signs tokens")
    assert len(first) >= 32
    assert (tmp_path / "jwt_secret").stat().st_mode & 0o077 == 0
    assert load_or_create_secret(tmp_path, "jwt_secret", protects="it signs tokens") == first


def test_a_generated_master_key_is_logged_with_what_it_protects(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The log names what the key protects (stored messages and files) and that they are lost without it."""
    settings = Settings(data_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING):
        keyring_from(settings, collection=None)  # type: ignore[arg-type]
    (line,) = [r.getMessage() for r in caplog.records if "master_key" in r.getMessage()]
    assert "message" in line and "file" in line and "cannot be read" in line, line
    assert "token" not in line, line
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        keyring_from(settings, collection=None)  # type: ignore[arg-type]
    assert not caplog.records  # kept from then on: nothing more to say
