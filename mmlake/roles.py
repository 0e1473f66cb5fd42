"""Physical roles of segmented regions, and the preprint's ordered-vs-disordered comparison.

Roles (open vocabulary; these are the ones the code knows): ``substrate``, ``film_ordered``,
``film_disordered``, ``cap``; ``interface`` (a region mixing two families, e.g. chips straddling the
film/substrate interface), ``film`` (a film region whose order cannot be told: no HAADF image) and
``unknown`` (no composition, or none of the role elements above ``min_share``).

Where a region's role comes from (``role_source``), highest precedence first:

1. ``manifest`` -- the session manifest's ``roles:`` mapping (:func:`parse_overrides`). Keys:

   - ``"<method>:<modality>:<label>"``: one region of one segmentation, e.g. ``"louvain:eds:2"``;
   - ``"<method>:<label>"`` or ``"<method>:*:<label>"``: that label in every modality of a method;
   - ``"<class name>"`` (not an integer): every region whose class name (few-shot support class,
     ground-truth class) is that name, e.g. ``{"lfo_good": "film_ordered"}`` when the support
     classes are not named after roles.

   The most specific key wins. Values are role names (lower case, ``[a-z0-9_]+``).
2. ``class_names`` -- methods whose labels index named classes (few-shot: the support classes ARE
   the roles; the ground truth: ``truth_classes``): the class name is the role.
3. ``rule`` -- the clustering methods (Louvain, Ward), whose labels are arbitrary integers:

   a. *Family* from the region's composition (summed-spectrum at.%): the family whose elements sum
      highest -- ``cap`` (Cr, Pt), ``substrate`` (Sr, Ti), ``film`` (La, Fe); configurable via
      ``families``. Below ``min_share`` at.% for every family, or without EDS: ``unknown``. When the
      runner-up family holds at least ``mixed_ratio`` (0.5) of the winner's share the region is a
      mixture: ``interface`` (kept out of the film comparison, where it would dilute the film's
      composition with the substrate's or the cap's).
   b. *Order* of the film regions of one segmentation: the reference is the most crystalline film
      region (crystalline ones first, then those with a measured d-spacing, then ``crystallinity``,
      then the most chips): ``film_ordered``. Every other film region is
      ``film_ordered`` too when it is crystalline (``crystallinity >= crystalline_min``) and its
      d-spacing agrees with the reference's within ``d_tol_nm`` (or either d-spacing is unknown
      for size reasons), and ``film_disordered`` otherwise: *amorphous* (no lattice peak, or
      crystallinity below ``crystalline_min``) or *off-lattice* (a lattice, but a d-spacing more than
      ``d_tol_nm`` away, e.g. the 0.42 nm defect domains against the 0.39-0.41 nm film). So a
      pristine film that a clustering splits in two stays ordered (no false disorder), which is the
      preprint's baseline check (Fig. 4A). A reference that is itself not crystalline makes every
      film region ``film_disordered``; without HAADF the order is unknown: ``film``.

   ``role_reason`` says which numbers decided.

Comparison (:func:`composition_shift`, preprint II.B, Figs. 4-5): per session x method x modality
and element (La, Fe, O by default), the composition of each role is the CHIP-WEIGHTED mean of the
summed-spectrum compositions of all regions with that role, ``sum(n_chips * at%) / sum(n_chips)``
over the regions with a value; the percent difference is ``100 * (disordered - ordered) /
ordered``. Rows exist only where a segmentation has both an ordered and a disordered region (absent
otherwise, never zero-filled); NULL where the ordered value is 0 or missing. ``percent_diff_renorm``
is the same after renormalising each role's composition over the compared elements (La + Fe + O =
100): regions that take in boundary chips carry some cap or substrate signal (a few at.% Cr, Pt, Sr,
Ti), which dilutes every film element alike and can hide the O enrichment; the renormalised figure
compares the film's own stoichiometry (NULL unless every compared element has a value).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import polars as pl

SUBSTRATE, FILM_ORDERED, FILM_DISORDERED, CAP, INTERFACE, FILM, UNKNOWN = (
    "substrate", "film_ordered", "film_disordered", "cap", "interface", "film", "unknown")
KNOWN_ROLES = (SUBSTRATE, FILM_ORDERED, FILM_DISORDERED, CAP, INTERFACE, FILM, UNKNOWN)
#: lake table of the per-session comparison (the view ``composition_shift`` adds campaign, sample, dose)
SHIFT_TABLE = "ordered_disordered_shift"
_ROLE_RE = re.compile(r"^[a-z0-9_]+$")

SHIFT_SCHEMA = {
    "session_id": pl.Utf8, "method": pl.Utf8, "modality": pl.Utf8, "element": pl.Utf8,
    "ordered_at_pct": pl.Float64, "disordered_at_pct": pl.Float64, "percent_diff": pl.Float64,
    "ordered_renorm_pct": pl.Float64, "disordered_renorm_pct": pl.Float64, "percent_diff_renorm": pl.Float64,
    "ordered_n_chips": pl.Int32, "disordered_n_chips": pl.Int32,
    "ordered_n_regions": pl.Int32, "disordered_n_regions": pl.Int32,
}


@dataclass(frozen=True)
class RoleRule:
    """Parameters of the composition + crystallinity rule for the clustering methods."""

    families: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {
        CAP: ("Cr", "Pt"), SUBSTRATE: ("Sr", "Ti"), FILM: ("La", "Fe")})
    min_share: float = 5.0  # at.%: a family needs at least this much to name a region
    mixed_ratio: float = 0.5  # runner-up family / winner at or above this: interface
    crystalline_min: float = 0.5  # fraction of chips with a 2-D lattice
    d_tol_nm: float = 0.01  # d-spacing agreement with the ordered film's

    def as_dict(self) -> dict:
        return {"families": {k: list(v) for k, v in self.families.items()}, "min_share": self.min_share,
                "mixed_ratio": self.mixed_ratio, "crystalline_min": self.crystalline_min, "d_tol_nm": self.d_tol_nm}


def parse_overrides(roles: Mapping[str, str] | None) -> dict[tuple, str]:
    """Validate the manifest's ``roles:`` mapping; returns ``{key tuple: role}`` where the key is
    ``(method, modality, label)``, ``(method, "*", label)`` or ``("class", name)``."""
    out: dict[tuple, str] = {}
    for key, role in (roles or {}).items():
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"roles: key {key!r} must be text like 'louvain:eds:2', 'ward:1' or a class name")
        if not isinstance(role, str) or not _ROLE_RE.match(role):
            raise ValueError(f"roles: value of {key!r} must be a role name matching [a-z0-9_]+ "
                             f"(e.g. {', '.join(KNOWN_ROLES[:4])}), got {role!r}")
        parts = [p.strip() for p in key.split(":")]
        if len(parts) in (2, 3):
            label = parts[-1]
            if not re.fullmatch(r"-?\d+", label):
                raise ValueError(f"roles: key {key!r}: the last part must be an integer label")
            mod = parts[1] if len(parts) == 3 else "*"
            out[(parts[0], mod or "*", int(label))] = role
        elif len(parts) == 1:
            if re.fullmatch(r"-?\d+", parts[0]):
                raise ValueError(f"roles: key {key!r} is a bare label; name the method too "
                                 f"('<method>:{parts[0]}' or '<method>:<modality>:{parts[0]}')")
            out[("class", parts[0])] = role
        else:
            raise ValueError(f"roles: key {key!r} has too many ':' parts (use method:modality:label)")
    return out


def _override(ov: dict, method: str, modality: str, label: int, class_name: str | None) -> str | None:
    for k in ((method, modality, label), (method, "*", label)):
        if k in ov:
            return ov[k]
    if class_name is not None and ("class", class_name) in ov:
        return ov[("class", class_name)]
    return None


def _family(comp: dict[str, float], rule: RoleRule) -> tuple[str, str]:
    if not comp or all(v is None or not np.isfinite(v) for v in comp.values()):
        return UNKNOWN, "no EDS composition for this region"
    scores = {f: sum(max(0.0, comp.get(e) or 0.0) for e in els if comp.get(e) is not None and np.isfinite(comp.get(e)))
              for f, els in rule.families.items()}
    ranked = sorted(scores, key=lambda f: -scores[f])
    best = ranked[0]
    desc = ", ".join(f"{'+'.join(rule.families[f])} {scores[f]:.1f}" for f in rule.families)
    if scores[best] < rule.min_share:
        return UNKNOWN, f"no role elements above {rule.min_share:g} at.% ({desc})"
    if len(ranked) > 1 and scores[ranked[1]] >= rule.mixed_ratio * scores[best]:
        return INTERFACE, (f"mixed {best}/{ranked[1]}: {scores[ranked[1]]:.1f} >= {rule.mixed_ratio:g} x "
                           f"{scores[best]:.1f} at.% ({desc} at.%)")
    return best, f"{'+'.join(rule.families[best])} dominant ({desc} at.%)"


def _fmt(v, unit=""):
    return "NULL" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3g}{unit}"


def _order_films(films: list[dict], rule: RoleRule) -> None:
    """Set role/role_reason of the film regions of one segmentation in place."""
    if any(r["crystallinity"] is None for r in films):
        for r in films:
            r["role"], r["role_reason"] = FILM, r["role_reason"] + "; order unknown (no HAADF crystallinity)"
        return
    ref = max(films, key=lambda r: (r["crystallinity"] >= rule.crystalline_min, r["d_spacing_nm"] is not None,
                                    r["crystallinity"], r["n_chips"], -r["region"]))
    ref_d = ref["d_spacing_nm"]
    ref_ok = ref["crystallinity"] >= rule.crystalline_min or ref_d is not None
    for r in films:
        c, d, note = r["crystallinity"], r["d_spacing_nm"], r["d_spacing_note"] or ""
        facts = f"crystallinity {c:.2f}, d {_fmt(d, ' nm')}"
        if not ref_ok:
            r["role"], why = FILM_DISORDERED, f"no film region is crystalline ({facts})"
        elif r is ref:
            r["role"], why = FILM_ORDERED, f"most crystalline film region ({facts})"
        elif note.startswith("amorphous"):
            r["role"], why = FILM_DISORDERED, f"amorphous: no lattice peak ({facts})"
        elif c < rule.crystalline_min:
            r["role"], why = FILM_DISORDERED, f"amorphous: crystallinity {c:.2f} < {rule.crystalline_min:g}"
        elif d is not None and ref_d is not None and abs(d - ref_d) > rule.d_tol_nm:
            r["role"], why = FILM_DISORDERED, (f"off-lattice: d {d:.3f} nm vs ordered film {ref_d:.3f} nm "
                                               f"(> {rule.d_tol_nm:g} nm)")
        else:
            r["role"], why = FILM_ORDERED, f"same lattice as the most crystalline film region ({facts})"
        r["role_reason"] = f"{r['role_reason']}; {why}"


def assign_roles(
    regions: pl.DataFrame,
    composition: pl.DataFrame,
    overrides: Mapping[str, str] | None = None,
    rule: RoleRule | None = None,
) -> pl.DataFrame:
    """Fill ``role``, ``role_source`` and ``role_reason`` of a ``regions`` frame (see the module
    docstring). Rows with ``role_source == "class_names"`` keep their class name as role unless the
    manifest overrides it; every other row gets the rule's role."""
    rule = rule or RoleRule()
    ov = parse_overrides(overrides)
    if regions.is_empty():
        return regions
    comp: dict[tuple, dict[str, float]] = {}
    for r in composition.iter_rows(named=True):
        comp.setdefault((r["session_id"], r["method"], r["modality"], r["region"]), {})[r["element"]] = (
            r["atomic_percent"] if r["atomic_percent"] is not None else float("nan"))
    rows = regions.to_dicts()
    by_seg: dict[tuple, list[dict]] = {}
    for r in rows:
        by_seg.setdefault((r["session_id"], r["method"], r["modality"]), []).append(r)
    for seg, rs in by_seg.items():
        films = []
        for r in rs:
            if r.get("role_source") == "class_names" and r.get("role"):
                r["role_reason"] = f"class name {r['role']!r} of the method's labels"
                continue
            fam, why = _family(comp.get((*seg, r["region"]), {}), rule)
            r["role"], r["role_source"], r["role_reason"] = fam, "rule", why
            if fam == FILM:
                films.append(r)
        if films:
            _order_films(films, rule)
    for r in rows:
        cls = r["role"] if r.get("role_source") == "class_names" else None
        o = _override(ov, r["method"], r["modality"], int(r["region"]), cls)
        if o is not None:
            r["role_reason"] = f"manifest roles: {o!r} (was {r['role']!r}: {r['role_reason']})"
            r["role"], r["role_source"] = o, "manifest"
    return pl.DataFrame(rows, schema=regions.schema)


