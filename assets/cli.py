"""`mmlake` command line: demo, ingest, migrate, sql, report, crystal, export, similar, suggest.

It lives beside the assets (not in the `mmlake` library) because `demo` and `ingest` drive Dagster;
`sql` only opens the lake read-only. What a user can rely on (README, "The command line"): `--lake`,
`--verbose`, `--config` anywhere on the line; only demo / ingest / crystal create a lake; exit status 0
done, 1 a session or run failed (one `FAILED <session>: <asset>: <message>` line each, last), 2 a
mistake on the command line (one `error: ...` line); tracebacks only with --verbose; progress on
stderr, results on stdout.
"""

import argparse
import json
import os
import re
import sys
from pathlib import Path

from mmlake.errors import MmlakeError
from mmlake.lake import Lake

SUMMARY_SQL = (
    "select campaign, sample, dose_dpa, count(*) as chips from chips join sessions using (session_id) "
    "group by all order by campaign, sample, dose_dpa"
)


class CliError(MmlakeError):
    """A mistake on the command line (a missing lake, path or campaign): `error: ...`, exit 2."""


TABLE_LIMIT = 200  # rows a table shows unless --limit says otherwise; csv / json / parquet: every row
CELL_MAX = 80  # on a terminal, longer cells are cut (ends with ...); piped output is never cut


def is_nested(dtype) -> bool:
    return dtype.is_nested() or str(dtype).startswith(("Object",))


def flat_for_csv(frame):
    """Nested columns (lists, arrays, structs: embeddings, parameters, shapes) as JSON text."""
    import polars as pl

    cols = []
    for name, dtype in frame.schema.items():
        if is_nested(dtype):
            cols.append(pl.Series(name, [None if v is None else json.dumps(_jsonable(v), default=str)
                                         for v in frame[name].to_list()], dtype=pl.String))
        elif dtype == pl.Binary:
            cols.append(pl.Series(name, [None if v is None else v.hex() for v in frame[name].to_list()]))
        else:
            cols.append(frame[name])
    return pl.DataFrame(cols) if cols else frame


def _jsonable(v):
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _cell(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, float):
        return "NaN" if v != v else f"{v:.6g}"
    if isinstance(v, (list, dict, tuple)):
        return json.dumps(_jsonable(v), default=str)
    return str(v).replace("\n", " ")


def render_table(frame, width: int | None, total: int | None = None) -> str:
    """An aligned text table. `width`: the terminal's columns (cells cut at CELL_MAX, columns that do
    not fit are named below the table), None = full width (nothing cut, for pipes and files).
    Ends with the row count ('3 rows', or '200 of 1234 rows shown ...')."""
    import polars as pl

    names = frame.columns
    rows = [[_cell(v) for v in r] for r in frame.iter_rows()]
    numeric = [dt.is_numeric() for dt in frame.dtypes]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    if width is not None:
        widths = [max(len(n), min(w, CELL_MAX)) if len(n) <= CELL_MAX else CELL_MAX for n, w in zip(names, widths)]
    shown = list(range(len(names)))
    if width is not None:
        used, shown = 0, []
        for i, w in enumerate(widths):
            if shown and used + w > width:
                room = width - used
                if room >= max(10, len(names[i])):  # a last column that fits cut is still worth showing
                    widths[i] = room
                    shown.append(i)
                break
            shown.append(i)
            used += w + 2

    def fit(text: str, w: int, right: bool) -> str:
        if len(text) > w:
            text = text[: max(1, w - 3)] + "..."
        return text.rjust(w) if right else text.ljust(w)

    lines = ["  ".join(fit(names[i], widths[i], numeric[i]) for i in shown).rstrip(),
             "  ".join("-" * widths[i] for i in shown)]
    lines += ["  ".join(fit(r[i], widths[i], numeric[i]) for i in shown).rstrip() for r in rows]
    total = len(rows) if total is None else total
    count = f"{total} row{'s' if total != 1 else ''}"
    if len(rows) < total:
        count = f"{len(rows)} of {total} rows shown (--limit N shows more, --limit 0 all)"
    hidden = [names[i] for i in range(len(names)) if i not in shown]
    if hidden:
        count += (f"; {len(hidden)} more column{'s' if len(hidden) != 1 else ''} not shown at this width: "
                  f"{', '.join(hidden)} (select fewer columns, or --format csv)")
    return "\n".join(lines + [f"({count})"]) + "\n"


