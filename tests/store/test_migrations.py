"""Schema step 4: alerts stored by older versions (step 1's rarity rows, step 2's coercion
rows) become envelopes, with the same alert_id a new run gives the same alert."""
from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from tests.schema_check import check
from sensor.store.migrations import MIGRATIONS
from sensor.store.sqlite import Store

ROOT = Path(__file__).resolve().parents[2]
DFS_SENSOR = str(ROOT / ".venv" / "bin" / "dfs-sensor")
CAPTURE = ROOT / "pcaps" / "coerced-auth-clear.pcap"
# Rows as version 2 (before the envelope) stored them for CAPTURE, copied from such a store.
V2_COERCION = ('coercion-confirmed', '["10.0.0.10", "10.0.0.66", "10.0.0.66"]', '2026-11-28', 1795840781348,
               '{"rule":"coercion-confirmed","ts":1795840781.348308,"victim_ip":"10.0.0.10","listener_ip":"10.0.0.66",'
               '"client_ip":"10.0.0.66","user":"DC01$","domain":"LAB","protocol":"smb2","delay":0.061308,'
               '"call_event_ids":["07a4611eba5aa1ab9826bc9cbacb0fd6"],"confidence":1.0,"day_count":0,"detail":""}')
V2_RARE = ('dfscoerce-rare-dfsnm-root-call',
           '[2,"NetrDfsRemoveStdRoot",13,"DC01","6aee2b32-e9f0-51ff-b4a5-622fa5de7570","10.0.0.66","10.0.0.66","share"]',
           '2026-11-28', 1795840781287, 1795840781287, 'DC01', '10.0.0.10', '10.0.0.66', 13,
           '{"rule":"dfscoerce-rare-dfsnm-root-call","actor_type":2,"action_rpc_func_name":"NetrDfsRemoveStdRoot",'
           '"action_rpc_func_opnum":13,"agent_hostname":"DC01","agent_id":"6aee2b32-e9f0-51ff-b4a5-622fa5de7570",'
           '"actor_remote_ip":"10.0.0.66","dfs_relay_server":"10.0.0.66","dfs_root_share":"share","day":"2026-11-28",'
           '"day_count":1,"first_seen":"2026-11-28T04:39:41.287Z","last_seen":"2026-11-28T04:39:41.287Z","hits":1,'
           '"event_ids":["07a4611eba5aa1ab9826bc9cbacb0fd6"],"context":{"agent_ip":"10.0.0.10","actor_remote_port":36620,'
           '"pipe":"\\\\Device\\\\NamedPipe\\\\netdfs","smb_user":"labuser","smb_domain":"LAB","smb_workstation":"",'
           '"smb_dialect":"2.1","rpc_auth_level":null,"stub_sealed":false,"encrypted":false,"interface_inferred":"",'
           '"decode_error":"","exception_code":469827586,"community_id":"1:Z+IvikLvmasoNWimQcgl6n8RZtY=",'
           '"capture_file":"coerced-auth-clear.pcap","capture_frame":25}}')


def test_older_alerts_become_envelopes_with_the_ids_a_new_run_gives(tmp_path):
    old = tmp_path / "v2.db"
    db = sqlite3.connect(old)
    for step in MIGRATIONS[:2]:
        for statement in step:
            db.execute(statement)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (2)")
    db.execute("INSERT INTO coercion_alerts (rule, key, day, ts_ms, record) VALUES (?,?,?,?,?)", V2_COERCION)
    db.execute("INSERT INTO alerts (rule, key, day, first_seen_ms, last_seen_ms, agent_hostname, agent_ip, "
               "actor_remote_ip, opnum, record) VALUES (?,?,?,?,?,?,?,?,?,?)", V2_RARE)
    db.commit()
    db.close()
    store = Store(str(old))
    assert store.schema_version == len(MIGRATIONS)
    upgraded = [check("alert", line) for line in store.alert_records()]
    store.close()
    fresh = subprocess.run([DFS_SENSOR, "replay", "--db", str(tmp_path / "new.db"), str(CAPTURE)],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert sorted(a["alert_id"] for a in upgraded) == sorted(json.loads(line)["alert_id"] for line in fresh)
    assert all(a["sensor"] is None for a in upgraded)       # not recorded by version 2
    # and the upgraded store raises nothing again for the same capture
    again = subprocess.run([DFS_SENSOR, "replay", "--db", str(old), str(CAPTURE)], capture_output=True, text=True,
                           check=True)
    assert again.stdout == ""
