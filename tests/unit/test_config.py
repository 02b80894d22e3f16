"""config.toml: defaults, template, every key's valid and invalid values, file errors, writing."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import stat
import string
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshdesk.config import (
    CallSettings,
    Config,
    Endpoint,
    HubSettings,
    NetworkSettings,
    NodeSettings,
    RecordSettings,
    Timings,
    WebSettings,
    config_text,
    default_config_text,
    load_config,
    write_config,
    write_default_config,
)
from meshdesk.errors import ConfigError
from meshdesk.home import NodeHome


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def _error(tmp_path: Path, text: str) -> str:
    """The ConfigError message for ``text``, without the file's path in front."""
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message
    prefix = f"{tmp_path / 'config.toml'}: "
    assert message.startswith(prefix)
    return message.removeprefix(prefix)


def _get(config: Config, dotted: str) -> Any:
    table, key = dotted.split(".")
    return getattr(getattr(config, table), key)


# --- defaults and template ----------------------------------------------------------------


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path / "absent" / "config.toml")
    assert config == Config()
    assert config.node.language == "ja"
    assert config.network.interfaces == ()
    assert config.network.listen == Endpoint("0.0.0.0", 7420)
    assert config.network.static_peers == ()
    assert config.network.mdns is True
    assert config.network.peer_exchange is True
    assert config.timings == Timings(1.0, 5.0, 5.0, 0.5, 30.0)
    assert config.calls.auto_accept is False


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert _load(tmp_path, "") == Config()


def test_template_round_trips_to_defaults(tmp_path: Path) -> None:
    assert _load(tmp_path, default_config_text()) == Config()


def test_template_names_every_key_and_is_commented_english() -> None:
    text = default_config_text()
    doc = tomllib.loads(text)
    for table in dataclasses.fields(Config):
        settings = getattr(Config(), table.name)
        assert set(doc[table.name]) == {f.name for f in dataclasses.fields(settings)}
    assert text.isascii()
    assert text.startswith("#")
    assert text.count("\n#") >= 15


def test_config_is_frozen_with_slots() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.node = NodeSettings("en")  # type: ignore[misc]
    for obj in (config, config.node, config.network, config.timings, config.calls):
        assert not hasattr(obj, "__dict__")


# --- valid values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "dotted", "expected"),
    [
        ('[node]\nlanguage = "en"', "node.language", "en"),
        ('[node]\nlanguage = "ja"', "node.language", "ja"),
        ('[network]\ninterfaces = ["wlan0"]', "network.interfaces", ("wlan0",)),
        (
            '[network]\ninterfaces = ["eth0", "wlp2s0", "eth0"]',
            "network.interfaces",
            ("eth0", "wlp2s0"),
        ),
        ('[network]\ninterfaces = ["a23456789012345"]', "network.interfaces", ("a23456789012345",)),
        ('[network]\nlisten = "127.0.0.1:0"', "network.listen", Endpoint("127.0.0.1", 0)),
        ('[network]\nlisten = "[::]:7420"', "network.listen", Endpoint("::", 7420)),
        (
            '[network]\nlisten = "desk-01.local:65535"',
            "network.listen",
            Endpoint("desk-01.local", 65535),
        ),
        (
            '[network]\nstatic_peers = ["10.0.0.2:7420", "[fd00::2]:7420", "hq.local:7420"]',
            "network.static_peers",
            (Endpoint("10.0.0.2", 7420), Endpoint("fd00::2", 7420), Endpoint("hq.local", 7420)),
        ),
        ("[network]\nmdns = false", "network.mdns", False),
        ("[network]\npeer_exchange = false", "network.peer_exchange", False),
        ("[timings]\nheartbeat_interval = 0.25", "timings.heartbeat_interval", 0.25),
        ("[timings]\nheartbeat_interval = 2", "timings.heartbeat_interval", 2.0),
        ("[timings]\ndead_after = 1.5", "timings.dead_after", 1.5),
        ("[timings]\nconnect_timeout = 10", "timings.connect_timeout", 10.0),
        ("[timings]\nreconnect_min = 0.1", "timings.reconnect_min", 0.1),
        ("[timings]\nreconnect_max = 0.5", "timings.reconnect_max", 0.5),
        ("[timings]\ndiscovery_refresh = 3", "timings.discovery_refresh", 3.0),
        ("[calls]\nauto_accept = true", "calls.auto_accept", True),
    ],
)
def test_valid_value(tmp_path: Path, toml: str, dotted: str, expected: object) -> None:
    value = _get(_load(tmp_path, toml + "\n"), dotted)
    assert value == expected
    assert type(value) is type(expected)


