"""What the long-running service needs from the operating system, for both engines (native
sensor.service, tshark sensor.tshark.live): exit codes, one-write log lines, signal flags
(SIGTERM/SIGINT stop, SIGHUP reopens the outputs), the syslog tee of the alerts, and giving
up privileges once the capture sockets are open.

Privileges: an open AF_PACKET socket keeps working without any capability; CAP_NET_RAW is the
only one the sensor keeps (capabilities(7)), everything else goes: the bounding set, the other
user and group ids, ambient capabilities, and the right to gain any back (no_new_privs).
"""
from __future__ import annotations

import codecs
import ctypes
import json
import os
import pwd
import signal
import sys
import syslog as syslog_module

from sensor.outputs import OutputError, Outputs
from sensor.text import json_line

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2          # click's code for a usage error: bad flag, filter, interface, user
# Codecs load their module on first use. After the drop to --user the Python installation
# may be unreadable (or replaced by an upgrade), so the ones the decoders use load first.
PRELOADED_CODECS = ("utf-8", "utf-16-le", "latin-1", "ascii")


def log(text: str) -> None:
    """One line (or block) to stderr in a single write: workers share the stream, and print()
    writes the text and its newline separately, so their lines would interleave."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def notice(message: str) -> None:
    """A sensor's news for the log (a store outage, a full spool): one prefixed line."""
    log(f"dfs-sensor: {message}")


class SyslogAlerts:
    """The alerts sink, teed to the local syslog (journald reads /dev/log under systemd)."""

    def __init__(self, sink) -> None:
        self.sink = sink
        syslog_module.openlog("dfs-sensor", syslog_module.LOG_PID, syslog_module.LOG_DAEMON)

    def write(self, line: str) -> None:
        if self.sink is not None:
            self.sink.write(line)
        # Journald and log viewers show what syslog stores: the alert's JSON re-encoded as
        # ASCII, so bidi overrides and other invisible characters off the wire arrive as \u
        # escapes (JSON already escapes the C0 controls).
        syslog_module.syslog(syslog_module.LOG_WARNING, json_line(json.loads(line), ascii_only=True))

    def reopen(self) -> None:
        if self.sink is not None:
            self.sink.reopen()

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
        syslog_module.closelog()


class Signals:
    """Flags set by signal handlers, acted on by the capture loop."""

    def __init__(self) -> None:
        self.stop = False
        self.reopen = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop(self, signum, frame) -> None:
        self.stop = True

    def _on_hup(self, signum, frame) -> None:
        self.reopen = True

    def stopping(self) -> bool:
        return self.stop

    def reopen_if_asked(self, outputs: Outputs, *sensors) -> None:
        """After SIGHUP (logrotate): reopen the output files and reload the sensors' allow-lists;
        a failure is logged, not fatal."""
        if self.reopen:
            self.reopen = False
            for sensor in sensors:
                if sensor.allowlist.path:
                    log("dfs-sensor: " + sensor.allowlist.reload())
            try:
                outputs.reopen()
            except OutputError as e:
                log(f"dfs-sensor: SIGHUP: {e}")


# -- privileges ---------------------------------------------------------------------------
CAP_NET_RAW = 13
KEPT_CAPABILITIES = 1 << CAP_NET_RAW

# linux/prctl.h
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAP_SETPCAP = 8
# linux/capability.h: 64-bit capability sets, two 32-bit words
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class PrivilegeError(Exception):
    """The sensor will not run with these privileges; the message says what to do."""


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise PrivilegeError(f"{what}: {os.strerror(err)}")


def _prctl(option: int, arg: int, arg3: int = 0) -> int:
    return _libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(arg3), ctypes.c_ulong(0), ctypes.c_ulong(0))


def capabilities(pid: int | str = "self") -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb of a process, from /proc/<pid>/status."""
    caps = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Cap"):
                name, value = line.split(":")
                caps[name] = int(value, 16)
    return caps


def refuse_root(allow_root: bool, user: str | None) -> None:
    """Root with nowhere to drop to is refused unless asked for explicitly."""
    if os.geteuid() == 0 and user is None and not allow_root:
        raise PrivilegeError("refusing to run as root: give --user NAME to drop to after opening "
                             "the capture sockets, or --allow-root to stay root (without "
                             "capabilities other than CAP_NET_RAW)")


def drop_privileges(user: str | None) -> None:
    """Become ``user`` (when given; needs root) keeping only CAP_NET_RAW, for good."""
    for codec in PRELOADED_CODECS:
        codecs.lookup(codec)
    account = None
    if user is not None:
        try:
            account = pwd.getpwnam(user)
        except KeyError:
            raise PrivilegeError(f"no such user: {user}") from None
        if os.geteuid() != 0 and account.pw_uid != os.geteuid():
            raise PrivilegeError(f"--user {user} needs root to switch to")
    if capabilities()["CapEff"] & (1 << CAP_SETPCAP):
        # Out of the bounding set, no later execve can get them back. Needs CAP_SETPCAP, so
        # before the uid change clears the effective set; systemd's CapabilityBoundingSet=
        # does the same when the unit starts us unprivileged.
        last_cap = int(open("/proc/sys/kernel/cap_last_cap").read())
        for cap in range(last_cap + 1):
            if cap != CAP_NET_RAW:
                _check(_prctl(PR_CAPBSET_DROP, cap), f"dropping capability {cap} from the bounding set")
    if account is not None and os.geteuid() == 0:
        # KEEPCAPS: setuid away from 0 keeps the permitted set, so CAP_NET_RAW can be kept.
        _check(_prctl(PR_SET_KEEPCAPS, 1), "prctl(PR_SET_KEEPCAPS)")
        os.setgroups([])
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)
        _check(_prctl(PR_SET_KEEPCAPS, 0), "prctl(PR_SET_KEEPCAPS)")
    kept = KEPT_CAPABILITIES & capabilities()["CapPrm"]
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)(_CapData(kept, kept, 0), _CapData(0, 0, 0))
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    # systemd's AmbientCapabilities= put CAP_NET_RAW here; no child of ours should inherit it.
    _check(_prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL), "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    _check(_prctl(PR_SET_NO_NEW_PRIVS, 1), "prctl(PR_SET_NO_NEW_PRIVS)")


def give_outputs_to(user: str | None, outputs: Outputs) -> None:
    """Root opened the output files; after the drop, ``user`` must be able to reopen them
    (SIGHUP without a rotation reopens the same file)."""
    if user is None or os.geteuid() != 0:
        return
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"no such user: {user}") from None
    for sink in (outputs.events, outputs.alerts):
        for path in sink.files() if sink is not None else ():
            os.chown(path, account.pw_uid, account.pw_gid)