def composition_shift(
    regions: pl.DataFrame,
    composition: pl.DataFrame,
    elements: Sequence[str] = ("La", "Fe", "O"),
    ordered_role: str = FILM_ORDERED,
    disordered_role: str = FILM_DISORDERED,
) -> pl.DataFrame:
    """Percent differences ``100 * (disordered - ordered) / ordered`` of chip-weighted role
    compositions, per session x method x modality x element (see the module docstring)."""
    if isinstance(elements, str):
        raise ValueError(f"elements must be a list of element symbols, got {elements!r}")
    keys = ["session_id", "method", "modality"]
    if regions.is_empty() or composition.is_empty():
        return pl.DataFrame(schema=SHIFT_SCHEMA)
    roles = regions.filter(pl.col("role").is_in([ordered_role, disordered_role])).select(
        *keys, "region", "role", "n_chips")
    j = (composition.filter(pl.col("element").is_in(list(elements)) & pl.col("atomic_percent").is_not_null()
                            & pl.col("atomic_percent").is_not_nan())
         .join(roles, on=[*keys, "region"], how="inner"))
    agg = j.group_by([*keys, "element", "role"]).agg(
        (pl.col("atomic_percent") * pl.col("n_chips")).sum().alias("wsum"),
        pl.col("n_chips").sum().alias("n"),
        pl.col("region").n_unique().alias("nr"),
    ).with_columns((pl.col("wsum") / pl.col("n")).alias("at"))
    grp = [*keys, "role"]
    n_el = len(set(elements))
    agg = agg.with_columns(
        pl.when(pl.col("element").count().over(grp) == n_el)
        .then(100.0 * pl.col("at") / pl.col("at").sum().over(grp)).otherwise(None).alias("renorm"))
    o = agg.filter(pl.col("role") == ordered_role).select(
        *keys, "element", pl.col("at").alias("ordered_at_pct"), pl.col("renorm").alias("ordered_renorm_pct"),
        pl.col("n").alias("ordered_n_chips"), pl.col("nr").alias("ordered_n_regions"))
    d = agg.filter(pl.col("role") == disordered_role).select(
        *keys, "element", pl.col("at").alias("disordered_at_pct"), pl.col("renorm").alias("disordered_renorm_pct"),
        pl.col("n").alias("disordered_n_chips"), pl.col("nr").alias("disordered_n_regions"))

    def pdiff(a: str, b: str) -> pl.Expr:
        return pl.when(pl.col(a).abs() > 0).then(100.0 * (pl.col(b) - pl.col(a)) / pl.col(a)).otherwise(None)

    out = o.join(d, on=[*keys, "element"], how="inner").with_columns(
        pdiff("ordered_at_pct", "disordered_at_pct").alias("percent_diff"),
        pdiff("ordered_renorm_pct", "disordered_renorm_pct").alias("percent_diff_renorm"))
    order = {e: i for i, e in enumerate(elements)}
    out = out.with_columns(pl.col("element").replace_strict(order, default=len(order)).alias("_o")).sort(
        [*keys, "_o"]).drop("_o")
    return out.select([pl.col(c).cast(t) for c, t in SHIFT_SCHEMA.items()])
