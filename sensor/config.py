"""Configuration: embedded defaults, an optional TOML file, environment, command-line flags.

Precedence, highest first: flags > config file > environment > defaults. Nothing needs a
config file; a file names only what it changes:

    db = "/var/lib/dfs-sensor/sensor.db"
    rules = ["/etc/dfs-sensor/rules"]   # XQL rule files or directories, on top of the shipped ones
    sensor_name = "sensor-hq-1"   # in every alert and event (default: the host name)
    allowlist = "/etc/dfs-sensor/allowlist.toml"   # alerts judged benign (sensor/suppress.py)
    [detector]
    threshold = 7            # override each rule's K ("filter N < K"): alert below this many days
    lookback_days = 30
    day_mode = "utc-date"    # or "day-of-month": how a rule's extract_time(_time, "DAY") day is read
    match = "opnum-12-13"    # or "seed-exact": which shipped DFSCoerce rule file runs
    [coercion]
    enabled = true           # correlate back-authentications, fingerprint encrypted sessions
    window = 30.0            # seconds from an inbound session to V's machine-account logon
    known_servers = ["10.0.0.20"]   # listeners that are real servers (lower confidence)
    [outputs]
    events = "/var/log/dfs-sensor/events.jsonl"   # "-" is stdout; absent: no event log
    alerts = "syslog+tls://siem.example:6514"     # or a path, "-", http(s)://, splunk+https://, elastic+https://
    spool_dir = "/var/lib/dfs-sensor/spool"       # remote targets and an unreachable PostgreSQL's
                                                  # batches wait here (default: beside db; for a
                                                  # postgresql:// db, in the state directory)
    spool_max_bytes = 67108864                    # per target; beyond it the oldest are dropped, counted
    spool_flush_seconds = 5.0                     # at exit, the longest to wait for a collector
    http_format = "lines"                         # plain http(s)://: "lines" (JSON lines) or "array"
    token_file = "/etc/dfs-sensor/token"          # HTTP token (else $DFS_SENSOR_HTTP_TOKEN)
    ca_file = "/etc/dfs-sensor/ca.pem"            # private CA for syslog+tls://, relp+tls:// and https://
    tls_verify = true
    evidence = "/var/lib/dfs-sensor/evidence"     # a pcap per alert (--evidence)
    evidence_max_bytes = 268435456                # the directory's bound; the oldest go first
    [address_groups]         # hosts by role, for the rules' `in $name` (README, "Address groups")
    print_servers = ["10.0.0.10", "ps1.corp.example", "10.1.0.0/24"]   # addresses, CIDR, names
    [store]
    max_clock_skew = 86400.0 # seconds a frame may be ahead of this machine's clock and
                             # still move the retention window (see README, Robustness)
    # PostgreSQL db only: while the database is unreachable, batches wait in a spool
    # (outputs.spool_dir) and capture goes on (see README, Many sensors)
    spool_max_bytes = 268435456  # beyond it the oldest batches are dropped, counted
    retry_max_seconds = 30.0     # longest wait between two attempts to reach the database
    flush_seconds = 5.0          # at the end of a run, how long to wait for the database
    batch_deadline_seconds = 5.0 # longest a batch waits for a hung server (then it is spooled)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from sensor.alerts import default_sensor_name
from sensor.coercion.correlate import DEFAULT_WINDOW
from sensor.detect.rarity import DAY_MODES, MATCH_MODES, RaritySettings
from sensor.evidence import DEFAULT_MAX_BYTES as EVIDENCE_MAX_BYTES
from sensor.sinks.sender import FLUSH_SECONDS
from sensor.sinks.targets import SinkSettings
from sensor.store import BATCH_DEADLINE_SECONDS, POSTGRES_SCHEMES
from sensor.store.spooled import (DEFAULT_FLUSH_SECONDS, DEFAULT_MAX_BYTES as STORE_SPOOL_MAX_BYTES,
                                  DEFAULT_RETRY_MAX_SECONDS, StoreSpoolSettings)
from sensor.xql.groups import address_groups

DB_ENV = "DFS_SENSOR_DB"
DB_FILE_NAME = "sensor.db"
APP_DIR_NAME = "dfs-sensor"
STDOUT = "-"

# Sections and keys the file may hold; anything else is a typo the user must hear about.
_FILE_KEYS: dict[str | None, dict[str, type]] = {
    None: {"db": str, "rules": list, "sensor_name": str, "allowlist": str},
    "detector": {"threshold": int, "lookback_days": int, "day_mode": str, "match": str},
    "outputs": {"events": str, "alerts": str, "spool_dir": str, "spool_max_bytes": int, "http_format": str,
                "token_file": str, "ca_file": str, "tls_verify": bool, "evidence": str,
                "evidence_max_bytes": int, "spool_flush_seconds": float},
    "coercion": {"enabled": bool, "window": float, "known_servers": list},
    "store": {"max_clock_skew": float, "spool_max_bytes": int, "retry_max_seconds": float,
              "flush_seconds": float, "batch_deadline_seconds": float},
}
# Keys of [coercion] and [store], prefixed in the flat settings so they cannot collide with
# other sections'.
_COERCION_PREFIX = "coercion."
_STORE_PREFIX = "store."
_PREFIXES = {"coercion": _COERCION_PREFIX, "store": _STORE_PREFIX}
# A section whose keys the user names (each an address group); checked by groups.py.
_ADDRESS_GROUPS = "address_groups"

# Ranges every setting is checked against before use. The window's days become dates and
# SQLite integers (epoch ms): a century is more than any hunt needs and far from overflow.
MAX_LOOKBACK_DAYS = 36_500
# A key cannot be seen on more distinct days than the window holds.
MAX_THRESHOLD = MAX_LOOKBACK_DAYS + 1
# The coercion correlator's window: an hour is far beyond any relay's delay.
MAX_COERCION_WINDOW = 3600.0
# How far a frame's time may run ahead of the sensor's clock and still move the retention
# window: a day covers badly set capture hosts and time zones mistaken for UTC.
DEFAULT_MAX_CLOCK_SKEW = 86_400.0
# A year: beyond that a "skew" is a wrong clock, not a tolerance.
MAX_CLOCK_SKEW = 365 * 86_400.0
# Disk bounds of a remote target's spool and of the evidence directory: a tebibyte is more
# than a sensor's disk holds, so a bigger number is a typo.
MAX_SPOOL_BYTES = MAX_EVIDENCE_BYTES = 1 << 40
# Waiting longer than this for a collector (or the database) at exit outlasts any service
# manager's stop timeout.
MAX_FLUSH_SECONDS = 600.0
# Between two attempts to reach the database: beyond an hour a sensor would notice a
# recovered database too late.
MAX_STORE_RETRY_SECONDS = 3600.0
# A PostgreSQL batch's deadline: below a second a loaded server's healthy batch (0.5-2.3 s for
# 1000 events) would be cut off and spooled over and over; beyond 10 minutes a live capture
# thread waiting on a hung server has long overrun the kernel's ring.
MIN_BATCH_DEADLINE_SECONDS, MAX_BATCH_DEADLINE_SECONDS = 1.0, 600.0


class ConfigError(ValueError):
    """The configuration cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class CoercionConfig:
    """[coercion] of the configuration."""
    enabled: bool = True
    window: float = DEFAULT_WINDOW
    known_servers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Config:
    """Everything a command runs with (see the module docstring)."""
    db: str
    detector: RaritySettings = field(default_factory=RaritySettings)
    events: str | None = None        # path or "-"; None: events are stored, not logged
    alerts: str | None = STDOUT      # path or "-"; None: alerts are stored, not logged
    coercion: CoercionConfig = field(default_factory=CoercionConfig)
    sensor_name: str = field(default_factory=default_sensor_name)   # in every alert and event
    sinks: SinkSettings = field(default_factory=SinkSettings)       # remote --events/--alerts targets
    evidence: str | None = None          # directory of per-alert pcaps; None: none written
    allowlist: str | None = None         # suppression file (sensor/suppress.py); reloaded on SIGHUP
    evidence_max_bytes: int = EVIDENCE_MAX_BYTES
    max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW
    store_spool: StoreSpoolSettings = field(default_factory=StoreSpoolSettings)   # PostgreSQL outages
    store_deadline: float = BATCH_DEADLINE_SECONDS   # PostgreSQL: [store] batch_deadline_seconds


