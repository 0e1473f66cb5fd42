"""The crystal group through Dagster on a small slice of the shared MP-20 excerpt: every asset writes
its rows with provenance, weights are stored content-addressed, the benchmark sits beside the preprint."""

import polars as pl
import pytest
from dagster import materialize

from assets.crystal import CRYSTAL_ASSETS, CrystalDatasetResource
from assets.definitions import all_resources
from mmlake.crystal.structures import DEFAULT_DATA
from tests.shared_data import needs_shared_data

pytestmark = needs_shared_data((DEFAULT_DATA / "train.csv").exists(), f"the MP-20 excerpt at {DEFAULT_DATA}")


def test_crystal_group_materializes(tmp_path, lake):
    folder = tmp_path / "mini"
    folder.mkdir()
    for split, n in (("train", 48), ("val", 8), ("test", 16)):
        pl.read_csv(DEFAULT_DATA / f"{split}.csv").head(n).write_csv(folder / f"{split}.csv")
    resources = {**all_resources(lake.home), "crystal_dataset": CrystalDatasetResource(path=str(folder), epochs=3)}
    result = materialize(CRYSTAL_ASSETS, resources=resources, raise_on_error=True)
    assert result.success
    counts = lake.query("select count(*) as n from structures where dataset = 'mini' and skip_reason is null")
    assert counts["n"][0] == 72
    models = lake.query("select variant, weights_sha256 from crystal_models where dataset = 'mini'")
    assert set(models["variant"]) == {"xrd", "composition", "fused"}
    for sha in models["weights_sha256"]:
        assert lake.find_object(sha).stat().st_size > 0
    bench = lake.query("select * from crystal_benchmark where dataset = 'mini' and crystal_system is null "
                       "and metric = 'lengths_mae'")
    assert set(bench["variant"]) >= {"xrd", "composition", "fused"}
    assert bench.filter(pl.col("variant") == "fused")["preprint_value"][0] == pytest.approx(0.128)
    prov = lake.current("crystal_encoders", None)
    assert all(f"{v}=" in prov["weights"] for v in ("xrd", "composition", "fused"))
    refs = lake.query("select phase, hkl, d_ang from crystal_reference_spacings where phase = 'LaFeO3' and hkl = '(1 0 0)'")
    assert refs["d_ang"][0] == pytest.approx(3.93, abs=0.01)