def terminal_width(stream=None) -> int | None:
    """Columns of the terminal stdout is on; None when stdout is not a terminal (full width)."""
    import shutil

    stream = stream or sys.stdout
    try:
        if not stream.isatty():
            return None
    except (AttributeError, ValueError):
        return None
    return shutil.get_terminal_size((120, 40)).columns


def print_frame(frame, fmt: str = "table", limit: int | None = None, out: str | None = None) -> None:
    """Print (or with `out` write) a polars frame: an aligned table sized to the terminal with a row
    count, CSV (nested columns as JSON text), a JSON array, or Parquet (needs `out`).
    `limit`: rows to keep (None = TABLE_LIMIT for tables, every row otherwise; 0 = every row)."""
    total = len(frame)
    if limit is None:
        limit = TABLE_LIMIT if fmt == "table" and out is None else 0
    if limit and total > limit:
        frame = frame.head(limit)
    if fmt == "parquet":
        if not out or out == "-":
            raise CliError("--format parquet writes a file: give --out FILE.parquet")
        frame.write_parquet(out)
        print(f"wrote {len(frame)} rows to {out}", file=sys.stderr)
        return
    if fmt == "csv":
        text = flat_for_csv(frame).write_csv()
    elif fmt == "json":
        text = json.dumps([_jsonable(r) for r in frame.to_dicts()], default=str, indent=1) + "\n"
    else:
        text = render_table(frame, None if out else terminal_width(), total)
    if out and out != "-":
        Path(out).write_text(text)
        print(f"wrote {len(frame)} rows to {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def is_empty_sql(query: str) -> bool:
    """Only whitespace, `;` and comments (`-- ...`, `/* ... */`)."""
    text = re.sub(r"/\*.*?\*/", " ", query, flags=re.S)
    text = re.sub(r"--[^\n]*", " ", text)
    return not text.strip(" \t\r\n;")


def cmd_sql(args) -> int:
    # main() has checked that the lake exists; a DuckLake lake hardens its own read-only instance
    # (its Parquet folder stays readable), so --allow-files and --as-of go to the Lake
    lake = Lake(args.lake, as_of=args.as_of, allow_files=args.allow_files)
    if is_empty_sql(args.query):
        raise CliError("the query is empty (only whitespace or comments); for example: "
                       "mmlake sql \"select * from session_catalog\"")
    from mmlake.sqlguard import guarded, harden

    try:
        with lake.connect(read_only=True) as con:
            if not args.allow_files:  # the lake's SQL stays in the lake (mmlake.sqlguard)
                harden(con)
            with guarded():
                frame = con.execute(args.query).pl()
    except AttributeError as exc:  # duckdb: a statement without a result set (SET, PRAGMA ...)
        if "NoneType" not in str(exc):
            raise
        raise CliError("the statement returned no result set to show; `mmlake sql` answers queries "
                       "(select, with, describe, show, summarize)") from exc
    print_frame(frame, args.format, args.limit, args.out)
    return 0


def say(line: str) -> None:
    """Progress for a person: stderr, so stdout stays the command's result."""
    print(line, file=sys.stderr, flush=True)


def check_session_paths(paths) -> None:
    """Every path exists and is (or holds) a session folder, before any work starts."""
    from mmlake.manifest import MANIFEST_NAME

    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise CliError(f"{raw}: no such file or folder")
        if p.is_file():
            if p.name == MANIFEST_NAME:
                continue
            raise CliError(f"{raw} is a file; give the session folder (the one holding {MANIFEST_NAME}) or a "
                           "folder of session folders")
        if not (p / MANIFEST_NAME).is_file() and not any((d / MANIFEST_NAME).is_file() for d in p.iterdir()):
            raise CliError(f"{raw}: no session folder here (a session folder holds {MANIFEST_NAME}; see README "
                           "'Session folders'), and none of its sub-folders is one")


def session_paths(paths) -> list[str]:
    """A path to a session.yaml stands for its folder."""
    from mmlake.manifest import MANIFEST_NAME

    return [str(Path(p).parent) if Path(p).is_file() and Path(p).name == MANIFEST_NAME else p for p in paths]


def writable_lake(args) -> Lake:
    """The lake a writing command works on; a new one is announced, never created silently."""
    lake = Lake(args.lake)
    if not lake.db_path.exists():
        say(f"creating a new lake at {lake.home} (--lake or $MMLAKE_HOME choose another)")
    return lake.ensure()


ENCODER_OPTIONS = (("device", "--device"), ("batch_size", "--batch-size"), ("precision", "--precision"),
                   ("haadf_encoders", "--encoders"), ("vgg16_weights", "--vgg16-weights"),
                   ("effnet_weights", "--effnet-weights"), ("ssl_weights", "--ssl-weights"))


def add_encoder_options(p) -> None:
    g = p.add_argument_group("encoder options (override the config file, README 'Encoder options')")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where the encoders run (default auto)")
    g.add_argument("--batch-size", type=int, help="chips per forward pass (default 256)")
    g.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="bf16 / fp16 on CUDA only")
    g.add_argument("--encoders", help="HAADF encoders to run, comma-separated (default fft,vgg16)")
    g.add_argument("--vgg16-weights", help="imagenet | random | /path/vgg16.pth (a state dict)")
    g.add_argument("--effnet-weights", help="imagenet | random | /path/effnet.pth")
    g.add_argument("--ssl-weights", help="checkpoint of the ssl encoder")


