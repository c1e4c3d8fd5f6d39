"""hunt --xql on a store of N events (default 1,000,000 over 30 days, 1 in 1000 a DFSNM root
call): the seed query's wall time through the CLI, and SQLite's plan for it (it must use an
index). Usage: .venv/bin/python bench/xql_hunt.py [N] [DB]"""
from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

from sensor.detect.rarity import window_query
from sensor.events import RpcCallEvent, make_agent_id, xdr_time
from sensor.store.sqlite import Store
from sensor.xql.rules import load_rule
from sensor.xql.sql import register

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "sensor" / "rules" / "dfscoerce" / "seed-exact.xql"
START = 1_790_000_000.0
DAYS = 30


def fill(path: str, n: int) -> None:
    rng = random.Random(1)
    store = Store(path)
    store.begin()
    for i in range(n):
        ts = START + rng.uniform(0, DAYS * 86400)
        root_call = rng.random() < 0.001
        opnum = rng.choice((12, 13)) if root_call else rng.choice((14, 20, 23))
        client = f"10.0.{rng.randrange(4)}.{rng.randrange(250)}"
        server = f"DC{rng.randrange(8):02d}"
        time_text, ms = xdr_time(ts)
        fields = f'{{"ServerName":"10.9.9.{rng.randrange(20)}","RootShare":"s"}}'
        store.add_event(RpcCallEvent(
            _time=time_text, event_timestamp=ms, event_id=f"{i:032x}", event_type=22, event_rpc_protocol=2,
            action_rpc_interface_uuid="{4FC742E0-4A10-11CF-8273-00AA004AE673}",
            action_rpc_interface_version_major=3, action_rpc_interface_version_minor=0,
            action_rpc_interface_name="netdfs", action_rpc_func_opnum=opnum,
            action_rpc_func_name="NetrDfsRemoveStdRoot" if opnum == 13 else f"Opnum{opnum}",
            action_rpc_func_str_call_fields=fields, action_rpc_func_int_call_fields="{}",
            action_rpc_func_exception_code=None, actor_type=2, actor_remote_ip=client, actor_remote_port=50000,
            actor_remote_pipe_name="\\Device\\NamedPipe\\netdfs", agent_hostname=server,
            agent_id=make_agent_id(server), agent_ip="10.0.0.10", agent_port=445, net_community_id="1:x"))
        if i % 50_000 == 49_999:
            store.commit()
            store.begin()
    store.commit()
    store.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    db = sys.argv[2] if len(sys.argv) > 2 else f"/tmp/xql-bench-{n}.db"
    if not Path(db).exists():
        started = time.monotonic()
        fill(db, n)
        print(f"filled {db}: {n:,} events in {time.monotonic() - started:.1f} s")
    started = time.monotonic()
    Store(db).close()       # schema migrations first (a new index on a big store), so the timing is the query's
    print(f"store schema up to date in {time.monotonic() - started:.1f} s")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "sensor.cli", "hunt", "--db", db, "--xql", str(SEED),
                           "--lookback-days", str(DAYS + 1), "--format", "json"],
                          capture_output=True, text=True, cwd=ROOT)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(done.stderr)
    print(f"hunt --xql seed-exact.xql: {len(done.stdout.splitlines())} rows in {seconds:.2f} s (target < 10 s)")
    store = Store(db)
    register(store.db)
    compiled = window_query(store, load_rule(SEED), None, DAYS + 1)      # what the hunt above ran
    plan = [row[3] for row in store.db.execute("EXPLAIN QUERY PLAN " + compiled.sql, compiled.params)]
    store.close()
    print("plan:", " / ".join(plan))
    print("index used:", any("USING INDEX" in step or "USING COVERING INDEX" in step for step in plan))


if __name__ == "__main__":
    main()
