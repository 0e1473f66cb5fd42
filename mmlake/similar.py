"""Find chips like this one across the whole lake: cosine similarity over `haadf_embeddings`.

`similar_chips(lake, session_id, row, col, n=10, encoder=None)` returns the n chips of the lake
(every session, every campaign) whose embedding is closest to the query chip's by cosine
similarity, with their session, campaign, sample, dose, grid position, region role and ground truth
where known. `write_thumbnails` draws the query and its results as a PNG grid and a self-contained
HTML page (inline PNG thumbnails from the stored HAADF chip stacks).

Similarity = cosine of the embeddings *centred on the lake-wide mean vector of the encoder* (the
mean over every chip of every session, so one fixed reference for all queries; equal to Pearson
correlation across the feature dimensions when all features share a scale). Raw cosine of the fft
encoder's non-negative log-power features is dominated by what every chip has in common: on two
synthetic sessions the 10 nearest chips of a substrate support chip were 35 % substrate raw and
67 % centred (film_ordered 90 -> 95 %, cap 78 -> 93 %); tests/test_similar.py holds those sessions.

How it stays fast. An exact scan is enough; no approximate index is needed. The embeddings of an
encoder are copied once into an index folder of the lake (`<lake>/index/similar/<encoder>/<fp>/`):
the vectors centred and L2-normalised as one float32 `.npy` matrix (memory-mapped when read),
beside the session and chip index of each row and the mean vector. `<fp>` is a fingerprint of the `haadf_embeddings` rows of that
encoder (their materialization ids and row counts): when an asset rewrites embeddings, the next
query builds a new index (streamed from DuckDB in record batches, never the whole table in Python)
and removes the old one. A query is then one float32 matrix-vector product (BLAS) and an
`argpartition`: 1,000,000 chips x 67 dims (fft) or x 512 dims (vgg16) in well under a second (see
`bench/similar.py` for the figures and DuckDB's own `list_cosine_similarity` scan as the baseline;
`sql/queries/similar_chips.sql` is that scan written out). DuckDB's `vss` HNSW index was not used:
it needs fixed-size `FLOAT[n]` columns (the lake stores `FLOAT[]`), keeps its graph in memory
unless an experimental persistence flag is set, and is approximate.

Roles: a chip's role is that of its region in the first segmentation (method, modality) found in
`ROLE_SOURCES` order for its session (`segment_labels` joined with `regions`); `role_source` says
which. Chips of sessions without descriptors get NULL.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmlake.errors import LakeError

ROLE_SOURCES = (("fewshot", "ensemble"), ("fewshot", "ensemble_auto"), ("louvain", "ensemble"),
                ("agglomerative", "ensemble"), ("fewshot", "haadf"), ("louvain", "haadf"),
                ("agglomerative", "haadf"), ("truth", "truth"))
ENCODER_PREFERENCE = ("vgg16", "effnet", "ssl", "fft")  # default encoder: the first one the lake holds


@dataclass
class SimilarIndex:
    """Centred (lake-wide mean) and L2-normalised embeddings of one encoder, rows in
    (session_id, chip_index) order."""

    encoder: str
    fingerprint: str
    vectors: np.ndarray          # (n, dim) float32, unit norm (zero rows stay zero); memory-mapped
    session_codes: np.ndarray    # (n,) int32 index into `sessions`
    chip_index: np.ndarray       # (n,) int32
    sessions: list[str]
    path: Path
    mean: np.ndarray | None = None  # (dim,) float64, subtracted before normalising

    @property
    def n(self) -> int:
        return int(self.vectors.shape[0])

    def position(self, session_id: str, chip_index: int) -> int | None:
        try:
            code = self.sessions.index(session_id)
        except ValueError:
            return None
        lo, hi = np.searchsorted(self.session_codes, [code, code + 1])
        hit = lo + np.searchsorted(self.chip_index[lo:hi], chip_index)
        if hit < hi and self.chip_index[hit] == chip_index:
            return int(hit)
        return None

    def search_raw(self, embedding: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """`search` for an embedding straight from the encoder (centred on the index mean first)."""
        e = np.asarray(embedding, dtype=np.float64).ravel()
        return self.search((e - self.mean) if self.mean is not None else e, n)

    def search(self, query: np.ndarray, n: int, exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(positions, cosine similarities) of the `n` rows most similar to `query`, best first.
        `query` is a row of `vectors` (already centred and normalised) or, with `raw=True` in
        `search_raw`, an embedding as the encoder gives it."""
        q = np.asarray(query, dtype=np.float32).ravel()
        if q.shape[0] != self.vectors.shape[1]:
            raise ValueError(f"query: {q.shape[0]}-d vector for a {self.vectors.shape[1]}-d index")
        norm = float(np.linalg.norm(q))
        if norm > 0:
            q = q / norm
        scores = self.vectors @ q
        if exclude is not None:
            scores[exclude] = -np.inf
        k = min(n, self.n - (exclude is not None))
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((top, -scores[top]))]  # best first, ties by position (stable)
        return top, scores[top]