def encoder_from_args(args, lake: Lake):
    from resources.encoder import encoder_resource

    given = {key: getattr(args, flag[2:].replace("-", "_"), None) for key, flag in ENCODER_OPTIONS}
    return encoder_resource(getattr(args, "config", None), lake.home, **given)


def report_outcomes(outcomes, verbose: bool) -> int:
    """The summary line (stdout), then one `FAILED <session>: <asset>: <message>` line per failed
    session (stderr; with --verbose its trace first). Exit status 1 when any failed."""
    failed = [o for o in outcomes if not o.ok]
    unchanged = [o for o in outcomes if o.ok and o.message == "unchanged"]
    print(f"{len(outcomes) - len(failed) - len(unchanged)} session(s) ingested, {len(unchanged)} unchanged, "
          f"{len(failed)} failed", flush=True)
    for o in failed:
        if verbose and o.trace:
            print(o.trace, file=sys.stderr)
        print(o.line, file=sys.stderr)
    return 1 if failed else 0


def progress_lines(line: str) -> None:
    """The runner's progress, less the FAILED lines (`report_outcomes` prints them at the end)."""
    if not line.startswith("FAILED "):
        say(line)


def cmd_ingest(args) -> int:
    from assets.imports import collector_paused

    with collector_paused():  # Dagster's import: assets/imports.py
        from assets.runner import ingest

    check_session_paths(args.paths)
    encoder = encoder_from_args(args, Lake(args.lake))  # a bad option fails before anything is created
    lake = writable_lake(args)
    outcomes = ingest(session_paths(args.paths), lake, replace=args.replace, progress=progress_lines,
                      encoder=encoder, verbose=args.verbose, strict=args.strict)
    return report_outcomes(outcomes, args.verbose)


