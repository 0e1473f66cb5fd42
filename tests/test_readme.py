"""README.md says what the code does (issue 15): every shell example in its ```bash blocks runs here,
on the demo lake, as written. A README line that is neither run nor listed in NOT_RUN (with the test
that covers it instead) fails `test_every_readme_line_is_covered`, so README and code cannot drift.

Substitutions, the only ones: the two placeholder paths (PLACEHOLDERS) stand for a copy of a demo
session folder and of the shipped crystal excerpt; the commands run in a temporary folder that links
`.venv` and `sql` to the project's, with MMLAKE_HOME = the demo lake (the crystal example gets its
own lake and `--epochs 3`, so the shared demo lake is not changed) and a temporary DAGSTER_HOME.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"

# README lines not run by test_readme_shell_example, and what covers each instead
NOT_RUN = {
    "make demo": "the demo_lake fixture runs the same build + ingest (tests/conftest.py)",
    "make test": "is this suite",
    "make bench": "minutes of benchmarks (bench/*.py), not a check",
    "make ui": "test_make_ui_starts_clean",
    "make demo-crystal": "test_make_demo_crystal",
}
NO_INSTALL = ["-o", ".venv/bin/.installed"]  # the venv is there: never reinstall it from a test
PLACEHOLDERS = {"/data/microscope/2024-05-01_lfo/": "{session}", "/path/to/mp_20/": "{crystal}"}


def shell_examples() -> list[str]:
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", README.read_text(), flags=re.S | re.M):
        for line in block.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                out.append(line.strip())
    return out


def command_of(line: str) -> str:
    """The command without its trailing comment: `make ui   # ...` -> `make ui`."""
    return re.split(r"\s+#\s", line, maxsplit=1)[0].strip()


RUN = [line for line in shell_examples() if command_of(line) not in NOT_RUN]


def test_every_readme_line_is_covered():
    lines = shell_examples()
    assert len(lines) >= 10, lines
    for line in lines:
        cmd = command_of(line)
        assert cmd in NOT_RUN or cmd.startswith(".venv/bin/mmlake "), (
            f"README example {line!r} is neither run by tests/test_readme.py nor listed in NOT_RUN")
    assert set(NOT_RUN) <= {command_of(x) for x in lines}, "NOT_RUN lists a command README no longer has"


def test_readme_config_example_is_valid():
    from resources.encoder import check_options

    blocks = [b for b in re.findall(r"^```yaml\n(.*?)^```", README.read_text(), flags=re.S | re.M)
              if b.startswith("encoder:")]
    assert len(blocks) == 1
    options = check_options(yaml.safe_load(blocks[0])["encoder"], "README")
    assert options["vgg16_weights"] == "imagenet" and options["batch_size"] == 256


def test_readme_failed_example_matches_the_format():
    failed = [x for x in README.read_text().splitlines() if x.startswith("FAILED ")]
    assert failed, "README shows no FAILED line"
    for line in failed:  # the exact message is asserted in tests/test_cli.py
        assert re.match(r"^FAILED \S+@\S+~\S+: raw_session: HAADF grid \(32, 32\) and EDS grid \(24, 24\) cannot be "
                        r"registered: .*; crop or re-bin one of them so the scan grids match$", line), line


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, demo_lake):
    root = tmp_path_factory.mktemp("readme")
    for name in (".venv", "sql"):
        (root / name).symlink_to(REPO / name)
    sessions = demo_lake.home.parent / "sessions"
    session = sorted(p for p in sessions.iterdir() if (p / "session.yaml").exists())[0]
    shutil.copytree(session, root / "copy" / session.name)
    shutil.copytree(REPO / "mmlake" / "data" / "mp20_demo", root / "mp_20")
    return root, {"{session}": str(root / "copy" / session.name) + "/", "{crystal}": str(root / "mp_20") + "/"}


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the first one builds the demo lake (minutes on 2 busy cores)
@pytest.mark.parametrize("line", RUN, ids=[command_of(x)[17:60] for x in RUN])
def test_readme_shell_example(line, workdir, demo_lake, tmp_path):
    root, subs = workdir
    cmd = command_of(line)
    for placeholder, key in PLACEHOLDERS.items():
        cmd = cmd.replace(placeholder, subs[key])
    env = {**os.environ, "MMLAKE_HOME": str(demo_lake.home), "DAGSTER_HOME": str(tmp_path / "dagster")}
    env.pop("MMLAKE_CONFIG", None)
    if " crystal " in cmd:
        cmd += " --epochs 3"
        env["MMLAKE_HOME"] = str(tmp_path / "crystal_lake")
    res = subprocess.run(["bash", "-c", cmd], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (cmd, res.stdout[-2000:], res.stderr[-3000:])
    assert res.stdout.strip() or "wrote " in res.stderr, (cmd, res.stderr[-2000:])
    assert "Traceback" not in res.stderr and "Warning" not in res.stderr, res.stderr[-3000:]
    if " sql " in cmd and "--format" not in cmd:
        assert re.search(r"^\(\d+ rows?\)$|^\(\d+ of \d+ rows shown", res.stdout, re.M), res.stdout[-500:]
        assert "(0 rows)" not in res.stdout, f"README example {cmd!r} returns nothing on the demo lake"
    if " export " in cmd:
        assert list((root / "labels").glob("*.hspy")), res.stdout
    if " report " in cmd:
        assert Path(res.stdout.strip().splitlines()[-1]).is_file()
    if " ingest " in cmd:
        assert res.stdout.strip().endswith("0 failed"), res.stdout


@pytest.mark.slow
def test_make_demo_crystal(tmp_path):
    """`make demo-crystal` on the shipped excerpt (never ../shared), a short training for the test."""
    env = {**os.environ, "MMLAKE_HOME": str(tmp_path / "lake"), "DAGSTER_HOME": str(tmp_path / "dagster")}
    res = subprocess.run(["make", "-s", *NO_INSTALL, "demo-crystal", "EPOCHS=3"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-3000:])
    assert re.search(r"^mp20_demo\s+lengths_mae\s+fused\s+\d", res.stdout, re.M), res.stdout
    from mmlake.lake import Lake

    src = Lake(tmp_path / "lake").query("select distinct source_file from structures")["source_file"].to_list()
    assert src and all(s.startswith(str(REPO / "mmlake" / "data" / "mp20_demo")) for s in src), src
    assert "Traceback" not in res.stderr and "Warning" not in res.stderr, res.stderr[-3000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_make_ui_starts_clean(tmp_path):
    """`make ui` comes up without the 'dagster.yaml ... will not be used' warning and without the
    'superseded ... dg dev' notice (issue 15), and serves the webserver."""
    port = _free_port()
    env = {**os.environ, "MMLAKE_HOME": str(tmp_path / "lake"), "DAGSTER_HOME": str(tmp_path / "dagster"),
           "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "ui.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(["make", "-s", *NO_INSTALL, "ui", f"PORT={port}"], cwd=REPO, env=env, stdout=fh,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, up = time.monotonic() + 400, False
        while time.monotonic() < deadline and proc.poll() is None and not up:
            try:
                up = urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5).status == 200
            except OSError:
                time.sleep(2)
        assert up, log.read_text()[-3000:]
    finally:
        for sig, wait in ((signal.SIGINT, 60), (signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                pass
    text = log.read_text()
    assert "will not be used" not in text and "dg dev" not in text and "superseded" not in text, text[-3000:]
    assert "Warning" not in text and "WARNING" not in text, text[-3000:]
