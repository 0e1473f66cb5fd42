"""`mmlake` command line: demo, ingest, sql, export.

It lives beside the assets (not in the `mmlake` library) because `demo` and `ingest` drive Dagster;
`sql` only opens the lake read-only.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from mmlake.errors import MmlakeError
from mmlake.lake import Lake

SUMMARY_SQL = (
    "select campaign, sample, dose_dpa, count(*) as chips from chips join sessions using (session_id) "
    "group by all order by campaign, sample, dose_dpa"
)


def print_frame(frame, fmt: str = "table") -> None:
    """Print a polars frame as an aligned table, CSV or JSON lines-free JSON array."""
    import polars as pl

    if fmt == "csv":
        sys.stdout.write(frame.write_csv())
    elif fmt == "json":
        sys.stdout.write(json.dumps(frame.to_dicts(), default=str, indent=1) + "\n")
    else:
        with pl.Config(tbl_rows=200, tbl_cols=30, fmt_str_lengths=60, tbl_width_chars=200,
                       tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
            print(frame)


def cmd_sql(args) -> int:
    lake = Lake(args.lake)
    if not lake.db_path.exists():
        print(f"no lake at {lake.db_path}; run `make demo` or `mmlake ingest PATH` first", file=sys.stderr)
        return 2
    print_frame(lake.query(args.query), args.format)
    return 0


def cmd_ingest(args) -> int:
    from assets.runner import ingest

    lake = Lake(args.lake).ensure()
    outcomes = ingest(args.paths, lake, replace=args.replace)
    failed = [o for o in outcomes if not o.ok]
    unchanged = [o for o in outcomes if o.ok and o.message == "unchanged"]
    print(f"{len(outcomes) - len(failed) - len(unchanged)} session(s) ingested, {len(unchanged)} unchanged, "
          f"{len(failed)} failed")
    return 1 if failed else 0


def cmd_migrate(args) -> int:
    """Upgrade a lake written by an older mmlake in place, and register its partition keys."""
    from mmlake.migrate import schema_version, upgrade

    lake = Lake(args.lake)
    if not lake.db_path.exists():
        print(f"no lake at {lake.db_path}", file=sys.stderr)
        return 2
    import duckdb

    con = duckdb.connect(str(lake.db_path))
    try:
        before = schema_version(con)
        steps = upgrade(con, lake.db_path)
    finally:
        con.close()
    lake.ensure()
    for line in steps:
        print(line)
    if not args.no_dagster:
        from assets.runner import dagster_instance

        inst = dagster_instance()
        pairs = lake.query("select distinct sample_key, dose_key from sessions where sample_key is not null").rows()
        for dim, keys in (("sample", sorted({p[0] for p in pairs})), ("dose", sorted({p[1] for p in pairs}))):
            inst.add_dynamic_partitions(dim, [k for k in keys if not inst.has_dynamic_partition(dim, k)])
        print(f"registered {len(pairs)} sample x dose partition(s) in {inst.root_directory}")
    print(f"lake schema {before} -> {schema_version_after(lake)}")
    return 0


def schema_version_after(lake) -> int | None:
    from mmlake.migrate import schema_version

    with lake.connect(read_only=True) as con:
        return schema_version(con)


CRYSTAL_SQL = ("select dataset, metric, variant, round(value, 3) as value, preprint_value, unit from crystal_benchmark "
               "where crystal_system is null order by dataset, metric, variant")
DEMO_QUERIES = [
    ("Table I (AMI between modalities), few-shot:",
     "select session_id, pair, round(ami, 3) as ami from agreement where method = 'fewshot' "
     "and pair not like '%truth' order by session_id, pair"),
    ("disordered-vs-ordered film, O percent difference per method (ensemble):",
     "select sample, dose_dpa, method, round(percent_diff, 1) as o_shift_pct, "
     "round(percent_diff_renorm, 1) as o_shift_la_fe_o_renorm_pct from composition_shift "
     "where element = 'O' and modality = 'ensemble' order by sample, dose_dpa, method"),
    ("ordered-film d-spacing next to the LaFeO3 reference (nm):",
     "select session_id, method, round(measured_d_nm, 4) as measured, hkl, round(reference_d_nm, 4) as reference "
     "from phase_d_spacing where role = 'film_ordered' and is_closest and modality = 'ensemble' order by 1, 2"),
]


def cmd_demo(args) -> int:
    from assets.runner import ingest, run_crystal, run_reports
    from mmlake.synth import build_demo_campaign

    lake = Lake(args.lake).ensure()
    out = Path(args.out or lake.home / "demo_sessions")
    print(f"building the demo campaign (preprint Table II) in {out} ...")
    folders = build_demo_campaign(out)
    outcomes = ingest(folders, lake)
    print("reference d-spacings of the film and substrate phases (crystal group, structures only) ...")
    crystal_ok = run_crystal(lake, reference_only=True)
    print("\n" + SUMMARY_SQL)
    print_frame(lake.query(SUMMARY_SQL))
    for title, sql in DEMO_QUERIES:
        print(f"\n{title}\n{sql}")
        print_frame(lake.query(sql))
    reports_ok = run_reports(lake)
    for row in lake.query("select campaign, path from campaign_reports order by 1").to_dicts():
        print(f"\ninteractive report ({row['campaign']}): {row['path']}")
    print("Dagster UI: make ui  ->  http://127.0.0.1:3000")
    return 0 if crystal_ok and reports_ok and all(o.ok for o in outcomes) else 1


def cmd_report(args) -> int:
    from mmlake.report import write_campaign_report

    lake = Lake(args.lake)
    out = Path(args.out or lake.home / "reports" / f"{args.campaign}.html")
    print(write_campaign_report(lake, args.campaign, out))
    return 0


def cmd_crystal(args) -> int:
    from assets.runner import run_crystal

    lake = Lake(args.lake).ensure()
    ok = run_crystal(lake, path=args.path, name=args.name, epochs=args.epochs)
    if ok:
        print_frame(lake.query(CRYSTAL_SQL))
    return 0 if ok else 1


def cmd_export(args) -> int:
    from mmlake.export import export_session

    paths = export_session(Lake(args.lake), args.session, Path(args.out), fmt=args.format)
    for p in paths:
        print(p)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmlake", description="multi-modal materials data lake")
    parser.add_argument("--lake", default=None, help="lake folder (default $MMLAKE_HOME or ./.mmlake)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="build the synthetic demo campaign and materialize everything")
    p.add_argument("--out", help="where to write the demo session folders (default LAKE/demo_sessions)")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("ingest", help="register session folders and materialize their partitions")
    p.add_argument("paths", nargs="+", help="session folders, or folders of session folders")
    p.add_argument("--replace", action="store_true",
                   help="let new content replace a stored session of the same identity (campaign, sample, "
                        "dose, acquisition); the replaced rows stay queryable in the history schema")
    p.set_defaults(func=cmd_ingest)
    p = sub.add_parser("migrate", help="upgrade a lake written by an older mmlake in place (no row is lost)")
    p.add_argument("--no-dagster", action="store_true", help="do not register partition keys in $DAGSTER_HOME")
    p.set_defaults(func=cmd_migrate)
    p = sub.add_parser("sql", help="run a read-only SQL query against the lake")
    p.add_argument("query")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(func=cmd_sql)
    p = sub.add_parser("report", help="write the interactive HTML report of a campaign")
    p.add_argument("campaign")
    p.add_argument("--out", help="HTML path (default LAKE/reports/CAMPAIGN.html)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("crystal", help="materialize the crystal campaign (UniMat-style) on a dataset")
    p.add_argument("path", nargs="?", help="CDVAE-layout CSV or folder (default: the shared MP-20 excerpt)")
    p.add_argument("--name", help="dataset name in the lake (default: the folder/file stem)")
    p.add_argument("--epochs", type=int, default=100)
    p.set_defaults(func=cmd_crystal)
    p = sub.add_parser("export", help="export a session's label maps as HyperSpy signals")
    p.add_argument("session", help="session id, e.g. lfo-irradiation.pristine@0.1~20240501T143000 "
                                   "(select session_id from sessions)")
    p.add_argument("--format", choices=["hspy"], default="hspy")
    p.add_argument("--out", default=".", help="output folder")
    p.set_defaults(func=cmd_export)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MmlakeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # duckdb parse errors etc.: one readable line, not a traceback
        if type(exc).__module__.startswith("_duckdb") or type(exc).__module__.startswith("duckdb"):
            print(f"SQL error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