def test_duplicate_static_peers_removed_keeping_order(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        "[network]\nstatic_peers = "
        '["hq.local:7420", "10.0.0.2:7420", "HQ.local:7420", "[FD00:0::2]:1", "[fd00::2]:1"]\n',
    )
    assert [str(p) for p in config.network.static_peers] == [
        "hq.local:7420",
        "10.0.0.2:7420",
        "[fd00::2]:1",
    ]


def test_japanese_comments_bom_and_crlf_load(tmp_path: Path) -> None:
    text = '# 避難所Aの設定（防災課）\r\n[node]\r\nlanguage = "ja"  # 操作画面は日本語\r\n'
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert load_config(path) == Config()


def test_japanese_value_in_error_message(tmp_path: Path) -> None:
    assert _error(tmp_path, '[node]\nlanguage = "日本語"\n') == (
        "node.language: must be one of 'ja', 'en', got '日本語'"
    )


# --- invalid values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[node]\nlanguage = "fr"', "node.language: must be one of 'ja', 'en', got 'fr'"),
        ('[node]\nlanguage = "JA"', "node.language: must be one of 'ja', 'en', got 'JA'"),
        ("[node]\nlanguage = 1", "node.language: expected a string, got integer 1"),
        (
            '[network]\ninterfaces = "wlan0"',
            "network.interfaces: expected an array of strings, got string 'wlan0'",
        ),
        ("[network]\ninterfaces = [0]", "network.interfaces[0]: expected a string, got integer 0"),
        (
            '[network]\ninterfaces = ["wlan0", ""]',
            "network.interfaces[1]: must be 1..15 bytes without '/' or whitespace, got ''",
        ),
        (
            '[network]\ninterfaces = ["a234567890123456"]',
            "network.interfaces[0]: must be 1..15 bytes without '/' or whitespace, "
            "got 'a234567890123456'",
        ),
        (
            '[network]\ninterfaces = ["eth/0"]',
            "network.interfaces[0]: must be 1..15 bytes without '/' or whitespace, got 'eth/0'",
        ),
        (
            '[network]\ninterfaces = ["wlan 0"]',
            "network.interfaces[0]: must be 1..15 bytes without '/' or whitespace, got 'wlan 0'",
        ),
        ('[network]\nlisten = "0.0.0.0"', "network.listen: expected HOST:PORT, got '0.0.0.0'"),
        ('[network]\nlisten = ""', "network.listen: expected HOST:PORT, got ''"),
        ("[network]\nlisten = 7420", "network.listen: expected a string, got integer 7420"),
        (
            '[network]\nlisten = "0.0.0.0:70000"',
            "network.listen: port must be 0..65535, got 70000",
        ),
        (
            '[network]\nlisten = "0.0.0.0:-1"',
            "network.listen: port must be a number 0..65535, got '-1' in '0.0.0.0:-1'",
        ),
        (
            '[network]\nlisten = "::1:7420"',
            "network.listen: IPv6 needs brackets, e.g. '[::1]:7420', got '::1:7420'",
        ),
        (
            '[network]\nlisten = "300.1.1.1:7420"',
            "network.listen: not a valid IPv4 address: '300.1.1.1'",
        ),
        (
            '[network]\nlisten = "-bad.local:7420"',
            "network.listen: not a valid host name: '-bad.local'",
        ),
        (
            '[network]\nstatic_peers = "10.0.0.2:7420"',
            "network.static_peers: expected an array of strings, got string '10.0.0.2:7420'",
        ),
        (
            '[network]\nstatic_peers = ["10.0.0.2:7420", 7420]',
            "network.static_peers[1]: expected a string, got integer 7420",
        ),
        (
            '[network]\nstatic_peers = ["10.0.0.2"]',
            "network.static_peers[0]: expected HOST:PORT, got '10.0.0.2'",
        ),
        (
            '[network]\nstatic_peers = ["10.0.0.2:0"]',
            "network.static_peers[0]: a peer needs a port 1..65535, got '10.0.0.2:0'",
        ),
        ('[network]\nmdns = "yes"', "network.mdns: expected true or false, got string 'yes'"),
        (
            "[network]\npeer_exchange = 1",
            "network.peer_exchange: expected true or false, got integer 1",
        ),
        (
            "[timings]\nheartbeat_interval = -1",
            "timings.heartbeat_interval: must be > 0, got -1",
        ),
        ("[timings]\nconnect_timeout = 0", "timings.connect_timeout: must be > 0, got 0"),
        ("[timings]\nreconnect_min = -0.5", "timings.reconnect_min: must be > 0, got -0.5"),
        (
            "[timings]\nconnect_timeout = inf",
            "timings.connect_timeout: must be a finite number, got inf",
        ),
        (
            "[timings]\nheartbeat_interval = true",
            "timings.heartbeat_interval: expected a number, got boolean true",
        ),
        ('[timings]\ndead_after = "5"', "timings.dead_after: expected a number, got string '5'"),
        ("[timings]\nreconnect_max = [30]", "timings.reconnect_max: expected a number, got array"),
        ("[calls]\nauto_accept = 0", "calls.auto_accept: expected true or false, got integer 0"),
    ],
)
def test_invalid_value(tmp_path: Path, toml: str, message: str) -> None:
    assert _error(tmp_path, toml + "\n") == message


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "[timings]\nheartbeat_interval = 2\ndead_after = 2",
            "timings.dead_after: must be > heartbeat_interval (2), got 2",
        ),
        (
            "[timings]\nheartbeat_interval = 10",
            "timings.dead_after: must be > heartbeat_interval (10), got 5",
        ),
        (
            "[timings]\nreconnect_min = 5\nreconnect_max = 4.5",
            "timings.reconnect_max: must be >= reconnect_min (5), got 4.5",
        ),
    ],
)
def test_timing_relations(tmp_path: Path, toml: str, message: str) -> None:
    assert _error(tmp_path, toml + "\n") == message


