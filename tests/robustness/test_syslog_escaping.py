"""The live service's --syslog tee (sensor.daemon.SyslogAlerts) with an attacker's ServerName
full of control characters: what reaches the syslog socket is one datagram per alert, every
control character escaped. The child runs in a private mount namespace whose /dev is a fresh
tmpfs, so its own unix datagram socket is /dev/log and the host's syslog is never touched."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.robustness.test_attacker_strings import EVIL_SERVER, evil_capture

LOG_DAEMON_WARNING = (3 << 3) | 4    # RFC 3164 PRI: facility daemon (3), severity warning (4)

CHILD = textwrap.dedent("""
    import json, socket, sys
    from sensor.capture.pcapfile import open_capture
    from sensor.config import Config
    from sensor.outputs import Outputs
    from sensor.sensor import Sensor
    from sensor.daemon import SyslogAlerts

    log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    log.bind("/dev/log")
    outputs = Outputs(alerts=SyslogAlerts(None))
    sensor = Sensor(Config(db=sys.argv[2]), outputs)
    with open_capture(sys.argv[1]) as reader:
        sensor.process(reader)
    sensor.finish()
    outputs.close()
    log.setblocking(False)
    datagrams = []
    while True:
        try:
            datagrams.append(log.recv(65536).decode("utf-8"))
        except BlockingIOError:
            break
    print(json.dumps(datagrams))
""")


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) and root for a private /dev")
def test_alert_with_control_characters_reaches_syslog_escaped(tmp_path):
    capture = evil_capture(tmp_path)
    (tmp_path / "child.py").write_text(CHILD)
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount -t tmpfs tmpfs /dev && exec "$0" "$@"', sys.executable, str(tmp_path / "child.py"),
         str(capture), str(tmp_path / "s.db")],
        capture_output=True, text=True, timeout=60, cwd=sys.path[0] or ".")
    if proc.returncode != 0 and "Operation not permitted" in proc.stderr:
        pytest.skip("no permission for a mount namespace")
    assert proc.returncode == 0, proc.stderr
    datagrams = json.loads(proc.stdout)
    assert len(datagrams) == 2                                  # one per alert: no injected records
    for datagram in datagrams:
        assert datagram.startswith(f"<{LOG_DAEMON_WARNING}>")
        header, _, message = datagram.partition("dfs-sensor[")
        assert header and "]: " in message
        line = message.split("]: ", 1)[1]
        assert line.isascii() and line.isprintable(), repr(line)
        assert "\\u001b[2J\\u0007\\n\\u202eB\\r" in line           # as JSON escapes, not as bytes
        assert json.loads(line)["dfs_relay_server"] == EVIL_SERVER
