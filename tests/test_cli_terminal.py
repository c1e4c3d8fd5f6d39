"""`dfs-sensor replay` on a terminal (a pty for stdout and stderr, as a user at a shell): the
progress bar is cleared before any alert line or message, so no line is glued onto it."""
from __future__ import annotations

import json
import os
import pty
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DFS_SENSOR = str(ROOT / ".venv" / "bin" / "dfs-sensor")
CAPTURES = [ROOT / "pcaps" / "coerced-auth-clear.pcap", ROOT / "pcaps" / "dfscoerce-smb21.pcap"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_a_terminal(*args: str) -> str:
    """Run with stdout and stderr on one pty; everything the terminal received."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([DFS_SENSOR, *args], stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
                            env=os.environ | {"COLUMNS": "100", "TERM": "xterm"})
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:          # EIO: the process closed its side
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(leader)
    return b"".join(chunks).decode()


def screen_lines(raw: str) -> list[str]:
    """What stays on screen per line: a carriage return or an erase-line restarts the line."""
    lines = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        line = line.replace("\x1b[K", "\r")
        lines.append(ANSI.sub("", line.split("\r")[-1]))
    return lines


def test_alert_lines_start_on_a_clean_line(tmp_path):
    raw = on_a_terminal("replay", "--db", str(tmp_path / "s.db"), *map(str, CAPTURES))
    assert "replay" in raw and "%" in raw                    # the bar was drawn
    alerts = [line for line in screen_lines(raw) if '"event_type":"alert"' in line]
    assert len(alerts) == 3
    for line in alerts:
        assert line.startswith('{"timestamp"'), repr(line)
        json.loads(line)
    assert any(line.startswith("2 file(s)") for line in screen_lines(raw))


def test_a_message_starts_on_a_clean_line(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text('[outputs]\nspool_dir = "%s"\n' % (tmp_path / "spool"))
    raw = on_a_terminal("replay", "--db", str(tmp_path / "s.db"), "--config", str(bad),
                        "--alerts", "http://127.0.0.1:9/x", *map(str, CAPTURES))
    messages = [line for line in screen_lines(raw) if "dfs-sensor:" in line]
    assert messages and all(line.startswith("dfs-sensor: ") for line in messages), messages
