"""The `segmentation` multi-asset: three assets computed in one step. Selecting one method runs it
alone; a method that fails does not stop the others from being written; each method keeps its own
materialization (provenance row) and its own rows."""

from dagster import AssetKey, MultiPartitionKey, materialize

import assets.segmentation as seg
from assets.definitions import SESSION_ASSETS, all_resources
from assets.runner import ingest
from tests.sessions import make_tiny_session

quiet = {"progress": lambda m: None, "log_level": "WARNING"}
KEY = MultiPartitionKey({"sample": "test.segstep", "dose": "0"})


def _current(lake):
    return dict(lake.query("select asset_key, materialization_id from materializations where is_current "
                           "and asset_key like 'segmentation_%' order by asset_key").rows())


def test_one_method_alone_and_a_failing_method_leaves_the_others_written(tmp_path, lake, instance, monkeypatch):
    folder = make_tiny_session(tmp_path / "s", sample="segstep", dose_dpa=0)
    assert ingest([folder], lake, instance, **quiet)[0].ok
    before = _current(lake)
    assert set(before) == {"segmentation_louvain", "segmentation_agglomerative", "segmentation_fewshot"}
    runs = lake.query("select distinct method from segment_runs")["method"].to_list()
    assert set(runs) == {"louvain", "agglomerative"}  # the tiny session has no support chips: no few-shot labels

    # one method selected: only its step output, the other two untouched
    res = materialize(SESSION_ASSETS, selection=[AssetKey("segmentation_louvain")], partition_key=KEY,
                      instance=instance, resources=all_resources(lake.home),
                      run_config={"ops": {"segmentation": {"config": {"threshold": "median"}}}})
    assert res.success
    mats = [e.asset_key.to_user_string() for e in res.get_asset_materialization_events()]
    assert mats == ["segmentation_louvain"]
    after = _current(lake)
    assert after["segmentation_louvain"] != before["segmentation_louvain"]
    assert {k: v for k, v in after.items() if k != "segmentation_louvain"} == \
           {k: v for k, v in before.items() if k != "segmentation_louvain"}

    # Ward fails: Louvain and few-shot are still written (median -> mode: both change), the step fails
    real = seg.segment_session

    def failing(method, *a, **k):
        if method == "agglomerative":
            raise ValueError("Ward could not run")
        return real(method, *a, **k)

    monkeypatch.setattr(seg, "segment_session", failing)
    res = materialize(SESSION_ASSETS, selection=[AssetKey(f"segmentation_{m}") for m in seg.METHODS],
                      partition_key=KEY, instance=instance, resources=all_resources(lake.home), raise_on_error=False)
    assert not res.success
    failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE")
    assert "agglomerative: Ward could not run" in str(failure.event_specific_data.error)
    mats = {e.asset_key.to_user_string() for e in res.get_asset_materialization_events()}
    assert mats == {"segmentation_louvain", "segmentation_fewshot"}
    final = _current(lake)
    assert final["segmentation_agglomerative"] == before["segmentation_agglomerative"]  # its rows kept
    assert final["segmentation_louvain"] != after["segmentation_louvain"]
    assert lake.query("select count(*) n from segment_labels where method = 'agglomerative'")["n"][0] > 0