def test_equal_reconnect_bounds_allowed(tmp_path: Path) -> None:
    config = _load(tmp_path, "[timings]\nreconnect_min = 2\nreconnect_max = 2\n")
    assert config.timings.reconnect_min == config.timings.reconnect_max == 2.0


def test_timings_validate_when_built_in_code() -> None:
    assert Timings(heartbeat_interval=0.01, dead_after=0.05).dead_after == 0.05
    with pytest.raises(ValueError, match=r"^dead_after: must be > heartbeat_interval"):
        Timings(heartbeat_interval=0.05, dead_after=0.01)


# --- structure ----------------------------------------------------------------------------


def test_unknown_key_lists_known_keys(tmp_path: Path) -> None:
    assert _error(tmp_path, '[network]\nlisen = "0.0.0.0:7420"\n') == (
        "unknown key 'network.lisen' (known: interfaces, listen, mdns, peer_exchange, static_peers)"
    )


def test_unknown_sub_table_is_an_unknown_key(tmp_path: Path) -> None:
    assert _error(tmp_path, "[timings.extra]\na = 1\n") == (
        "unknown key 'timings.extra' (known: connect_timeout, dead_after, discovery_refresh, "
        "heartbeat_interval, reconnect_max, reconnect_min)"
    )


def test_unknown_table(tmp_path: Path) -> None:
    assert _error(tmp_path, "[sync]\nbatch = 10\n") == (
        "unknown table 'sync' (known tables: calls, hub, network, node, records, timings, web)"
    )