def _fingerprint(con, encoder: str) -> tuple[str, int]:
    """(hash of the encoder's rows by materialization id and count, number of rows): one scan of the
    two narrow columns, not of the vectors."""
    rows = con.execute("select materialization_id, count(*) from haadf_embeddings "
                       "where encoder = ? group by 1 order by 1", [encoder]).fetchall()
    digest = hashlib.sha256(json.dumps([[r[0], r[1]] for r in rows]).encode()).hexdigest()[:20]
    return digest, sum(r[1] for r in rows)


def _encoders(con, session_id: str | None = None) -> list[str]:
    sql = "select distinct encoder from haadf_embeddings" + (" where session_id = ?" if session_id else "")
    names = [r[0] for r in con.execute(sql, [session_id] if session_id else []).fetchall()]
    return sorted(names, key=lambda e: (ENCODER_PREFERENCE.index(e) if e in ENCODER_PREFERENCE else 99, e))


def encoders(lake) -> list[str]:
    """Encoders with embeddings in the lake, in ENCODER_PREFERENCE order then by name."""
    with lake.connect(read_only=True) as con:
        return _encoders(con)


def load_index(lake, encoder: str, batch_rows: int = 65536, con=None) -> SimilarIndex:
    """The index of `encoder`'s embeddings, built (or rebuilt after embeddings changed) on first use.
    `con`: an open connection to the lake to use (else one is opened)."""
    if con is None:
        with lake.connect(read_only=True) as c:
            return load_index(lake, encoder, batch_rows, c)
    root = Path(lake.home) / "index" / "similar" / encoder.replace("/", "_")
    fp, n = _fingerprint(con, encoder)
    if n == 0:
        raise LakeError(f"no '{encoder}' embeddings in the lake at {lake.home}; materialize "
                        "haadf_embeddings, or choose another --encoder "
                        f"(the lake holds: {', '.join(_encoders(con)) or 'none'})")
    folder = root / fp
    if not (folder / "meta.json").exists():
        dim = con.execute("select len(vector) from haadf_embeddings where encoder = ? limit 1", [encoder]).fetchone()[0]
        _build(con, encoder, folder, n, int(dim), batch_rows)
        for old in root.iterdir():
            if old.name != fp and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
    meta = json.loads((folder / "meta.json").read_text())
    return SimilarIndex(encoder, fp, np.load(folder / "vectors.npy", mmap_mode="r"),
                        np.load(folder / "session_codes.npy"), np.load(folder / "chip_index.npy"),
                        meta["sessions"], folder, np.load(folder / "mean.npy"))


