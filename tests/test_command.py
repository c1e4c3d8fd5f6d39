"""The installed command's start-up (sensor/command.py): what the command line's imports made
is out of the collector's generations (frozen), and the collector runs for the command."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ATTACK_CAPTURE = ROOT / "pcaps" / "dfscoerce-smb21.pcap"


def test_the_imports_are_frozen_and_the_collector_runs_for_the_command(tmp_path):
    # At exit: is the command line's click group (made by sensor.cli's import) in a generation
    # the collector walks, and is the collector on?
    probe = ("import atexit, gc, json, sys\n"
             "from sensor import command\n"
             "def seen():\n"
             "    from sensor.cli import main\n"
             "    walked = any(o is main for o in gc.get_objects())\n"
             "    print(json.dumps([gc.is_tracked(main), walked, gc.get_freeze_count(), gc.isenabled()]))\n"
             "atexit.register(seen)\n"
             f"sys.argv = ['dfs-sensor', 'replay', '--db', {str(tmp_path / 's.db')!r}, {str(ATTACK_CAPTURE)!r}]\n"
             "command.run()\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    tracked, walked, frozen, enabled = json.loads(done.stdout.splitlines()[-1])
    assert tracked and not walked and frozen > 0
    assert enabled
    assert done.stdout.count('"event_type":"alert"') == 2          # the replay ran as ever
    assert "2 events (2 new), 2 alert(s)" in done.stderr

