"""Group `features`: the self-supervised `ssl` HAADF encoder, trained per campaign on its own chips.

`ssl_encoder` (pool `gpu`, one step at a time like the other encoders) trains one model per campaign
with `mmlake.encoders.ssl.train_ssl` on the EncoderResource device (CPU fallback: about 3 minutes for
the demo campaign on 2 idle cores), stores the checkpoint content-addressed (`Lake.put_bytes`) and
writes one `encoder_models` row per campaign (parameters, the chips' data versions, loss curve).
`haadf_embeddings` then embeds every session of the campaign with it when `ssl` is in
`haadf_encoders` (materialize `ssl_encoder` first, then `haadf_embeddings` again).
"""


import datetime as dt
import json

import polars as pl
from dagster import AssetExecutionContext, Config, DataVersion, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.common import png_md
from assets.ingest import chips
from mmlake.codeversion import module_code_version
from resources.encoder import EncoderResource
from resources.lake import LakeResource

SSL_ENCODER_VERSION = module_code_version(__name__, "ssl_encoder", extra=("mmlake.encoders.ssl",))


class SSLTrainConfig(Config):
    """Training options of `ssl_encoder` (mmlake.encoders.ssl.DEFAULT_PARAMS for the rest)."""

    steps: int = Field(default=0, description="optimiser steps; 0 = the library default")
    batch_size: int = Field(default=0, description="chips per step; 0 = the library default")
    seed: int = Field(default=0, description="seed of initialisation, sampling and augmentations")
    cross_modal_weight: float = Field(default=-1.0, description="weight of the HAADF-EDS term; <0 = default")
    campaigns: list[str] = Field(default=[], description="campaigns to train; empty = every campaign in the lake")


def campaign_sessions(lk, campaign: str):
    """The SSLSession inputs of a campaign and the chips materializations they came from."""
    from mmlake.encoders.ssl import SSLSession
    from mmlake.features import load_grid

    rows = lk.query("select session_id, partition_key from sessions where campaign = ? order by session_id",
                    [campaign]).to_dicts()
    sessions, upstream = [], {}
    for r in rows:
        try:
            grid_row, grid = load_grid(lk, r["session_id"])
        except Exception:  # noqa: BLE001 - a session without chips is not trained on
            continue
        if grid_row["haadf_stack_sha"] is None:
            continue
        cur = lk.current("chips", r["partition_key"])
        if cur:
            upstream[cur["materialization_id"]] = cur["data_version"]
        image = grid.untile(lk.get_array(grid_row["haadf_stack_sha"]))
        eds = lk.get_array(grid_row["eds_sums_sha"]) if grid_row["eds_sums_sha"] is not None else None
        sessions.append(SSLSession(r["session_id"], image, int(grid_row["chip_px"]), eds,
                                   float(grid_row["energy_offset_kev"] or 0.0),
                                   float(grid_row["energy_scale_kev"] or 0.01),
                                   cur["data_version"] if cur else None))
    return sessions, upstream


