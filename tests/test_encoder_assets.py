"""The per-campaign `ssl_encoder` asset: checkpoint content-addressed, registry row, embeddings use it."""

import json

import numpy as np
import pytest

from assets.runner import ingest
from tests.sessions import make_tiny_session, sid

quiet = {"progress": lambda m: None, "log_level": "WARNING"}


@pytest.mark.slow  # ingests through Dagster (multiprocess steps): ~3 min on the shared 2 cores
def test_ssl_encoder_asset_trains_registers_and_embeds(tmp_path, lake, instance):
    from dagster import MultiPartitionKey, materialize

    from assets.definitions import SESSION_ASSETS, all_resources, defs
    from assets.encoders import ssl_encoder
    from assets.features import haadf_embeddings
    from mmlake.encoders.ssl import SSLEncoder
    from resources.encoder import EncoderResource

    assert defs.get_assets_def("ssl_encoder").op.pool == "gpu"
    a = make_tiny_session(tmp_path / "a", sample="alpha", haadf_shape=(48, 48), eds_shape=(48, 48))
    assert ingest([a], lake, instance, **quiet)[0].ok
    res = materialize([ssl_encoder], instance=instance, resources=all_resources(lake.home),
                      run_config={"ops": {"ssl_encoder": {"config": {"steps": 3, "batch_size": 8}}}})
    assert res.success
    row = lake.query("select * from encoder_models").to_dicts()
    assert len(row) == 1 and row[0]["encoder"] == "ssl" and row[0]["campaign"] == "test"
    r = row[0]
    assert len(json.loads(r["loss_curve"])) == 3 and np.isfinite(r["final_loss"])
    assert json.loads(r["params"])["steps"] == 3 and r["n_chips"] == 36
    assert json.loads(r["sessions"])[0]["session_id"] == sid("alpha")
    assert json.loads(r["chips_upstream"])  # the chips data versions it saw
    data = lake.find_object(r["checkpoint_sha"]).read_bytes()
    import hashlib

    assert hashlib.sha256(data).hexdigest() == r["checkpoint_sha"]
    assert SSLEncoder(checkpoint=data).weights_id == r["weights_id"]
    meta = res.asset_materializations_for_node("ssl_encoder")[0].metadata
    assert "test loss_curve" in meta
    # haadf_embeddings embeds the campaign's sessions with it
    resources = {**all_resources(lake.home), "encoder": EncoderResource(haadf_encoders=["fft", "ssl"], device="cpu")}
    out = materialize([haadf_embeddings], instance=instance, resources=resources,
                      partition_key=MultiPartitionKey({"sample": "test.alpha", "dose": "0"}),
                      selection=[haadf_embeddings])
    assert out.success
    fs = lake.query("select feature_set, status, weights from feature_sets where modality = 'haadf' "
                    "order by feature_set").to_dicts()
    assert [(f["feature_set"], f["status"]) for f in fs] == [("fft", "ok"), ("ssl", "ok")]
    assert fs[1]["weights"] == r["weights_id"]
    n = lake.query("select count(*) as n from haadf_embeddings where encoder = 'ssl'")["n"][0]
    assert n == 36
    del SESSION_ASSETS