def cmd_migrate(args) -> int:
    """Upgrade a lake written by an older mmlake in place, and register its partition keys."""
    from mmlake.migrate import schema_version, upgrade

    lake = Lake(args.lake)
    if not lake.db_path.exists():
        print(f"no lake at {lake.db_path}", file=sys.stderr)
        return 2
    if lake.catalog.is_ducklake:
        # DuckLake: the catalog's own cursor under the writer lock (Lake.connect would run the
        # same upgrade first, silently, as every process's first write does)
        from mmlake import catalog as _catalog

        with _catalog.writer_lock(lake.catalog, lake.lock_timeout_s), \
                _catalog.cursor(lake.catalog, read_only=False) as con:
            before = schema_version(con)
            steps = upgrade(con, lake.db_path, force=True)
    else:
        import duckdb

        con = duckdb.connect(str(lake.db_path))
        try:
            before = schema_version(con)
            steps = upgrade(con, lake.db_path, force=True)
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
    from assets.imports import collector_paused

    with collector_paused():  # Dagster's import: assets/imports.py
        from assets.runner import ingest, run_crystal, run_reports
        from mmlake.synth import build_demo_campaign

    encoder = encoder_from_args(args, Lake(args.lake))
    lake = writable_lake(args)
    out = Path(args.out or lake.home / "demo_sessions")
    print(f"building the demo campaign (preprint Table II) in {out} ...", flush=True)
    folders = build_demo_campaign(out)
    outcomes = ingest(folders, lake, progress=progress_lines, encoder=encoder, verbose=args.verbose)
    if report_outcomes(outcomes, args.verbose):
        return 1
    print("reference d-spacings of the film and substrate phases (crystal group, structures only) ...", flush=True)
    crystal_ok = run_crystal(lake, reference_only=True, encoder=encoder, verbose=args.verbose)
    print("\n" + SUMMARY_SQL)
    print_frame(lake.query(SUMMARY_SQL))
    for title, sql in DEMO_QUERIES:
        print(f"\n{title}\n{sql}")
        print_frame(lake.query(sql))
    reports_ok = run_reports(lake, verbose=args.verbose)
    for row in lake.query("select campaign, path from campaign_reports order by 1").to_dicts():
        print(f"\ninteractive report ({row['campaign']}): {row['path']}")
    print("Dagster UI: make ui  ->  http://127.0.0.1:3000")
    return 0 if crystal_ok and reports_ok and all(o.ok for o in outcomes) else 1


def cmd_report(args) -> int:
    from mmlake.report import write_campaign_report

    lake = Lake(args.lake)
    campaign = known_campaign(lake, args.campaign)
    out = Path(args.out or lake.home / "reports" / f"{campaign}.html")
    print(write_campaign_report(lake, campaign, out))
    return 0


def known_campaign(lake: Lake, name: str) -> str:
    """The campaign `name` (or campaign key) as stored in `sessions`; an unknown one is an error
    listing the lake's campaigns."""
    from mmlake.manifest import campaign_key

    rows = lake.query("select distinct campaign from sessions order by 1")["campaign"].to_list()
    if name in rows:
        return name
    by_key = [c for c in rows if campaign_key(c) == name]
    if by_key:
        return by_key[0]
    known = ", ".join(rows) if rows else "none yet (mmlake ingest PATH)"
    raise CliError(f"no campaign {name!r} in the lake at {lake.home}; campaigns: {known}")


def cmd_crystal(args) -> int:
    from assets.runner import run_crystal

    path = None
    if args.path:
        here, in_repo = Path(args.path), Path(__file__).resolve().parent.parent / args.path
        path = here if here.exists() else in_repo if in_repo.exists() else None
        if path is None:
            raise CliError(f"{args.path}: no such file or folder (give a CDVAE-layout CSV, or a folder of "
                           "train.csv / val.csv / test.csv)")
    encoder = encoder_from_args(args, Lake(args.lake))
    lake = writable_lake(args)
    ok = run_crystal(lake, path=str(path.resolve()) if path else None, name=args.name,
                     epochs=args.epochs, encoder=encoder, verbose=args.verbose)
    if ok:
        print_frame(lake.query(CRYSTAL_SQL))
    return 0 if ok else 1


def cmd_export(args) -> int:
    from mmlake.export import export_session

    paths = export_session(Lake(args.lake), args.session, Path(args.out), fmt=args.format)
    for p in paths:
        print(p)
    return 0


def cmd_similar(args) -> int:
    """The N chips of the whole lake most like one chip (cosine over HAADF embeddings), with thumbnails."""
    import re as _re

    from mmlake.similar import similar_chips, write_thumbnails

    lake = Lake(args.lake)
    res = similar_chips(lake, args.session, args.row, args.col, n=args.n, encoder=args.encoder)
    print_frame(res, args.format, None, None)
    stem = _re.sub(r"[^A-Za-z0-9@._-]+", "_", f"{args.session}_r{args.row}_c{args.col}")
    out = Path(args.out) if args.out else lake.home / "similar" / stem
    files = write_thumbnails(lake, res, args.session, args.row, args.col, out.with_suffix(""))
    say(f"thumbnails: {files['html']} and {files['png']} ({res['encoder'][0] if len(res) else ''} embeddings)")
    return 0