def loss_curve_png(curve: list[dict], title: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=90)
    steps = [c["step"] for c in curve]
    for key, label in (("loss", "total"), ("view_nce", "view NT-Xent"), ("cross_modal_nce", "HAADF-EDS InfoNCE")):
        ax.plot(steps, [c[key] for c in curve], label=label, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


@asset(
    group_name="features", code_version=SSL_ENCODER_VERSION, deps=[chips], kinds={"pytorch", "duckdb"},
    owners=["team:microscopy"], pool="gpu",
    description="Per campaign: a small CNN trained contrastively on the campaign's own HAADF chips (8 square "
                "symmetries, translation within a unit cell, Poisson noise at the session's counts, scan-line "
                "jitter, probe blur) plus a HAADF-EDS cross-modal term; checkpoint content-addressed in the "
                "lake, registry row in `encoder_models`, loss curve in the metadata.",
)
def ssl_encoder(context: AssetExecutionContext, config: SSLTrainConfig, lake: LakeResource,
                encoder: EncoderResource):
    from mmlake.encoders.ssl import train_ssl
    from mmlake.lake import Provenance

    lk = lake.lake()
    started = dt.datetime.now(dt.timezone.utc)
    device = encoder.resolved_device()
    campaigns = config.campaigns or lk.query("select distinct campaign from sessions order by 1")["campaign"].to_list()
    overrides = {"steps": config.steps or None, "batch_size": config.batch_size or None, "seed": config.seed,
                 "cross_modal_weight": config.cross_modal_weight if config.cross_modal_weight >= 0 else None}
    rows, meta, upstream, weights = [], {}, {}, []
    for campaign in campaigns:
        sessions, ups = campaign_sessions(lk, campaign)
        if not sessions:
            context.log.warning(f"campaign {campaign}: no session with HAADF chips; nothing to train")
            continue
        upstream.update(ups)
        tr = train_ssl(sessions, device=device, **overrides)
        sha = lk.put_bytes(tr.checkpoint_bytes(), ".pt")
        from mmlake.encoders.ssl import SSLEncoder

        weights_id = SSLEncoder(state_dict=tr.state_dict, params=tr.params).weights_id
        weights.append(f"ssl[{campaign}]={weights_id}")
        context.log.info(f"campaign {campaign}: ssl trained on {tr.params['n_chips']} chips in {tr.seconds:.1f} s "
                         f"on {device}; loss {tr.loss_curve[0]['loss']:.3f} -> {tr.loss_curve[-1]['loss']:.3f}")
        rows.append({"encoder": "ssl", "campaign": campaign, "checkpoint_sha": sha, "weights_id": weights_id,
                     "train_version": tr.params["train_version"], "params": json.dumps(tr.params, default=str),
                     "sessions": json.dumps(tr.sessions, default=str),
                     "chips_upstream": json.dumps(ups), "loss_curve": json.dumps(tr.loss_curve),
                     "final_loss": float(tr.loss_curve[-1]["loss"]), "n_chips": int(tr.params["n_chips"]),
                     "train_seconds": float(tr.seconds), "device": device, "trained_at": started})
        meta[f"{campaign} loss_curve"] = png_md(loss_curve_png(tr.loss_curve, f"ssl {campaign}"), "loss curve")
        meta[f"{campaign} checkpoint"] = MetadataValue.text(sha)
        meta[f"{campaign} train_seconds"] = MetadataValue.float(round(tr.seconds, 1))
    prov = Provenance(asset_key="ssl_encoder", partition_key=None, code_version=SSL_ENCODER_VERSION,
                      upstream=[{"materialization_id": k, "data_version": v} for k, v in sorted(upstream.items())],
                      run_id=context.run_id, started_at=started, device=device, weights=";".join(weights) or None,
                      parameters={"campaigns": campaigns, **{k: v for k, v in overrides.items() if v is not None}})
    frame = pl.DataFrame(rows, schema={
        "encoder": pl.Utf8, "campaign": pl.Utf8, "checkpoint_sha": pl.Utf8, "weights_id": pl.Utf8,
        "train_version": pl.Utf8, "params": pl.Utf8, "sessions": pl.Utf8, "chips_upstream": pl.Utf8,
        "loss_curve": pl.Utf8, "final_loss": pl.Float64, "n_chips": pl.Int32, "train_seconds": pl.Float64,
        "device": pl.Utf8, "trained_at": pl.Datetime("us", "UTC")})
    out = lk.replace_partition(prov, {"encoder_models": frame}, {"encoder": "ssl", "campaign": campaigns})
    meta["materialization_id"] = MetadataValue.text(out["materialization_id"])
    meta["campaigns"] = MetadataValue.md("\n".join(f"- {r['campaign']}: `{r['checkpoint_sha'][:16]}`" for r in rows)
                                         or "none")
    return MaterializeResult(metadata=meta, data_version=DataVersion(out["data_version"]))


def campaign_ssl_checkpoint(lk, session_id: str) -> bytes | None:
    """The newest ssl checkpoint trained on the campaign of `session_id`, or None."""
    try:
        frame = lk.query("select m.checkpoint_sha from encoder_models m join sessions s on s.campaign = m.campaign "
                         "where s.session_id = ? and m.encoder = 'ssl' order by m.trained_at desc limit 1",
                         [session_id])
    except Exception:  # noqa: BLE001 - a lake without the table (older schema): no model
        return None
    if not len(frame):
        return None
    return lk.find_object(frame["checkpoint_sha"][0]).read_bytes()

