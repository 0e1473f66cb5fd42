"""Which line quantifies which element, with which k-factor (:func:`resolve_lines`), and the default
k-factor tables of ``mmlake/data/kfactors.yaml`` (nominal values; see that file for their sources).

k-factors are keyed by line (``Fe_Ka``): the session's (manifest ``kfactors``) first, else the table.
Declared elements must be quantifiable; the preprint's extraneous elements (``EXTRANEOUS_ELEMENTS``)
are added where they have a line with a k-factor inside the spectrum's energy range.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from mmlake.eds.lines import element_lines, known_element, line_energy

#: Elements the preprint quantified in every chip (Section IV.C), besides the declared ones.
EXTRANEOUS_ELEMENTS: tuple[str, ...] = ("Al", "C", "Cr", "Cu", "Fe", "Ga", "La", "N", "O", "Pt", "Sr", "Ti")
EXTRANEOUS_LABEL = "Extraneous"
_KFACTOR_FILE = Path(__file__).resolve().parent.parent / "data" / "kfactors.yaml"


def _fail(session: str | None, msg: str) -> Exception:
    if session is not None:
        from mmlake.errors import SessionError

        return SessionError(session, msg)
    return ValueError(msg)




@dataclass(frozen=True)
class KFactorTable:
    name: str
    description: str
    kfactors: Mapping[str, float]
    preferred_lines: Mapping[str, tuple[str, ...]]


@functools.lru_cache(maxsize=None)
def load_kfactor_table(name: str | None = None) -> KFactorTable:
    """A table of ``mmlake/data/kfactors.yaml`` (``None``: the file's ``default_table``)."""
    import yaml

    raw = yaml.safe_load(_KFACTOR_FILE.read_text())
    name = name or raw["default_table"]
    if name not in raw["tables"]:
        raise ValueError(f"kfactor_table {name!r} not in {_KFACTOR_FILE.name}; available: {sorted(raw['tables'])}")
    t = raw["tables"][name]
    return KFactorTable(
        name=name,
        description=str(t.get("description", "")),
        kfactors={str(k): float(v) for k, v in t["kfactors"].items()},
        preferred_lines={str(k): tuple(v) for k, v in t["preferred_lines"].items()},
    )


@dataclass(frozen=True)
class LineSetup:
    """Which line quantifies which element, with which k-factor. Everything in exspy's (alphabetical
    by line) order."""

    lines: tuple[str, ...]
    elements: tuple[str, ...]
    kfactors: tuple[float, ...]
    kfactor_source: tuple[str, ...]  # "session" or "table:<name>" per line
    declared: tuple[str, ...]  # the session's elements (all quantified)
    skipped: Mapping[str, str] = field(default_factory=dict)  # extraneous element -> reason
    energy_range_kev: tuple[float, float] = (0.0, 0.0)

    def kfactor(self, line: str) -> float:
        return self.kfactors[self.lines.index(line)]

    def as_dict(self) -> dict:
        return {
            "lines": list(self.lines),
            "elements": list(self.elements),
            "kfactors": {ln: k for ln, k in zip(self.lines, self.kfactors)},
            "kfactor_source": {ln: s for ln, s in zip(self.lines, self.kfactor_source)},
            "declared": list(self.declared),
            "skipped": dict(self.skipped),
            "energy_range_kev": list(self.energy_range_kev),
        }


def resolve_lines(
    elements: Sequence[str],
    *,
    energy_range_kev: tuple[float, float],
    kfactors: Mapping[str, float] | None = None,
    kfactor_table: str | None = None,
    include_extraneous: bool = True,
    session: str | None = None,
) -> LineSetup:
    """Choose the quantified line and k-factor of each element.

    Declared ``elements`` must all be quantifiable (known symbol, a line with a k-factor inside
    ``energy_range_kev``); otherwise an error names the element and says what to do. Extraneous
    elements (``EXTRANEOUS_ELEMENTS``) are added where they have such a line, skipped (with the
    reason in ``skipped``) where not.
    """
    if isinstance(elements, str) or not all(isinstance(e, str) for e in elements):
        raise ValueError(f"elements must be a list of element symbols, got {elements!r}")
    lo, hi = float(energy_range_kev[0]), float(energy_range_kev[1])
    session_kf = {str(k): float(v) for k, v in (kfactors or {}).items()}
    for ln, v in session_kf.items():
        el = ln.split("_", 1)[0]
        if not known_element(el) or ln not in element_lines(el):
            raise _fail(session, f"kfactors: {ln!r} is not an X-ray line exspy knows (use names like "
                                 "Fe_Ka, La_La, O_Ka)")
        if not (v > 0 and math.isfinite(v)):
            raise _fail(session, f"kfactors: {ln} must be a positive number, got {v!r}")
    table = load_kfactor_table(kfactor_table) if kfactor_table != "none" else None
    declared = list(dict.fromkeys(elements))
    unknown = [e for e in declared if not known_element(e)]
    if unknown:
        raise _fail(session, f"unknown element symbol(s) {unknown}: use chemical symbols such as 'Fe', "
                             "'La', 'O' in the session's elements")

    def choose(el: str) -> tuple[str, float, str] | str:
        """(line, k, source) or the reason it cannot be quantified."""
        in_range = lambda ln: lo < line_energy(ln) < hi  # noqa: E731
        pref = list(table.preferred_lines.get(el, ())) if table else []
        own = [ln for ln in session_kf if ln.split("_", 1)[0] == el]
        own.sort(key=lambda ln: (pref.index(ln) if ln in pref else len(pref), ln))
        for ln in own:
            if in_range(ln):
                return ln, session_kf[ln], "session"
        if own:
            return (f"its session k-factor line(s) {own} lie outside the spectrum's energy range "
                    f"{lo:g}-{hi:g} keV")
        cands = [ln for ln in pref if table and ln in table.kfactors]
        for ln in cands:
            if in_range(ln):
                return ln, table.kfactors[ln], f"table:{table.name}"
        lines_in = sorted(ln for ln, (e, _) in element_lines(el).items() if lo < e < hi)
        if not lines_in:
            return f"no X-ray line of {el} lies inside the spectrum's energy range {lo:g}-{hi:g} keV"
        if cands:
            return (f"the k-factor table's lines for {el} {cands} lie outside the energy range "
                    f"{lo:g}-{hi:g} keV")
        return f"no k-factor for any line of {el} (lines in range: {lines_in})"

    chosen: dict[str, tuple[str, float, str]] = {}
    skipped: dict[str, str] = {}
    for el in declared:
        r = choose(el)
        if isinstance(r, str):
            raise _fail(session, f"element {el} cannot be quantified: {r}. Add its k-factor to "
                                 f"session.yaml (kfactors: {{{el}_Ka: ...}} or the line you use), or "
                                 f"remove {el} from the session's elements")
        chosen[el] = r
    if include_extraneous:
        for el in EXTRANEOUS_ELEMENTS:
            if el in chosen:
                continue
            r = choose(el)
            if isinstance(r, str):
                skipped[el] = r
            else:
                chosen[el] = r
    if not chosen:
        raise _fail(session, "no element to quantify: declare the session's elements")
    order = sorted(chosen, key=lambda e: chosen[e][0])  # exspy order: alphabetical by line
    return LineSetup(
        lines=tuple(chosen[e][0] for e in order),
        elements=tuple(order),
        kfactors=tuple(chosen[e][1] for e in order),
        kfactor_source=tuple(chosen[e][2] for e in order),
        declared=tuple(declared),
        skipped=skipped,
        energy_range_kev=(lo, hi),
    )