def _build(con, encoder: str, folder: Path, n: int, dim: int, batch_rows: int) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        vec = np.lib.format.open_memmap(tmp / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, dim))
        codes = np.empty(n, dtype=np.int32)
        chips = np.empty(n, dtype=np.int32)
        sessions: list[str] = []
        code_of: dict[str, int] = {}
        reader = con.execute("select session_id, chip_index, vector from haadf_embeddings where encoder = ? "
                             "order by session_id, chip_index", [encoder]).fetch_record_batch(batch_rows)
        at = 0
        total = np.zeros(dim, dtype=np.float64)
        for batch in reader:
            m = batch.num_rows
            lists = batch.column(2)
            lens = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
            if np.any(lens != dim):
                raise LakeError(f"haadf_embeddings: '{encoder}' vectors have {sorted(set(lens.tolist()))} "
                                f"dimensions; one encoder must give one length")
            flat = pc.list_flatten(lists).cast(pa.float32()).to_numpy(zero_copy_only=False)
            block = flat.reshape(m, dim)
            total += block.sum(axis=0, dtype=np.float64)
            vec[at:at + m] = block
            for i, sid in enumerate(batch.column(0).to_pylist()):
                c = code_of.get(sid)
                if c is None:
                    c = code_of[sid] = len(sessions)
                    sessions.append(sid)
                codes[at + i] = c
            chips[at:at + m] = batch.column(1).to_numpy(zero_copy_only=False)
            at += m
        mean = total / max(at, 1)
        step = max(1, (64 << 20) // (4 * max(dim, 1)))
        for s0 in range(0, at, step):  # second pass, in place: centre and normalise
            block = vec[s0:s0 + step].astype(np.float64) - mean
            norms = np.linalg.norm(block, axis=1, keepdims=True)
            vec[s0:s0 + step] = np.divide(block, norms, out=np.zeros_like(block), where=norms > 0)
        vec.flush()
        del vec
        np.save(tmp / "mean.npy", mean)
        np.save(tmp / "session_codes.npy", codes[:at])
        np.save(tmp / "chip_index.npy", chips[:at])
        (tmp / "meta.json").write_text(json.dumps({"encoder": encoder, "n": at, "dim": dim, "sessions": sessions}))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process built it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def query_chip(lake, session_id: str, row: int, col: int, con=None) -> dict:
    """The chip_grids row of a session plus the chip_index of (row, col); errors say what is valid."""
    if con is None:
        with lake.connect(read_only=True) as c:
            return query_chip(lake, session_id, row, col, c)
    grid = con.execute("select * from chip_grids where session_id = ?", [session_id]).pl().to_dicts()
    if not grid:
        known = [r[0] for r in con.execute("select session_id from sessions order by 1 limit 5").fetchall()]
        raise LakeError(f"no chip grid for session {session_id!r}; ids look like {', '.join(known) or '(none yet)'} "
                        "(`mmlake sql \"select session_id from chip_grids\"`)")
    g = grid[0]
    if not (0 <= row < g["n_rows"] and 0 <= col < g["n_cols"]):
        raise LakeError(f"session {session_id}: chip (row {row}, col {col}) is outside its "
                        f"{g['n_rows']} x {g['n_cols']} chip grid (rows 0..{g['n_rows'] - 1}, cols 0..{g['n_cols'] - 1})")
    g["chip_index"] = int(row * g["n_cols"] + col)
    return g


def similar_chips(lake, session_id: str, row: int, col: int, n: int = 10, encoder: str | None = None,
                  include_query: bool = False):
    """The `n` chips of the whole lake most similar to chip (row, col) of `session_id` (polars frame,
    best first): rank, similarity (cosine), session_id, campaign, sample, dose_dpa, row, col,
    chip_index, role, role_source, truth_label, encoder. The query chip itself is left out unless
    `include_query`. `encoder`: default the first of ENCODER_PREFERENCE the session has."""
    import polars as pl

    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a whole number >= 1, got {n!r}")
    with lake.connect(read_only=True) as con:  # one connection: opening the file costs ~0.1 s
        g = query_chip(lake, session_id, row, col, con)
        have = _encoders(con, session_id)
        if encoder is None:
            if not have:
                raise LakeError(f"session {session_id} has no HAADF embeddings; materialize haadf_embeddings first")
            encoder = have[0]
        elif encoder not in have:
            raise LakeError(f"session {session_id} has no '{encoder}' embeddings (it has: {', '.join(have) or 'none'})")
        index = load_index(lake, encoder, con=con)
        pos = index.position(session_id, g["chip_index"])
        if pos is None:
            raise LakeError(f"session {session_id}: chip {g['chip_index']} has no '{encoder}' embedding")
        top, sims = index.search(np.asarray(index.vectors[pos]), n, exclude=None if include_query else pos)
        hits = pl.DataFrame({"rank": np.arange(1, len(top) + 1, dtype=np.int32),
                             "similarity": sims.astype(np.float64),
                             "session_id": [index.sessions[c] for c in index.session_codes[top]],
                             "chip_index": index.chip_index[top].astype(np.int32)})
        return describe_hits(lake, hits, con).with_columns(pl.lit(encoder).alias("encoder"))


def describe_hits(lake, hits, con=None):
    """Join (session_id, chip_index) hits with sessions (campaign, sample, dose), chips (row, col,
    truth) and the chip's region role (ROLE_SOURCES order)."""
    import polars as pl

    if hits.is_empty():
        return hits
    if con is None:
        with lake.connect(read_only=True) as c:
            return describe_hits(lake, hits, c)
    name = f"hits_{uuid.uuid4().hex[:8]}"
    con.register(name, hits.to_arrow())
    meta = con.execute(
        "select h.*, s.campaign, s.sample, s.dose_dpa, c.row, c.col, c.truth_label "
        f"from {name} h join sessions s using (session_id) "
        "left join chips c on c.session_id = h.session_id and c.chip_index = h.chip_index "
        "order by h.rank").pl()
    tables = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
    roles = pl.DataFrame(schema={"session_id": pl.String, "chip_index": pl.Int32, "method": pl.String,
                                 "modality": pl.String, "role": pl.String})
    if {"segment_labels", "regions"} <= tables:
        roles = con.execute(
            f"select l.session_id, l.chip_index, l.method, l.modality, r.role from {name} h "
            "join segment_labels l on l.session_id = h.session_id and l.chip_index = h.chip_index "
            "join regions r on r.session_id = l.session_id and r.method = l.method "
            "and r.modality = l.modality and r.region = l.label").pl()
    con.unregister(name)
    prio = {k: i for i, k in enumerate(ROLE_SOURCES)}
    best: dict[tuple[str, int], tuple[int, str, str]] = {}
    for r in roles.iter_rows(named=True):
        p = prio.get((r["method"], r["modality"]), len(prio))
        key = (r["session_id"], int(r["chip_index"]))
        if key not in best or p < best[key][0]:
            best[key] = (p, r["role"], f"{r['method']}/{r['modality']}")
    keys = list(zip(meta["session_id"].to_list(), meta["chip_index"].to_list()))
    return meta.with_columns(
        pl.Series("role", [best.get(k, (0, None, None))[1] for k in keys], dtype=pl.String),
        pl.Series("role_source", [best.get(k, (0, None, None))[2] for k in keys], dtype=pl.String),
    ).select("rank", "similarity", "session_id", "campaign", "sample", "dose_dpa", "row", "col", "chip_index",
             "role", "role_source", "truth_label")


def chip_images(lake, keys: list[tuple[str, int]]) -> dict[tuple[str, int], np.ndarray | None]:
    """HAADF chip image of each (session_id, chip_index) from the stored chip stacks (None: no HAADF)."""
    out: dict[tuple[str, int], np.ndarray | None] = {}
    sids = sorted({k[0] for k in keys})
    if not sids:
        return out
    grids = lake.query("select session_id, haadf_stack_sha from chip_grids where session_id in (select unnest(?))",
                       [sids]).rows()
    shas = dict(grids)
    for sid in sids:
        stack = None
        if shas.get(sid):
            stack = np.load(lake.find_object(shas[sid]), mmap_mode="r", allow_pickle=False)
        for k in keys:
            if k[0] == sid:
                out[k] = None if stack is None else np.asarray(stack[k[1]], dtype=np.float32)
    return out


def write_thumbnails(lake, result, session_id: str, row: int, col: int, out: str | os.PathLike) -> dict[str, Path]:
    """A PNG grid (query first, then the results with rank, similarity, role, campaign) and a
    self-contained HTML page (table + inline PNG thumbnails) next to each other: `out` with
    suffixes .png and .html. Returns {"png": path, "html": path}."""
    import base64
    import html
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    g = query_chip(lake, session_id, row, col)
    keys = [(session_id, g["chip_index"])] + list(zip(result["session_id"].to_list(), result["chip_index"].to_list()))
    imgs = chip_images(lake, keys)
    short = session_id if len(session_id) <= 30 else session_id[:14] + "..." + session_id[-13:]
    labels = [f"query\n{short}\n(row {row}, col {col})"] + [
        f"#{r['rank']}  cos {r['similarity']:.3f}\n{r['campaign']}\n{r['role'] or 'no role'} (r{r['row']}, c{r['col']})"
        for r in result.iter_rows(named=True)]
    n = len(keys)
    cols = min(6, n)
    rows_ = -(-n // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(2.5 * cols, 3.1 * rows_), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (k, lab) in enumerate(zip(keys, labels)):
        ax = axes.ravel()[i]
        if imgs.get(k) is not None:
            ax.imshow(imgs[k], cmap="gray")
        else:
            ax.text(0.5, 0.5, "no HAADF", ha="center", va="center")
        ax.set_title(lab, fontsize=7, color="C3" if i == 0 else "black")
    fig.tight_layout(pad=1.4)
    png = out.with_suffix(".png")
    fig.savefig(png, dpi=110)
    plt.close(fig)

    def thumb(a) -> str:
        if a is None:
            return "no HAADF"
        buf = io.BytesIO()
        plt.imsave(buf, np.asarray(a), cmap="gray", format="png")
        return f'<img width="96" height="96" style="image-rendering:pixelated" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'

    rows_html = []
    for k, r in zip(keys[1:], result.iter_rows(named=True)):
        cells = [thumb(imgs.get(k))] + [html.escape("" if r[c] is None else (f"{r[c]:.4f}" if c == "similarity" else str(r[c])))
                                       for c in ("rank", "similarity", "campaign", "sample", "dose_dpa", "session_id",
                                                 "row", "col", "role", "role_source", "truth_label")]
        rows_html.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    enc = result["encoder"][0] if "encoder" in result.columns and len(result) else ""
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>chips like {html.escape(session_id)} "
            f"({row}, {col})</title><style>body{{font-family:sans-serif}} td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}"
            f"</style></head><body><h2>Chips like {html.escape(session_id)} (row {row}, col {col})</h2>"
            f"<p>{thumb(imgs.get(keys[0]))} cosine similarity over <code>{html.escape(enc)}</code> embeddings, "
            f"whole lake, {len(result)} nearest</p><table><tr>"
            + "".join(f"<th>{h}</th>" for h in ("chip", "rank", "cosine", "campaign", "sample", "dose dpa", "session",
                                                "row", "col", "role", "role from", "truth"))
            + "</tr>" + "".join(rows_html) + "</table></body></html>")
    page_path = out.with_suffix(".html")
    page_path.write_text(page)
    return {"png": png, "html": page_path}