def cmd_suggest(args) -> int:
    """The chips to label next for few-shot (mmlake.suggest): least certain, inside their predicted
    region, away from the support and spread over the image."""
    import polars as pl

    from mmlake.suggest import suggest_from_lake

    sug = suggest_from_lake(Lake(args.lake), args.session, n=args.n, score=args.score)
    print_frame(pl.DataFrame([s.as_dict() for s in sug]) if sug else pl.DataFrame(
        schema={"chip_index": pl.Int64, "row": pl.Int64, "col": pl.Int64, "score": pl.Float64}), args.format)
    say("add the chips you label to session.yaml's support: (class: [[row, col], ...]) and re-ingest")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The `mmlake` command. Called as the console script (``argv`` None), it ends the process as
    soon as the work is done (`exit_now`): the interpreter's own shutdown (garbage-collecting torch,
    dask, Dagster and a few hundred modules) took 4-5 s and does nothing a finished command needs.
    Called with ``argv`` (tests, notebooks) it returns the exit status."""
    try:
        code = _main(argv)
    except SystemExit as exc:  # argparse: --help, a bad option
        if argv is not None:
            raise
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    if argv is None:
        exit_now(code)
    return code


def exit_now(code: int) -> None:
    """Flush stdout/stderr and the logging handlers, then end the process with ``os._exit(code)``,
    skipping the interpreter's slow teardown. The lake's DuckDB connections are per call (closed by
    then), Dagster's run storage commits each event as it is written."""
    import logging

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed pipe: nothing left to say
            pass
    logging.shutdown()
    os._exit(int(code))


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmlake", description="multi-modal materials data lake")
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="build the synthetic demo campaign and materialize everything")
    p.add_argument("--out", help="where to write the demo session folders (default LAKE/demo_sessions)")
    add_encoder_options(p)
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("ingest", help="register session folders and materialize their partitions")
    p.add_argument("paths", nargs="+", help="session folders, or folders of session folders")
    p.add_argument("--replace", action="store_true",
                   help="let new content replace a stored session of the same identity (campaign, sample, "
                        "dose, acquisition); the replaced rows stay queryable in the history schema")
    p.add_argument("--strict", action="store_true",
                   help="refuse a session.yaml with keys mmlake does not know (default: a warning naming the "
                        "closest known key)")
    add_encoder_options(p)
    p.set_defaults(func=cmd_ingest)
    p = sub.add_parser("migrate", help="upgrade a lake written by an older mmlake in place (no row is lost)")
    p.add_argument("--no-dagster", action="store_true", help="do not register partition keys in $DAGSTER_HOME")
    p.set_defaults(func=cmd_migrate)
    p = sub.add_parser("sql", help="run a read-only SQL query against the lake")
    p.add_argument("query")
    p.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table",
                   help="table (sized to the terminal, full width when piped), csv (nested columns as JSON "
                        "text), json, parquet (needs --out)")
    p.add_argument("--limit", type=int, default=None,
                   help=f"rows to output (default {TABLE_LIMIT} for a table, all for csv/json/parquet; 0 = all)")
    p.add_argument("--out", help="write to this file instead of stdout")
    p.add_argument("--allow-files", action="store_true",
                   help="let the query read and write files (COPY ... TO, read_csv, read_text, ATTACH ...); "
                        "by default the query sees only the lake's tables and views")
    p.add_argument("--as-of", metavar="TIMESTAMP", default=None,
                   help="DuckLake catalogs: query the lake as it was at TIMESTAMP (e.g. 2026-05-01T14:30:00, "
                        "UTC unless an offset is given); replaced rows are also in history.<table>")
    p.set_defaults(func=cmd_sql)
    p = sub.add_parser("report", help="write the interactive HTML report of a campaign")
    p.add_argument("campaign")
    p.add_argument("--out", help="HTML path (default LAKE/reports/CAMPAIGN.html)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("crystal", help="materialize the crystal campaign (UniMat-style) on a dataset")
    p.add_argument("path", nargs="?", help="CDVAE-layout CSV or folder of train/val/test CSVs (default: the "
                                           "MP-20 excerpt shipped in mmlake/data/mp20_demo)")
    p.add_argument("--name", help="dataset name in the lake (default: the folder/file stem)")
    p.add_argument("--epochs", type=int, default=100)
    add_encoder_options(p)
    p.set_defaults(func=cmd_crystal)
    p = sub.add_parser("export", help="export a session: label maps as HyperSpy signals, or one NeXus NXem file")
    p.add_argument("session", help="session id, e.g. lfo-irradiation.pristine@0.1~20240501T143000 "
                                   "(select session_id from sessions)")
    p.add_argument("--format", choices=["hspy", "zspy", "nxs"], default="hspy",
                   help="hspy / zspy: one calibrated label map per segmentation; nxs: one NeXus NXem file with "
                        "the HAADF image, the EDS spectrum image, element maps (IUPAC lines), every label map, "
                        "the region descriptors and their provenance (NOMAD Oasis reads it)")
    p.add_argument("--out", default=".", help="output folder")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("similar", help="the N chips of the whole lake most like one chip (HAADF embedding cosine)")
    p.add_argument("session", help="session id (select session_id from chip_grids)")
    p.add_argument("row", type=int, help="chip row (y, from 0)")
    p.add_argument("col", type=int, help="chip column (x, from 0)")
    p.add_argument("-n", type=int, default=10, help="how many chips (default 10)")
    p.add_argument("--encoder", help="embedding to compare (default: vgg16 where the session has it, else fft)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--out", help="thumbnail files' path without suffix (.html and .png are written; "
                                 "default LAKE/similar/SESSION_rROW_cCOL)")
    p.set_defaults(func=cmd_similar)
    p = sub.add_parser("suggest", help="the chips to label next for few-shot (least certain, spread out, "
                                       "away from the support)")
    p.add_argument("session", help="session id (select session_id from sessions)")
    p.add_argument("-n", type=int, default=8, help="how many chips (default 8)")
    p.add_argument("--score", choices=["margin", "entropy"], default="margin",
                   help="uncertainty: 1 - (p1 - p2) (default) or normalised entropy of the class probabilities")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(func=cmd_suggest)
    for p in sub.choices.values():  # --lake, --verbose, --config anywhere on the line, for every command
        add_global_options(p, argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.command not in CREATES_LAKE:
            require_lake(args.lake)
        return args.func(args)
    except MmlakeError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # duckdb parse errors etc.: one readable line, the trace with --verbose
        if args.verbose:
            import traceback

            traceback.print_exc()
        if type(exc).__module__.startswith("_duckdb") or type(exc).__module__.startswith("duckdb"):
            print(f"SQL error: {one_line(exc)}", file=sys.stderr)
            return 2
        hint = "" if args.verbose else " (mmlake --verbose ... shows the traceback)"
        print(f"error: {type(exc).__name__}: {one_line(exc)}{hint}", file=sys.stderr)
        return 1


CREATES_LAKE = {"demo", "ingest", "crystal"}  # every other command needs an existing lake


def require_lake(home) -> Lake:
    """The lake must exist: read commands never create an empty one (a mistyped --lake / MMLAKE_HOME)."""
    lake = Lake(home)
    if not lake.db_path.exists():
        how = ("--lake" if home else "$MMLAKE_HOME" if os.environ.get("MMLAKE_HOME") else
               "the default ./.mmlake (set --lake or $MMLAKE_HOME)")
        raise CliError(f"no lake at {lake.home} (from {how}); create one with `make demo` or "
                       "`mmlake ingest PATH`, or point --lake at an existing lake folder")
    return lake


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def add_global_options(p, default=None) -> None:
    """Options every command takes, before or after the command name (`default` SUPPRESS on the
    sub-commands, so that a value given before the command is kept)."""
    p.add_argument("--lake", default=default, help="lake folder (default $MMLAKE_HOME or ./.mmlake)")
    p.add_argument("-v", "--verbose", action="store_true", default=False if default is None else default,
                   help="Dagster's full run log and tracebacks")
    p.add_argument("--config", default=default,
                   help="config file with an `encoder:` section (default $MMLAKE_CONFIG or LAKE/config.yaml)")


if __name__ == "__main__":
    sys.exit(main())
