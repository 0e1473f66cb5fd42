"""8 writer processes at once on each lake catalog: rows landed, lock retries, waits, wall time.

    python bench/catalogs.py [--writers 8] [--rounds 3] [--catalogs duckdb,sqlite,postgres]

Each writer replaces its own partition `rounds` times (Lake.replace_partition, 50+ chips rows each);
the parent reads the lake meanwhile. PostgreSQL: a throw-away server (tests/postgres_server.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.test_lake_catalogs import WRITER  # noqa: E402


def run(catalog: str, home: Path, writers: int, rounds: int) -> dict:
    from mmlake.lake import Lake

    lake = Lake(home, catalog=catalog).ensure()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(home), catalog, f"w{i}", str(rounds)], env=env,
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(writers)]
    reads, read_s = 0, 0.0
    while any(p.poll() is None for p in procs):
        t = time.monotonic()
        try:
            lake.query("select count(*) from chips")
            reads += 1
            read_s = max(read_s, time.monotonic() - t)
        except Exception:  # the DuckDB file: a reader is locked out while a writer holds it
            time.sleep(0.05)
    outs = [p.communicate() for p in procs]
    wall = time.monotonic() - t0
    failed = [e[-500:] for p, (_, e) in zip(procs, outs) if p.returncode]
    stats = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs if o.strip()]
    got = lake.query("select session_id, count(*) as n from chips group by 1")
    want = {f"w{i}": 50 + rounds - 1 for i in range(writers)}
    return {"catalog": catalog.split(":")[0], "failed": len(failed), "rows_ok": dict(got.rows()) == want,
            "ledger": lake.query("select count(*) as n from materializations")["n"][0],
            "lock_retries": sum(s["lock_retries"] for s in stats), "write_waits": sum(s["write_waits"] for s in stats),
            "wall_s": round(wall, 1), "reads": reads, "slowest_read_s": round(read_s, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--catalogs", default="duckdb,sqlite,postgres")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mmlake-bench-"))
    server = None
    try:
        for kind in args.catalogs.split(","):
            catalog = kind
            if kind == "postgres":
                from tests.postgres_server import PostgresServer, find_bin

                server = PostgresServer(find_bin()).start()
                catalog = "postgres:" + server.database()
            r = run(catalog, root / kind, args.writers, args.rounds)
            print(f"{r['catalog']:8s} {args.writers} writers x {args.rounds}: rows landed "
                  f"{'all' if r['rows_ok'] else 'NOT ALL'} ({r['ledger']} of {args.writers * args.rounds} "
                  f"materializations), failed writers {r['failed']}, lake-level lock retries {r['lock_retries']}, "
                  f"waits for the writer lock {r['write_waits']}, {r['wall_s']} s wall; {r['reads']} reads meanwhile, "
                  f"slowest {r['slowest_read_s']} s", flush=True)
    finally:
        if server is not None:
            from mmlake.catalog import drop_instances

            drop_instances()
            server.stop()


if __name__ == "__main__":
    main()