def test_top_level_key_is_rejected(tmp_path: Path) -> None:
    assert _error(tmp_path, 'language = "en"\n') == (
        "unknown key 'language' (known tables: calls, hub, network, node, records, timings, web)"
    )


def test_known_table_given_as_value(tmp_path: Path) -> None:
    assert _error(tmp_path, "calls = true\n") == "calls: expected a table, got boolean true"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[node]\n\nlanguage = "ja\n', "line 3, column 15: invalid TOML (Illegal character '\\n')"),
        ("[network]\nlisten = \n", "line 2, column 10: invalid TOML (Invalid value)"),
        (
            "[calls]\nauto_accept = true\nauto_accept = false\n",
            "line 3, column 20: invalid TOML (Cannot overwrite a value)",
        ),
    ],
)
def test_bad_toml_names_line_and_column(tmp_path: Path, toml: str, message: str) -> None:
    assert _error(tmp_path, toml) == message


# --- unreadable files ---------------------------------------------------------------------


def test_directory_at_path(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.mkdir()
    with pytest.raises(ConfigError, match=r"config\.toml: cannot read: Is a directory$"):
        load_config(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes("[node]\n# 日本語\n".encode("shift_jis"))
    with pytest.raises(ConfigError, match=r"config\.toml: line 2: not UTF-8 text"):
        load_config(path)


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(ConfigError, match=r"config\.toml: cannot read: Permission denied$"):
        load_config(tmp_path / "config.toml")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_permission_denied_for_real(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("")
    path.chmod(0)
    with pytest.raises(ConfigError, match="Permission denied"):
        load_config(path)


# --- writing the template -----------------------------------------------------------------


def test_write_default_config_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    old_umask = os.umask(0)
    try:
        write_default_config(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text(encoding="utf-8") == default_config_text()
    assert load_config(path) == Config()


def test_write_default_config_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[node]\nlanguage = "en"\n')
    with pytest.raises(ConfigError, match="already exists"):
        write_default_config(path)
    assert load_config(path).node.language == "en"


def test_write_default_config_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot create: No such file or directory"):
        write_default_config(tmp_path / "absent" / "config.toml")


# --- writing any config -------------------------------------------------------------------

#: A config that differs from the defaults in every key, with Japanese and escapes.
EVERY_KEY = Config(
    node=NodeSettings(language="en", announce_roles=("hq", "center")),
    network=NetworkSettings(
        interfaces=("wlan0", "無線0", 'eth"\\0'),
        listen=Endpoint("::", 0),
        static_peers=(
            Endpoint("10.0.0.2", 7420),
            Endpoint("fd00::2", 7420),
            Endpoint("hq.local", 1),
            Endpoint("fe80::1%wlan0", 65535),
        ),
        mdns=False,
        peer_exchange=False,
    ),
    timings=Timings(
        heartbeat_interval=0.2,
        dead_after=1.0,
        connect_timeout=3.0,
        reconnect_min=0.1,
        reconnect_max=3.0,
        discovery_refresh=2.0,
    ),
    calls=CallSettings(
        auto_accept=True,
        media='file:/srv/避難所/案内 "音声"\\\t\n\x7f\x01.wav',
        playback="off",
        fallback_loss_pct=100.0,
        fallback_rtt_ms=math.inf,
        echo_cancel="off",
        camera='/dev/カメラ "2"',
        tone_hz=620,
    ),
    web=WebSettings(
        enabled=False,
        listen=Endpoint("::", 8443),
        redirect_listen=Endpoint("0.0.0.0", 0),
        invite_ttl=30.5,
        address_check=2.0,
    ),
    records=RecordSettings(erase_after_days=90, retention_check=60.0, export_roles=("hq", "desk")),
    hub=HubSettings(
        enabled=True,
        city="sendai_city",
        hub_urls=("tls://hub1.pref.example:7422", "tls://[fd00::1]:7422"),
        leaf_listen=Endpoint("127.0.0.1", 17422),
        batch=100,
        poll_interval=0.25,
        restart_delay=0.5,
    ),
)


def _write_and_load(tmp_path: Path, config: Config) -> Config:
    path = tmp_path / "config.toml"
    write_config(path, config)
    return load_config(path)


@pytest.mark.parametrize(
    "config",
    [
        Config(),
        EVERY_KEY,
        Config(network=NetworkSettings(interfaces=("避難所0",), static_peers=(Endpoint("a", 1),))),
        Config(timings=Timings(heartbeat_interval=1e-05, dead_after=1e16, reconnect_max=1e300)),
        Config(calls=CallSettings(media="file:設定.mp4")),
    ],
    ids=["defaults", "every-key", "japanese-interface", "extreme-floats", "japanese-media"],
)
def test_written_config_loads_back_equal(tmp_path: Path, config: Config) -> None:
    assert _write_and_load(tmp_path, config) == config


def test_a_written_key_keeps_its_comment_and_notes_the_default() -> None:
    text = config_text(EVERY_KEY)
    lines = text.splitlines()
    # The comment that explains a key stands above it, as in the default file.
    index = lines.index("discovery_refresh = 2.0")
    assert lines[index - 1] == "# Default: 20.0"
    assert lines[index - 2].startswith("# comes into reach later")
    assert '# Default: "device"' in lines
    assert 'language = "en"' in lines
    assert "fallback_rtt_ms = inf" in lines
    assert 'interfaces = ["wlan0", "無線0", "eth\\"\\\\0"]' in lines
    assert "keeps its default" in text
    # EVERY_KEY changes every key, so each has its "Default:" line; the defaults none.
    keys = [line for line in lines if line and line[0] not in "#["]
    assert sum(line.startswith("# Default: ") for line in lines) == len(keys) == 36
    assert config_text(Config()) == default_config_text()
    assert "Default:" not in default_config_text()


@pytest.mark.parametrize("config", [Config(), EVERY_KEY], ids=["defaults", "every-key"])
def test_every_key_is_explained_by_a_comment(config: Config) -> None:
    shared = {"reconnect_max", "fallback_rtt_ms"}  # explained with the key above them
    lines = config_text(config).splitlines()
    previous_key_or_table = 0
    for index, line in enumerate(lines):
        if line.startswith("["):
            previous_key_or_table = index
        elif line and not line.startswith("#"):
            key = line.split(" = ")[0]
            between = lines[previous_key_or_table + 1 : index]
            explained = [c for c in between if c.startswith("# ") and "Default:" not in c]
            assert explained or key in shared, f"{key} has no comment"
            previous_key_or_table = index


def test_write_config_replaces_a_file_atomically_and_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[node]\nlanguage = "ja"\n')
    path.chmod(0o644)
    write_config(path, EVERY_KEY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_config(path) == EVERY_KEY
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]  # no temp file left


def test_write_config_can_refuse_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[node]\nlanguage = "en"\n')
    with pytest.raises(ConfigError, match="already exists; not overwriting it"):
        write_config(path, Config(), overwrite=False)
    assert load_config(path).node.language == "en"


def test_write_config_into_a_missing_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        write_config(tmp_path / "absent" / "config.toml", Config())
    assert str(info.value) == (
        f"{tmp_path / 'absent' / 'config.toml'}: cannot create: No such file or directory"
    )


# Drawn configs: every key varied, text from all of Unicode (no surrogates), hosts in
# the canonical form Endpoint.parse gives (lower-case names, compressed IPv6).
_label = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=10)
_host = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: str(ipaddress.IPv6Address(a))),
    st.lists(_label, min_size=1, max_size=3).map(".".join).filter(lambda h: not h[-1].isdigit()),
)
_peer = st.builds(Endpoint, _host, st.integers(1, 65535))
_ifname = st.text(
    st.characters(codec="utf-8").filter(lambda c: c.isprintable() and not c.isspace() and c != "/"),
    min_size=1,
    max_size=15,
).filter(lambda name: len(name.encode()) <= 15)
_seconds = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)


