"""Configuration: defaults, state directory, precedence flags > file > env > defaults, errors."""
from __future__ import annotations

import pytest

from sensor.config import ConfigError, load_config
from sensor.detect.rarity import RaritySettings


def test_defaults_need_no_file():
    config = load_config(env={"HOME": "/home/u"})
    assert config.db == "/home/u/.local/state/dfs-sensor/sensor.db"
    assert config.detector == RaritySettings(threshold=None, lookback_days=30, day_mode="utc-date",
                                             match="opnum-12-13")
    assert (config.events, config.alerts) == (None, "-")


def test_state_directories():
    assert load_config(env={"HOME": "/h", "XDG_STATE_HOME": "/x"}).db == "/x/dfs-sensor/sensor.db"
    # systemd StateDirectory=dfs-sensor sets STATE_DIRECTORY (':'-joined when several)
    assert load_config(env={"HOME": "/h", "XDG_STATE_HOME": "/x",
                            "STATE_DIRECTORY": "/var/lib/dfs-sensor:/var/lib/other"}).db \
        == "/var/lib/dfs-sensor/sensor.db"


def test_precedence_flags_over_file_over_env(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text('db = "/from/file.db"\n[detector]\nthreshold = 3\nday_mode = "day-of-month"\n'
                    '[outputs]\nevents = "/var/log/e.jsonl"\n')
    env = {"HOME": "/h", "DFS_SENSOR_DB": "/from/env.db"}
    assert load_config(env=env).db == "/from/env.db"
    config = load_config(str(file), env=env)
    assert (config.db, config.detector.threshold, config.detector.day_mode, config.events) == \
        ("/from/file.db", 3, "day-of-month", "/var/log/e.jsonl")
    assert config.detector.lookback_days == 30
    flagged = load_config(str(file), {"db": "/flag.db", "threshold": 5, "day_mode": None}, env=env)
    assert (flagged.db, flagged.detector.threshold, flagged.detector.day_mode) == ("/flag.db", 5, "day-of-month")


@pytest.mark.parametrize("text, message", [
    ("thresold = 3\n", "unknown setting 'thresold'"),
    ("[detector]\nthreshhold = 3\n", "unknown setting 'detector.threshhold'"),
    ("[detector]\nthreshold = \"7\"\n", "detector.threshold must be int, not str"),
    ("[detector]\nthreshold = true\n", "detector.threshold must be int"),
    ("[detector]\nthreshold = 0\n", "threshold must be 1 to 36501, not 0"),
    ("[detector]\nday_mode = \"weekday\"\n", "day_mode must be one of utc-date, day-of-month"),
    ("[detector]\nmatch = \"all\"\n", "match must be one of"),
    ("[detector\n", "not valid TOML"),
    ("[address_groups]\nprint_servers = [\"10.0.0.10\", \"10.0.0.0/33\"]\n",
     "address_groups.print_servers: '10.0.0.0/33' is not an address, a CIDR range or a host name"),
    ("[address_groups]\nprint_servers = \"10.0.0.10\"\n", "address_groups.print_servers must be a list"),
    ("[address_groups]\n\"print servers\" = []\n", "'print servers' is not a group name"),
    ("address_groups = [\"10.0.0.10\"]\n", "address_groups must be a table"),
    ("[store]\nspool_max_bytes = 0\n", "store.spool_max_bytes must be 1 to"),
    ("[store]\nretry_max_seconds = -1\n", "store.retry_max_seconds must be 0 to 3600.0, not -1.0"),
    ("[store]\nflush_seconds = nan\n", "store.flush_seconds must be 0 to 600.0, not nan"),
])
def test_bad_files_are_clear_errors(tmp_path, text, message):
    file = tmp_path / "c.toml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(str(file), env={"HOME": "/h"})


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="No such file"):
        load_config(str(tmp_path / "nope.toml"), env={"HOME": "/h"})


def test_rules_from_the_file_and_their_type(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text('rules = ["/etc/dfs-sensor/rules", "extra.xql"]\n')
    assert load_config(str(file), env={"HOME": "/h"}).detector.rules == ("/etc/dfs-sensor/rules", "extra.xql")
    file.write_text('rules = "/etc/dfs-sensor/rules"\n')
    with pytest.raises(ConfigError, match="rules must be list"):
        load_config(str(file), env={"HOME": "/h"})


def test_address_groups_from_the_file_over_the_empty_defaults(tmp_path):
    assert dict(load_config(env={"HOME": "/h"}).detector.groups) == {"print_servers": ()}
    file = tmp_path / "c.toml"
    file.write_text('[address_groups]\nprint_servers = ["10.0.0.10", "ps1.corp.example", "10.1.0.0/24"]\n'
                    'dns_servers = ["2001:db8::53"]\n')
    assert dict(load_config(str(file), env={"HOME": "/h"}).detector.groups) == {
        "print_servers": ("10.0.0.10", "ps1.corp.example", "10.1.0.0/24"), "dns_servers": ("2001:db8::53",)}


def test_the_postgresql_spool_sits_in_the_state_directory_or_spool_dir(tmp_path):
    """A SQLite db's spools are beside it; a URL has no directory, so the state directory's
    "spool" holds the remote targets' and the store's spools (outputs.spool_dir overrides)."""
    url = "postgresql://sensor@db.example/dfs"
    env = {"HOME": "/h", "STATE_DIRECTORY": "/var/lib/dfs-sensor"}
    fleet = load_config(flags={"db": url}, env=env)
    assert fleet.store_spool.directory == fleet.sinks.spool_dir == "/var/lib/dfs-sensor/spool"
    assert load_config(flags={"db": "/data/s.db"}, env=env).store_spool.directory == "/data/spool"
    file = tmp_path / "c.toml"
    file.write_text('[outputs]\nspool_dir = "/srv/spool"\n[store]\nspool_max_bytes = 1000\n'
                    'retry_max_seconds = 2\nflush_seconds = 0\n')
    spool = load_config(str(file), {"db": url}, env=env).store_spool
    assert (spool.directory, spool.max_bytes, spool.retry_max_seconds, spool.flush_seconds) == \
        ("/srv/spool", 1000, 2.0, 0.0)
