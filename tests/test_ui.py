"""The Dagster UI in a real headless Chromium (Debian `chromium`, driven by Playwright): the asset
graph, a partitioned asset's partitions, and the automation page, against the shared `dagster dev`
of tests/dagster_server.py after it ingested a session. Screenshots go to the test's tmp folder."""

import shutil
import subprocess
from pathlib import Path

import pytest

from assets.definitions import SESSION_ASSETS

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
INSTALL_HINT = ("`make test` installs it (apt-get install -y chromium); on another system install "
                "Chromium and link it to /usr/bin/chromium")


def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: {INSTALL_HINT}")
    return CHROMIUM


def group_names() -> list[str]:
    return sorted({a.group_names_by_key[k] for a in SESSION_ASSETS for k in a.keys})


def settle(page) -> None:
    """Let the UI finish its GraphQL queries before a screenshot (best effort: it also polls)."""
    try:
        page.wait_for_load_state("networkidle", timeout=10_000)
    except Exception:
        pass


def test_asset_graph_and_partitions_in_the_browser(dagster_server, tmp_path):
    exe = chromium()
    info = dagster_server.ingest_synthetic()
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:  # no Playwright: Chromium's own --dump-dom / --screenshot
        return _dump_dom_fallback(exe, dagster_server, info, tmp_path)
    url = dagster_server.url
    with sync_playwright() as p:
        # a throwaway profile: Playwright takes --user-data-dir as the persistent context's folder
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(exe), headless=True, args=FLAGS,
            viewport={"width": 1400, "height": 900})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(60_000)
            # expect() has its own 5 s default, shorter than a loaded CI machine needs to load the
            # code location ("Loading assets.definitions…" was all CI saw after 5 s)
            expect.set_options(timeout=60_000)

            # the ingest group's asset graph: both assets, chips' check passed
            page.goto(f"{url}/locations/assets.definitions/asset-groups/ingest", wait_until="domcontentloaded")
            expect(page.get_by_text("raw_session", exact=True).first).to_be_visible()
            expect(page.get_by_text("chips", exact=True).first).to_be_visible()
            expect(page.get_by_text("1 / 1 Passed").first).to_be_visible()
            settle(page)
            page.screenshot(path=str(tmp_path / "ingest_graph.png"))

            # the global lineage: one box per asset group of the session assets
            page.goto(f"{url}/asset-groups", wait_until="domcontentloaded")
            for group in group_names():
                expect(page.get_by_text(group, exact=True).first).to_be_visible()
            settle(page)
            page.screenshot(path=str(tmp_path / "global_lineage.png"))

            # a partitioned asset: both dimensions' keys of the ingested session, materialized
            page.goto(f"{url}/assets/chips?view=partitions", wait_until="domcontentloaded")
            expect(page.get_by_text("Materialized (1)").first).to_be_visible()
            expect(page.get_by_text(info["sample"], exact=True).first).to_be_visible()
            expect(page.get_by_text(info["dose_key"], exact=True).first).to_be_visible()
            body = page.inner_text("body")
            assert "chips" in body and "Missing (0)" in body
            settle(page)
            page.screenshot(path=str(tmp_path / "chips_partitions.png"))

            # the automation page: the landing sensor and the schedules, running
            page.goto(f"{url}/automation", wait_until="domcontentloaded")
            for name in ("landing_sensor", "stale_refresh_schedule", "nightly_report_schedule"):
                expect(page.get_by_text(name, exact=True).first).to_be_visible()
            settle(page)
            page.screenshot(path=str(tmp_path / "automation.png"))
        finally:
            context.close()
    shots = sorted(p.name for p in tmp_path.glob("*.png"))
    assert shots == ["automation.png", "chips_partitions.png", "global_lineage.png", "ingest_graph.png"]
    assert all((tmp_path / s).stat().st_size > 10_000 for s in shots)
    print(f"\n[ui] screenshots in {tmp_path}")


def _dump_dom_fallback(exe: Path, server, info: dict, tmp_path: Path) -> None:
    def run(args):
        return subprocess.run([str(exe), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                               "--virtual-time-budget=20000", *args], capture_output=True, text=True,
                              timeout=120)

    dom = run(["--dump-dom", f"{server.url}/locations/assets.definitions/asset-groups/ingest"]).stdout
    assert "raw_session" in dom and "chips" in dom
    dom = run(["--dump-dom", f"{server.url}/assets/chips?view=partitions"]).stdout
    assert info["sample"] in dom
    run([f"--screenshot={tmp_path / 'chips_partitions.png'}", "--window-size=1400,900",
         f"{server.url}/assets/chips?view=partitions"])
    assert (tmp_path / "chips_partitions.png").is_file()
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
