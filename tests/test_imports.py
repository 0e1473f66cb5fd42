"""assets.imports: heavy imports with the cyclic GC paused, then frozen (each case in a fresh process,
so the pytest worker's own objects are never frozen)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_collector_paused_freezes_what_the_imports_built_and_restores_the_collector_state():
    out = _run(
        "import gc, sys\n"
        "from assets.imports import collector_paused, import_paused\n"
        "before = gc.get_freeze_count()\n"
        "with collector_paused():\n"
        "    inside = gc.isenabled()\n"
        "    import xml.dom.minidom, email.mime.multipart\n"
        "frozen = gc.get_freeze_count()\n"
        "print(inside, gc.isenabled(), frozen > before + 1000)\n"
        "import_paused('xml.dom.minidom')  # already imported: no pause, nothing frozen\n"
        "print(gc.get_freeze_count() == frozen)\n"
        "gc.disable()\n"
        "import_paused('json.tool')\n"
        "print(gc.isenabled(), 'json.tool' in sys.modules, gc.get_freeze_count() > frozen)\n")
    assert out.split() == ["False", "True", "True", "True", "False", "True", "True"]


def test_the_code_location_leaves_its_objects_frozen_and_the_collector_on():
    """A 4-chip ingest spent 1.0 s of 7.1 s in full collections walking the import-time objects."""
    out = _run("import gc; import assets.definitions; print(gc.isenabled(), gc.get_freeze_count())")
    enabled, frozen = out.split()
    assert enabled == "True" and int(frozen) > 100_000