@st.composite
def _timings(draw: st.DrawFn) -> Timings:
    beat, dead = sorted(draw(st.lists(_seconds, min_size=2, max_size=2, unique=True)))
    low, high = sorted(draw(st.lists(_seconds, min_size=2, max_size=2)))
    return Timings(beat, dead, draw(_seconds), low, high, draw(_seconds))


_configs = st.builds(
    Config,
    node=st.builds(NodeSettings, st.sampled_from(["ja", "en"])),
    network=st.builds(
        NetworkSettings,
        interfaces=st.lists(_ifname, max_size=3).map(tuple),
        listen=st.builds(Endpoint, _host, st.integers(0, 65535)),
        static_peers=st.lists(_peer, max_size=4).map(tuple),
        mdns=st.booleans(),
        peer_exchange=st.booleans(),
    ),
    timings=_timings(),
    calls=st.builds(
        CallSettings,
        auto_accept=st.booleans(),
        media=st.one_of(
            st.sampled_from(["device", "synthetic"]),
            st.text(st.characters(codec="utf-8"), min_size=1).map(lambda p: f"file:{p}"),
        ),
        playback=st.sampled_from(["auto", "off"]),
        fallback_loss_pct=st.floats(min_value=1e-9, max_value=100, allow_nan=False),
        fallback_rtt_ms=st.floats(min_value=1e-9, allow_nan=False),
        echo_cancel=st.sampled_from(["auto", "on", "off"]),
        camera=st.text(st.characters(codec="utf-8"), min_size=1).map(lambda p: f"/{p}"),
        tone_hz=st.integers(100, 4000),
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=_configs)
def test_any_config_survives_text_and_back(config: Config) -> None:
    assert _from_text(config_text(config)) == config


def _from_text(text: str) -> Config:
    with tempfile.TemporaryDirectory() as folder:  # not tmp_path: one file per example
        path = Path(folder) / "config.toml"
        path.write_text(text, encoding="utf-8")
        return load_config(path)


# --- Endpoint -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port", "canonical"),
    [
        ("0.0.0.0:7420", "0.0.0.0", 7420, "0.0.0.0:7420"),
        ("[::]:7420", "::", 7420, "[::]:7420"),
        ("[::1]:0", "::1", 0, "[::1]:0"),
        ("[FD00:0:0::2]:07420", "fd00::2", 7420, "[fd00::2]:7420"),
        ("[fe80::1%wlan0]:7420", "fe80::1%wlan0", 7420, "[fe80::1%wlan0]:7420"),
        ("[::ffff:10.0.0.1]:1", "::ffff:a00:1", 1, "[::ffff:a00:1]:1"),
        ("HQ.Local:65535", "hq.local", 65535, "hq.local:65535"),
        ("desk_01:7420", "desk_01", 7420, "desk_01:7420"),
        ("localhost:7420", "localhost", 7420, "localhost:7420"),
    ],
)
def test_endpoint_parse_and_format(text: str, host: str, port: int, canonical: str) -> None:
    endpoint = Endpoint.parse(text)
    assert endpoint == Endpoint(host, port)
    assert str(endpoint) == canonical
    assert Endpoint.parse(canonical) == endpoint


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "expected HOST:PORT"),
        (":7420", "expected HOST:PORT"),
        ("host:", "port must be a number"),
        ("host:７４２０", "port must be a number"),  # full-width digits
        ("host:+1", "port must be a number"),
        ("host:65536", "port must be 0..65535"),
        ("fd00::2", "IPv6 needs brackets"),
        ("[fd00::2]", r"expected \[IPV6\]:PORT"),
        ("[]:1", r"expected \[IPV6\]:PORT"),
        ("[10.0.0.1]:1", "brackets must hold an IPv6 address"),
        ("[fd00::zz]:1", "brackets must hold an IPv6 address"),
        ("10.0.0:1", "not a valid IPv4 address"),
        ("1234:1", "not a valid IPv4 address"),
        ("a..b:1", "not a valid host name"),
        (" hq.local:1", "not a valid host name"),
        ("hq.local.:1", "not a valid host name"),
        ("-hq:1", "not a valid host name"),
        ("a" * 64 + ":1", "not a valid host name"),
    ],
)
def test_endpoint_parse_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Endpoint.parse(text)


