"""A real `dagster dev` (webserver + daemon + code server) on loopback, shared by the slow e2e and UI
tests through the session-scoped `dagster_server` fixture.

Everything lives in a temp folder: DAGSTER_HOME (a copy of the repo's dagster.yaml), MMLAKE_HOME and
the landing folder, passed as environment variables. The server is started through
`env --default-signal=INT,TERM` in its own process group (start_new_session) and stopped by signalling
that group: SIGINT (dagster dev's clean shutdown), then SIGTERM, then SIGKILL. Every process it
spawned carries a unique MMLAKE_E2E_TOKEN in its environment; teardown checks that none is left.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SENSOR_INTERVAL_S = 3
STARTUP_TIMEOUT_S = 240
INGEST_TIMEOUT_S = float(os.environ.get("MMLAKE_E2E_TIMEOUT_S", "480"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token_processes(token: str) -> list:
    """Live processes (of this user) whose environment carries the token."""
    import psutil

    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("MMLAKE_E2E_TOKEN") == token and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


@dataclass
class DagsterServer:
    root: Path
    url: str
    env: dict
    proc: subprocess.Popen
    log_path: Path
    token: str
    ingested: dict = field(default_factory=dict)
    ingest_error: str = ""

    @property
    def dagster_home(self) -> Path:
        return Path(self.env["DAGSTER_HOME"])

    @property
    def lake_home(self) -> Path:
        return Path(self.env["MMLAKE_HOME"])

    @property
    def landing(self) -> Path:
        return Path(self.env["MMLAKE_LANDING"])

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines()
                     if "Checking for new runs for sensor" not in ln and "skipped: no new sessions" not in ln]
            return "\n".join(lines[-n:])
        except OSError:
            return ""

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
        req = urllib.request.Request(
            f"{self.url}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            out = json.loads(resp.read())
        if out.get("errors"):
            raise RuntimeError(f"GraphQL errors: {out['errors']}")
        return out["data"]

    def mmlake_sql(self, query: str) -> list[dict]:
        """Run `mmlake sql --format json` against the server's lake, as a user would."""
        res = subprocess.run([str(BIN / "mmlake"), "sql", query, "--format", "json"], env=self.env,
                             capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"mmlake sql failed ({res.returncode}): {res.stderr.strip()}")
        return json.loads(res.stdout)

    def drop_session(self, folder: Path) -> Path:
        """Copy a session folder into the landing zone under a hidden name, then rename it in."""
        tmp = self.landing / f".{folder.name}.incoming"
        shutil.copytree(folder, tmp)
        dest = self.landing / folder.name
        os.rename(tmp, dest)
        return dest

    def wait_for(self, what: str, fn, timeout: float, interval: float = 2.0):
        """Poll fn() until it returns a truthy value; fail with the server log on timeout."""
        deadline = time.monotonic() + timeout
        last_exc = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"dagster dev exited ({self.proc.returncode}) while waiting for {what}:\n"
                            f"{self.log_tail()}")
            try:
                value = fn()
                last_exc = None
                if value:
                    return value
            except Exception as exc:  # not ready yet (no lake, locked, server busy)
                last_exc = exc
            time.sleep(interval)
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_exc}).\n"
                    f"Server log tail:\n{self.log_tail()}")

    def session_runs(self, session_id: str) -> list[dict]:
        """Runs of a partition holding only this session (the sensor tags runs mmlake/sessions)."""
        data = self.graphql(
            "query($f: RunsFilter) { runsOrError(filter: $f) { ... on Runs { results { runId status "
            "tags { key value } } } } }",
            {"f": {"tags": [{"key": "mmlake/sessions", "value": session_id}]}})
        return data["runsOrError"]["results"]

    def ingest_synthetic(self) -> dict:
        """Drop one small synthetic session into the landing zone (once per server) and wait until
        every session asset is current in the lake and its run has finished; returns what happened,
        with the landing-to-queryable times (last asset, and every asset)."""
        if self.ingested:
            return self.ingested
        if self.ingest_error:  # failed once for this server: do not drop it again
            pytest.fail(f"the synthetic session did not ingest earlier in this test session: {self.ingest_error}")
        try:
            return self._ingest_synthetic()
        except BaseException as exc:
            self.ingest_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise

    def _ingest_synthetic(self) -> dict:
        from assets.definitions import SESSION_ASSETS
        from mmlake.synth import SessionSpec, write_session

        spec = SessionSpec("e2e", 0.0, chip_px=12, image_px=96, pixel_size_nm=0.05, seed=7,
                           campaign="e2e_test", n_channels=1400)
        src = write_session(spec, self.root / "outbox", workers=1)
        keys = [k.to_user_string() for a in SESSION_ASSETS for k in a.keys]
        from mmlake.manifest import load_manifest

        manifest = load_manifest(src)
        sid = manifest.session_id  # the identity id (campaign, sample, dose, acquisition)
        t0 = time.monotonic()
        self.drop_session(src)
        first: dict[str, float] = {}

        def current():
            runs = self.session_runs(sid)
            failed = [r["runId"] for r in runs if r["status"] in ("FAILURE", "CANCELED")]
            if failed and not any(r["status"] not in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
                pytest.fail(f"{sid}: run(s) {failed} failed. Server log tail:\n{self.log_tail(120)}")
            rows = self.mmlake_sql(f"select asset_key from materializations where session_id = '{sid}' "
                                   "and is_current")
            for r in rows:
                first.setdefault(r["asset_key"], time.monotonic() - t0)
            return set(keys) <= {r["asset_key"] for r in rows}

        self.wait_for(f"{sid}: every session asset ({', '.join(keys)}) in the lake", current, INGEST_TIMEOUT_S)
        queryable = time.monotonic() - t0

        def finished():
            runs = self.session_runs(sid)
            return runs and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs) and runs

        runs = self.wait_for(f"{sid}: its run to finish", finished, 120)
        self.ingested = {"session_id": sid, "sample": manifest.sample_key, "dose_key": spec.dose_key,
                         "folder": src.name, "last_asset": keys[-1], "assets": keys,
                         "seconds_last_asset": first.get(keys[-1], queryable), "seconds_all": queryable,
                         "seconds_run_done": time.monotonic() - t0, "first_seen": first, "runs": runs,
                         "n_chips": spec.grid[0] * spec.grid[1]}
        print(f"\n[e2e] {sid}: landing -> chips queryable {first.get('chips', float('nan')):.1f} s, "
              f"-> {keys[-1]} (last session asset) {self.ingested['seconds_last_asset']:.1f} s, "
              f"all {len(keys)} assets {queryable:.1f} s, run finished {self.ingested['seconds_run_done']:.1f} s")
        return self.ingested

    def stop(self) -> list[str]:
        """Stop dagster dev and everything it started; returns descriptions of leftovers it killed."""
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        for sig, wait in ((signal.SIGINT, 60), (signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            if self.proc.poll() is not None and not token_processes(self.token):
                break
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if self.proc.poll() is not None and not token_processes(self.token):
                    break
                time.sleep(0.5)
        leftovers = []
        for p in token_processes(self.token):  # escaped the group (setsid): ours by token, kill by pid
            try:
                leftovers.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
                p.kill()
            except Exception:
                pass
        return leftovers


def start_server(root: Path) -> DagsterServer:
    home, lake, landing = root / "dagster_home", root / "lake", root / "landing"
    for p in (home, lake, landing):
        p.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    token = uuid.uuid4().hex
    env = {**os.environ, "DAGSTER_HOME": str(home), "MMLAKE_HOME": str(lake), "MMLAKE_LANDING": str(landing),
           "MMLAKE_SENSOR_INTERVAL_S": str(SENSOR_INTERVAL_S), "MMLAKE_E2E_TOKEN": token,
           "PYTHONUNBUFFERED": "1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MMLAKE_DASK_SCHEDULER", None)
    subprocess.run([str(BIN / "dagster"), "instance", "concurrency", "set", "gpu", "1"], env=env, check=True,
                   capture_output=True, timeout=120)
    port = free_port()
    log_path = root / "dagster_dev.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        ["env", "--default-signal=INT,TERM", str(BIN / "dagster"), "dev", "-m", "assets.definitions",
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    server = DagsterServer(root=root, url=f"http://127.0.0.1:{port}", env=env, proc=proc, log_path=log_path,
                           token=token)

    def ready():
        data = server.graphql(
            "{ repositoriesOrError { ... on RepositoryConnection { nodes { name sensors { name } } } } "
            "instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }")
        repos = data["repositoriesOrError"].get("nodes") or []
        sensors = {s["name"] for r in repos for s in r["sensors"]}
        daemons = {d["daemonType"]: d["healthy"] for d in data["instance"]["daemonHealth"]["allDaemonStatuses"]
                   if d["required"]}
        return "landing_sensor" in sensors and daemons.get("SENSOR") and daemons.get("QUEUED_RUN_COORDINATOR")

    try:
        server.wait_for("the webserver, code location and daemon to come up", ready, STARTUP_TIMEOUT_S, 2.0)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def dagster_server(tmp_path_factory):
    """One `dagster dev` for the whole test session (slow tests only ask for it)."""
    root = tmp_path_factory.mktemp("dagster_e2e")
    t0 = time.monotonic()
    server = start_server(root)
    print(f"\n[e2e] dagster dev up at {server.url} in {time.monotonic() - t0:.1f} s")
    try:
        yield server
    finally:
        leftovers = server.stop()
        remaining = token_processes(server.token)
        assert not remaining, f"processes still alive after stopping dagster dev: {[p.pid for p in remaining]}"
        assert not leftovers, f"processes survived the process-group shutdown (killed by pid): {leftovers}"
