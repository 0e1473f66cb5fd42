"""SQL that stays in the lake: a hardened connection refuses the file system, with the way out."""

import duckdb
import pytest

from mmlake.sqlguard import ALLOW_HINT, FileAccessRefused, execute, explain, harden, is_hardened


@pytest.fixture
def outside(tmp_path):
    """Files outside the lake a query might try to read or write."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "data.csv").write_text("a,b\n1,2\n")
    (d / "secret.txt").write_text("not for SQL\n")
    duckdb.connect(str(d / "other.duckdb")).close()
    return d


@pytest.fixture
def con(lake):
    """An already-open read-only connection to a real lake file, hardened afterwards."""
    with lake.connect():  # schema applied
        pass
    c = duckdb.connect(str(lake.db_path), read_only=True)
    c.execute("select count(*) from sessions").fetchall()  # in use before hardening
    harden(c)
    yield c
    c.close()


@pytest.mark.parametrize("what,sql", [
    ("copy to", "COPY (select 1 as x) TO '{d}/written.csv'"),
    ("copy table to", "COPY sessions TO '{d}/sessions.parquet' (FORMAT parquet)"),
    ("read_text", "select * from read_text('{d}/secret.txt')"),
    ("read_text /etc", "select * from read_text('/etc/hostname')"),
    ("read_csv", "select * from read_csv('{d}/data.csv')"),
    ("replacement scan", "select * from '{d}/data.csv'"),
    ("glob", "select * from glob('{d}/*')"),
    ("attach", "ATTACH '{d}/other.duckdb' AS other"),
    ("export", "EXPORT DATABASE '{d}/dump'"),
    ("install", "INSTALL vss"),
    ("turn it back on", "SET enable_external_access = true"),
    ("reset it", "RESET enable_external_access"),
])
def test_file_access_is_refused_with_how_to_allow(con, outside, what, sql):
    with pytest.raises(FileAccessRefused, match="--allow-files") as err:
        execute(con, sql.format(d=outside))
    assert ALLOW_HINT in str(err.value)
    assert not (outside / "written.csv").exists() and not (outside / "dump").exists()
    assert not (outside / "sessions.parquet").exists()


def test_lake_queries_still_work(con):
    assert execute(con, "select count(*) from sessions").fetchone() == (0,)
    assert execute(con, "select '{\"a\": 2}'::JSON ->> 'a'").fetchone() == ("2",)
    assert execute(con, "select count(*) from descriptors").fetchone() == (0,)  # views over tables
    n = execute(con, "select count(*) from (select i from range(200000) t(i) order by random())").fetchone()
    assert n == (200000,)
    assert is_hardened(con)


def test_other_errors_are_not_rewritten(con):
    with pytest.raises(duckdb.CatalogException):
        execute(con, "select * from no_such_table")
    exc = duckdb.CatalogException("nope")
    assert explain(exc) is exc


def test_hardening_is_database_wide_and_a_fresh_instance_starts_open(lake, outside):
    """The documented ordering constraint: every connection to the file in this process shares it."""
    with lake.connect():
        pass
    a = duckdb.connect(str(lake.db_path), read_only=True)
    b = duckdb.connect(str(lake.db_path), read_only=True)
    harden(a)
    with pytest.raises(FileAccessRefused):
        execute(b, f"select * from read_csv('{outside}/data.csv')")
    a.close()
    b.close()
    c = duckdb.connect(str(lake.db_path), read_only=True)  # a new instance: defaults again
    assert c.execute(f"select b from read_csv('{outside}/data.csv')").fetchone() == (2,)
    c.close()


def test_allowed_directories_keep_a_view_over_files_working(tmp_path, outside):
    db = tmp_path / "views.duckdb"
    w = duckdb.connect(str(db))
    w.execute(f"create view v as select * from read_csv('{outside}/data.csv')")
    w.close()
    con = duckdb.connect(str(db), read_only=True)
    harden(con, allowed_directories=[outside])
    assert execute(con, "select a from v").fetchone() == (1,)
    with pytest.raises(FileAccessRefused):
        execute(con, "select * from read_text('/etc/hostname')")
    with pytest.raises(FileAccessRefused):  # '..' does not leave the allowed folder
        execute(con, f"select * from read_text('{outside}/../outside/../views.duckdb')")
    con.close()
    with pytest.raises(ValueError, match="allowed_directories"):
        harden(duckdb.connect(":memory:"), allowed_directories=[tmp_path / "missing"])


def test_mmlake_sql_refuses_files_unless_allowed(lake, outside, capsys):
    from assets.cli import main

    with lake.connect():
        pass
    target = outside / "leak.csv"
    assert main(["--lake", str(lake.home), "sql", f"copy (select 1 as x) to '{target}'"]) == 2
    err = capsys.readouterr().err
    assert "file system operations are disabled" in err and "mmlake sql --allow-files" in err
    assert not target.exists()
    assert main(["--lake", str(lake.home), "sql", f"select * from read_text('{outside}/secret.txt')"]) == 2
    assert "--allow-files" in capsys.readouterr().err
    assert main(["--lake", str(lake.home), "sql", "select count(*) as n from sessions", "--format", "csv"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == ["n", "0"]
    # --allow-files: the user asked for file access
    assert main(["--lake", str(lake.home), "sql", f"select b from read_csv('{outside}/data.csv')",
                 "--format", "csv", "--allow-files"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == ["b", "2"]


def test_registered_frames_still_work_but_replacement_scans_do_not(con):
    """Documented in mmlake.sqlguard: register a frame instead of naming a local variable."""
    import polars as pl

    frame = pl.DataFrame({"x": [1, 2, 3]})
    con.register("frame_view", frame.to_arrow())
    assert execute(con, "select sum(x) from frame_view").fetchone() == (6,)
    con.unregister("frame_view")
    with pytest.raises(duckdb.CatalogException):
        execute(con, "select sum(x) from frame")