def test_endpoint_constructor_validates() -> None:
    with pytest.raises(ValueError, match="port must be an integer"):
        Endpoint("localhost", True)
    with pytest.raises(ValueError, match=r"port must be 0\.\.65535"):
        Endpoint("localhost", -1)
    with pytest.raises(ValueError, match="not a valid host name"):
        Endpoint("", 1)


# --- overrides ----------------------------------------------------------------------------


def test_with_overrides_returns_a_new_config() -> None:
    base = Config(calls=CallSettings(auto_accept=True))
    changed = base.with_overrides(
        listen="[::]:0",
        static_peers=["10.0.0.2:7420", Endpoint("hq.local", 7420), "10.0.0.2:7420"],
        interfaces=["wlan0"],
    )
    assert base == Config(calls=CallSettings(auto_accept=True))
    assert changed.network == NetworkSettings(
        interfaces=("wlan0",),
        listen=Endpoint("::", 0),
        static_peers=(Endpoint("10.0.0.2", 7420), Endpoint("hq.local", 7420)),
    )
    assert changed.calls.auto_accept is True
    assert changed.timings is base.timings


def test_with_overrides_nothing_given_is_equal() -> None:
    assert Config().with_overrides() == Config()


def test_with_overrides_can_clear_lists() -> None:
    base = Config().with_overrides(static_peers=["10.0.0.2:7420"], interfaces=["eth0"])
    cleared = base.with_overrides(static_peers=[], interfaces=[])
    assert cleared.network.static_peers == ()
    assert cleared.network.interfaces == ()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"listen": "0.0.0.0"}, "listen: expected HOST:PORT, got '0.0.0.0'"),
        ({"static_peers": ["ok:1", "bad"]}, "static_peers[1]: expected HOST:PORT, got 'bad'"),
        (
            {"static_peers": "10.0.0.2:7420"},
            "static_peers: expected an array of strings, got string '10.0.0.2:7420'",
        ),
        (
            {"interfaces": ["eth0", "x" * 16]},
            f"interfaces[1]: must be 1..15 bytes without '/' or whitespace, got '{'x' * 16}'",
        ),
    ],
)
def test_with_overrides_rejects(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config().with_overrides(**overrides)
    assert str(info.value) == message


def test_a_home_writes_its_config_where_it_reads_it(tmp_path: Path) -> None:
    home = NodeHome(tmp_path)
    home.write_config(EVERY_KEY)
    assert home.config_path == tmp_path / "config.toml"
    assert stat.S_IMODE(home.config_path.stat().st_mode) == 0o600
    assert load_config(home.config_path) == EVERY_KEY
    changed = dataclasses.replace(EVERY_KEY, node=NodeSettings("ja"))
    home.write_config(changed)  # replaces the file
    assert load_config(home.config_path) == changed


def test_announce_roles_are_roles(tmp_path: Path) -> None:
    assert _error(tmp_path, '[node]\nannounce_roles = ["mayor"]\n') == (
        "node.announce_roles: 'mayor' is not one of hq, center, desk"
    )