def default_db_path(env: Mapping[str, str]) -> str:
    """systemd's StateDirectory= ($STATE_DIRECTORY), else the XDG state directory."""
    state_directory = env.get("STATE_DIRECTORY")
    if state_directory:
        # systemd joins several StateDirectory= entries with ':'; the first is ours.
        return str(Path(state_directory.split(":")[0]) / DB_FILE_NAME)
    xdg = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return str(Path(xdg) / APP_DIR_NAME / DB_FILE_NAME)


def load_config(path: str | None = None, flags: Mapping[str, Any] | None = None,
                env: Mapping[str, str] | None = None) -> Config:
    """Build the Config. ``flags`` holds command-line values; None means "not given"."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {"db": env.get(DB_ENV) or default_db_path(env)}
    if path is not None:
        values.update(_read_file(path))
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    if "spool_dir" not in values and str(values["db"]).startswith(POSTGRES_SCHEMES):
        # a URL has no directory to be beside: the state directory a SQLite store would use
        values["spool_dir"] = str(Path(default_db_path(env)).parent / "spool")
    return _build(values)


def _read_file(path: str) -> dict[str, Any]:
    import tomllib      # only with a configuration file

    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file (TOML is UTF-8)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    flat: dict[str, Any] = {}
    for name, value in document.items():
        if name == _ADDRESS_GROUPS:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {name} must be a table ([{name}]), not {type(value).__name__}")
            flat[name] = value
        elif isinstance(value, dict) and name in _FILE_KEYS:
            section_keys = _FILE_KEYS[name]
            prefix = _PREFIXES.get(name, "")
            for key, item in value.items():
                flat[prefix + key] = _checked(path, f"{name}.{key}", item, section_keys.get(key))
        else:
            flat[name] = _checked(path, name, value, _FILE_KEYS[None].get(name))
    return flat


def _checked(path: str, name: str, value: Any, expected: type | None) -> Any:
    if expected is None:
        raise ConfigError(f"{path}: unknown setting {name!r}")
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)     # "window = 30" means 30.0
    # bool is an int subclass in Python; "threshold = true" is still a mistake.
    if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
        raise ConfigError(f"{path}: {name} must be {expected.__name__}, not {type(value).__name__}")
    return value


def _build(values: dict[str, Any]) -> Config:
    detector = RaritySettings()
    detector_changes = {k: values[k] for k in ("threshold", "lookback_days", "day_mode", "match") if k in values}
    detector = replace(detector, **detector_changes)
    rules = values.get("rules", ())
    if isinstance(rules, str) or not all(isinstance(r, str) for r in rules):
        raise ConfigError("rules must be a list of rule files or directories")
    try:
        groups = address_groups(values.get(_ADDRESS_GROUPS, {}))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    detector = replace(detector, rules=tuple(rules), groups=groups)
    if detector.threshold is not None:      # None: each rule's own K
        _in_range("threshold", detector.threshold, 1, MAX_THRESHOLD)
    _in_range("lookback_days", detector.lookback_days, 1, MAX_LOOKBACK_DAYS)
    if detector.day_mode not in DAY_MODES:
        raise ConfigError(f"day_mode must be one of {', '.join(DAY_MODES)}, not {detector.day_mode!r}")
    if detector.match not in MATCH_MODES:
        raise ConfigError(f"match must be one of {', '.join(MATCH_MODES)}, not {detector.match!r}")
    window = values.get(_COERCION_PREFIX + "window", DEFAULT_WINDOW)
    if not 0 < window <= MAX_COERCION_WINDOW:      # NaN fails too
        raise ConfigError(f"coercion.window must be more than 0 and at most {MAX_COERCION_WINDOW:g} "
                          f"seconds, not {window}")
    known_servers = values.get(_COERCION_PREFIX + "known_servers", ())
    if not all(isinstance(s, str) for s in known_servers):
        raise ConfigError("coercion.known_servers must be a list of addresses (strings)")
    coercion = CoercionConfig(enabled=values.get(_COERCION_PREFIX + "enabled", True), window=window,
                              known_servers=frozenset(known_servers))
    skew = values.get(_STORE_PREFIX + "max_clock_skew", DEFAULT_MAX_CLOCK_SKEW)
    if not 0 <= skew <= MAX_CLOCK_SKEW:
        raise ConfigError(f"store.max_clock_skew must be 0 to {MAX_CLOCK_SKEW:g} seconds, not {skew}")
    db = values["db"]
    if not db.strip():
        raise ConfigError("db must name a database file, not be empty (SQLite would use a "
                          "temporary store and forget it)")
    sensor_name = values.get("sensor_name") or default_sensor_name()
    sinks = SinkSettings(**{k: values[k] for k in ("spool_dir", "spool_max_bytes", "http_format", "token_file",
                                                   "ca_file", "tls_verify") if k in values},
                         sensor_name=sensor_name, db=db,
                         flush_seconds=values.get("spool_flush_seconds", FLUSH_SECONDS))
    _in_range("outputs.spool_max_bytes", sinks.spool_max_bytes, 1, MAX_SPOOL_BYTES)
    _in_range("outputs.spool_flush_seconds", sinks.flush_seconds, 0, MAX_FLUSH_SECONDS)
    store_spool = StoreSpoolSettings(
        directory=values.get("spool_dir") or str(Path(db).parent / "spool"),
        max_bytes=values.get(_STORE_PREFIX + "spool_max_bytes", STORE_SPOOL_MAX_BYTES),
        retry_max_seconds=values.get(_STORE_PREFIX + "retry_max_seconds", DEFAULT_RETRY_MAX_SECONDS),
        flush_seconds=values.get(_STORE_PREFIX + "flush_seconds", DEFAULT_FLUSH_SECONDS))
    _in_range("store.spool_max_bytes", store_spool.max_bytes, 1, MAX_SPOOL_BYTES)
    _in_range("store.retry_max_seconds", store_spool.retry_max_seconds, 0, MAX_STORE_RETRY_SECONDS)
    _in_range("store.flush_seconds", store_spool.flush_seconds, 0, MAX_FLUSH_SECONDS)
    store_deadline = values.get(_STORE_PREFIX + "batch_deadline_seconds", BATCH_DEADLINE_SECONDS)
    _in_range("store.batch_deadline_seconds", store_deadline, MIN_BATCH_DEADLINE_SECONDS, MAX_BATCH_DEADLINE_SECONDS)
    evidence_max_bytes = values.get("evidence_max_bytes", EVIDENCE_MAX_BYTES)
    _in_range("outputs.evidence_max_bytes", evidence_max_bytes, 1, MAX_EVIDENCE_BYTES)
    return Config(db=db, detector=detector, events=values.get("events"),
                  alerts=values.get("alerts", STDOUT), coercion=coercion, max_clock_skew=skew,
                  sensor_name=sensor_name, sinks=sinks, evidence=values.get("evidence"),
                  evidence_max_bytes=evidence_max_bytes, allowlist=values.get("allowlist"),
                  store_spool=store_spool, store_deadline=store_deadline)


def _in_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{name} must be {low} to {high}, not {value}")
