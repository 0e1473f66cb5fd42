"""Similar-chip search at 1,000,000 chips: `mmlake.similar` against DuckDB's own exact scan.

    .venv/bin/python bench/similar.py                      # 1,000,000 chips, 67-d (fft) and 512-d (vgg16)
    .venv/bin/python bench/similar.py --chips 200000 --dims 67 --baseline-runs 1

A throw-away lake (temp folder) gets `--chips` embeddings per dimension in `haadf_embeddings`
(FLOAT[] as the assets write them: 400 sessions x 2,500 chips at 1,000,000, eight Gaussian
clusters), plus the `sessions`, `chip_grids` and `chips` rows the result is joined with. Printed:

- insert: writing the rows (what the embedding asset would have done, for scale);
- index build: the first `similar_chips` call (streams the table out of DuckDB once, centres and
  normalises into a memory-mapped float32 matrix; happens again only when embeddings change);
- query: `similar_chips(lake, session, row, col, n=10)` with the index built: median and max of
  `--runs` calls at random chips, end to end (fingerprint check, matrix-vector product, top-10,
  join with sessions/chips/regions); `search` is the matrix-vector product + top-10 alone;
- baseline: the documented exact scan in DuckDB (`sql/queries/similar_chips.sql`, centred cosine
  with `list_transform` + `list_cosine_similarity`) and the plain `list_cosine_similarity` scan
  without centring, each run `--baseline-runs` times.

Numbers are from whatever machine runs it; on the shared 2-core development machine other
processes inflate them.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def fill(lake, n_chips: int, dim: int, encoder: str, seed: int = 0) -> tuple[list[str], float]:
    import pyarrow as pa

    per = 2500
    n_sessions = -(-n_chips // per)
    sids = [f"bench-{i // 100}.s{i:04d}@0~a" for i in range(n_sessions)]
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (8, dim)).astype(np.float32)
    t0 = time.perf_counter()
    with lake.connect() as con:
        mid = "bench"
        con.execute("insert into materializations (materialization_id, asset_key, code_version, data_version, "
                    "is_current) values (?, 'bench', 'bench', 'bench', true) on conflict do nothing", [mid])
        con.register("s", pa.table({"session_id": sids, "campaign": [s.split(".")[0] for s in sids],
                                    "sample": [f"s{i:04d}" for i in range(n_sessions)]}))
        con.execute("insert into sessions (session_id, campaign, sample, dose_dpa, dose_key, materialization_id) "
                    "select session_id, campaign, sample, 0.0, '0', 'bench' from s where session_id not in "
                    "(select session_id from sessions)")
        con.execute("insert into chip_grids (session_id, chip_px, chip_px_source, n_rows, n_cols, origin_y, origin_x, "
                    "materialization_id) select session_id, 20, 'manifest', 50, 50, 0, 0, 'bench' from s "
                    "where session_id not in (select session_id from chip_grids)")
        con.unregister("s")
        done = 0
        for i, sid in enumerate(sids):
            m = min(per, n_chips - done)
            lab = rng.integers(0, 8, m)
            v = centres[lab] + rng.normal(0, 0.6, (m, dim)).astype(np.float32)
            vec = pa.ListArray.from_arrays(pa.array(np.arange(0, (m + 1) * dim, dim, dtype=np.int32)),
                                           pa.array(v.ravel()))
            idx = np.arange(m, dtype=np.int32)
            con.register("b", pa.table({"session_id": [sid] * m, "chip_index": idx, "vector": vec}))
            con.execute("insert into haadf_embeddings select session_id, ?, chip_index, vector, 'bench' from b", [encoder])
            if not con.execute("select count(*) from chips where session_id = ?", [sid]).fetchone()[0]:
                con.execute("insert into chips (session_id, chip_index, row, col, y0, x0, materialization_id) "
                            "select session_id, chip_index, chip_index // 50, chip_index % 50, 0, 0, 'bench' from b")
            con.unregister("b")
            done += m
    return sids, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chips", type=int, default=1_000_000)
    ap.add_argument("--dims", type=int, nargs="+", default=[67, 512])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--baseline-runs", type=int, default=1)
    args = ap.parse_args(argv)

    from mmlake.lake import Lake
    from mmlake.similar import load_index, similar_chips

    sql_text = (REPO / "sql" / "queries" / "similar_chips.sql").read_text()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmlake-bench-similar-") as tmp:
        lake = Lake(Path(tmp) / "lake").ensure()
        for dim in args.dims:
            enc = f"bench{dim}"
            sids, t_fill = fill(lake, args.chips, dim, enc, seed=dim)
            rng = np.random.default_rng(1)
            t0 = time.perf_counter()
            similar_chips(lake, sids[0], 3, 4, n=10, encoder=enc)
            t_build = time.perf_counter() - t0
            times = []
            for _ in range(args.runs):
                sid = sids[int(rng.integers(len(sids)))]
                r, c = (int(x) for x in rng.integers(0, 50, 2))
                t0 = time.perf_counter()
                res = similar_chips(lake, sid, r, c, n=10, encoder=enc)
                times.append(time.perf_counter() - t0)
            assert len(res) == 10
            index = load_index(lake, enc)
            s_times = []
            for _ in range(args.runs):
                q = index.vectors[int(rng.integers(index.n))]
                t0 = time.perf_counter()
                index.search(np.asarray(q), 10)
                s_times.append(time.perf_counter() - t0)
            sql = re.sub(r"'fft' AS encoder", f"'{enc}' AS encoder", sql_text)
            plain = ("select session_id, chip_index, list_cosine_similarity(vector, (select vector from haadf_embeddings "
                     f"where encoder = '{enc}' and session_id = '{sids[0]}' and chip_index = 154)) as s "
                     f"from haadf_embeddings where encoder = '{enc}' order by s desc limit 10")
            base = {}
            for name, q in (("duckdb scan, centred (sql/queries/similar_chips.sql)", sql),
                            ("duckdb scan, plain list_cosine_similarity", plain)):
                ts = []
                for _ in range(args.baseline_runs):
                    t0 = time.perf_counter()
                    out = lake.query(q)
                    ts.append(time.perf_counter() - t0)
                assert len(out) == 10, (name, len(out))
                base[name] = statistics.median(ts)
            rows.append((dim, t_fill, t_build, statistics.median(times), max(times), statistics.median(s_times), base))
            with lake.connect() as con:  # free the disk before the next dimension
                con.execute("delete from haadf_embeddings")

    n = f"{args.chips:,}"
    print(f"\nsimilar-chip search over {n} chips (bench/similar.py; `--runs {args.runs}` queries, random chips)")
    for dim, t_fill, t_build, med, worst, s_med, base in rows:
        print(f"\n{dim}-d embeddings:")
        print(f"  insert {n} rows into haadf_embeddings        {t_fill:8.2f} s")
        print(f"  index build (first query)                     {t_build:8.2f} s")
        print(f"  similar_chips, index built: median / max      {med:8.3f} s / {worst:.3f} s")
        print(f"    of which search (matvec + top-10), median    {s_med:8.3f} s")
        for name, t in base.items():
            print(f"  baseline: {name:<44} {t:8.2f} s  ({t / med:.0f} x the indexed query)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
