"""Chip encoders: VGG16 (weights handling, determinism, batching, devices) and the FFT descriptor
(crystalline vs amorphous on synthetic sessions)."""

import numpy as np
import pytest
import torch

from mmlake import synth
from mmlake.chips import ChipGrid, majority_labels
from mmlake.encoders import available_encoders, get_encoder
from mmlake.encoders.device import resolve_device
from mmlake.encoders.vgg16 import WeightsUnavailableError, state_dict_sha256

CRYSTALLINE_REGIONS = {"substrate", "film_ordered", "film_defect"}


@pytest.fixture(scope="module")
def chips():
    rng = np.random.default_rng(0)
    c = rng.random((6, 15, 15), dtype=np.float32) * 300
    c[3] = 7.0  # constant chip: min-max scaling must not divide by zero
    return c


@pytest.fixture(scope="module")
def vgg_random():
    return get_encoder("vgg16", weights="random", seed=0)


def test_registry():
    assert {"vgg16", "fft"} <= set(available_encoders())
    with pytest.raises(ValueError, match="unknown encoder 'nope'.*vgg16"):
        get_encoder("nope")


def test_vgg16_random_shapes_determinism_provenance(chips, vgg_random):
    out = vgg_random.encode(chips, batch_size=4, device="cpu")
    assert out.shape == (6, 512) and out.dtype == np.float32
    assert np.all(np.isfinite(out)) and (out != 0).any(axis=1).all()
    again = get_encoder("vgg16", weights="random", seed=0).encode(chips, batch_size=4)
    np.testing.assert_array_equal(out, again)
    other = get_encoder("vgg16", weights="random", seed=1).encode(chips, batch_size=4)
    assert not np.allclose(out, other)
    p = vgg_random.provenance()
    assert p["encoder"] == "vgg16" and p["weights_id"] == "random:0" and p["dim"] == 512
    assert p["encoder_version"] == vgg_random.version
    # chip content matters, and scaling a chip does not (per-chip min-max)
    np.testing.assert_allclose(vgg_random.encode(chips[:2] * 3 + 5), out[:2], rtol=1e-4, atol=1e-5)
    assert get_encoder("vgg16", weights="random", seed=0).encode(np.zeros((0, 15, 15), np.float32)).shape == (0, 512)


def test_vgg16_batch_size_invariant(chips, vgg_random):
    ref = vgg_random.encode(chips, batch_size=64)
    for bs in (1, 4):
        np.testing.assert_allclose(vgg_random.encode(chips, batch_size=bs), ref, atol=1e-5, rtol=1e-4)


def test_vgg16_state_dict_file_round_trip(tmp_path, chips, vgg_random):
    sd = vgg_random._features.state_dict()
    # as torchvision.models.vgg16().state_dict() stores it: features.* plus (ignored) classifier.*
    full = {f"features.{k}": v.clone() for k, v in sd.items()}
    full["classifier.6.weight"] = torch.zeros(1000, 4096)
    path = tmp_path / "vgg16.pth"
    torch.save(full, path)
    enc = get_encoder("vgg16", weights=str(path))
    assert enc.weights_id == state_dict_sha256(sd) and enc.weights_id.startswith("sha256:")
    np.testing.assert_array_equal(enc.encode(chips), vgg_random.encode(chips))
    # the features module's own state dict works too, with the same id
    path2 = tmp_path / "features.pth"
    torch.save(sd, path2)
    assert get_encoder("vgg16", weights=path2).weights_id == enc.weights_id


def test_vgg16_rejects_non_vgg16_state_dict(tmp_path):
    from torchvision.models.vgg import make_layers

    vgg11 = make_layers([64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"])
    p = tmp_path / "vgg11.pth"
    torch.save({f"features.{k}": v for k, v in vgg11.state_dict().items()}, p)
    with pytest.raises(ValueError, match="not a torchvision VGG16 state dict.*(missing|wrong shapes)"):
        get_encoder("vgg16", weights=str(p))
    p2 = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, p2)
    with pytest.raises(ValueError, match="unexpected keys.*conv1.weight"):
        get_encoder("vgg16", weights=str(p2))
    p3 = tmp_path / "junk.pth"
    p3.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        get_encoder("vgg16", weights=str(p3))
    with pytest.raises(ValueError, match="no such file"):
        get_encoder("vgg16", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="explicit integer seed"):
        get_encoder("vgg16", weights="random")


def test_vgg16_imagenet_unavailable_says_how_to_provide(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(WeightsUnavailableError) as e:
        get_encoder("vgg16", weights="imagenet")
    msg = str(e.value)
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / "vgg16-397923af.pth") in msg
    assert "TORCH_HOME" in msg and "weights: /path/to/vgg16.pth" in msg
    assert not (tmp_path / "torch_home").exists()  # nothing was downloaded


def test_vgg16_imagenet_loaded_from_torch_home_cache(tmp_path, monkeypatch, chips, vgg_random):
    # a stand-in checkpoint where torchvision's loader keeps the real one: loaded, never downloaded
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ckpt = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in vgg_random._features.state_dict().items()}, ckpt)
    enc = get_encoder("vgg16", weights="imagenet")
    assert enc.weights_id == state_dict_sha256(vgg_random._features.state_dict())
    assert enc.config["weights"] == "imagenet"
    np.testing.assert_array_equal(enc.encode(chips), vgg_random.encode(chips))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_requested_without_cuda(chips, vgg_random):
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        vgg_random.encode(chips, device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        get_encoder("fft").encode(chips, device="cuda")
    assert resolve_device("auto") == "cpu"


def test_device_and_precision_arguments(chips):
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("gpu")
    enc = get_encoder("vgg16", weights="random", seed=0, precision="bf16")
    with pytest.raises(ValueError, match="only supported on CUDA"):
        enc.encode(chips, device="cpu")
    with pytest.raises(ValueError, match="precision"):
        get_encoder("vgg16", weights="random", seed=0, precision="int8")
    with pytest.raises(ValueError, match="batch_size"):
        get_encoder("fft").encode(chips, batch_size=0)
    with pytest.raises(ValueError, match=r"\(n, p, p\)"):
        get_encoder("fft").encode(chips[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_vgg16_cuda_matches_cpu(chips, vgg_random):
    cpu = vgg_random.encode(chips, device="cpu")
    np.testing.assert_allclose(vgg_random.encode(chips, device="cuda"), cpu, atol=1e-3, rtol=1e-3)
    bf16 = get_encoder("vgg16", weights="random", seed=0, precision="bf16").encode(chips, device="cuda")
    np.testing.assert_allclose(bf16, cpu, atol=0.05 * np.abs(cpu).max())


# ---------------------------------------------------------------------------------------------
# FFT descriptor


@pytest.mark.parametrize("spec", synth.DEMO_CAMPAIGN, ids=lambda s: s.session_id)
def test_fft_crystallinity_separates_crystalline_from_amorphous(spec):
    geom = synth.make_geometry(spec)
    haadf = synth.make_haadf(spec, geom)
    grid = ChipGrid.fit(haadf.shape, spec.chip_px)
    chips = grid.tiles(haadf)
    region = majority_labels(geom.regions, grid)
    crystalline = np.isin(region, [synth.REGION_NAMES.index(r) for r in CRYSTALLINE_REGIONS])
    enc = get_encoder("fft")
    feats = enc.encode(chips, image=haadf)
    assert feats.shape == (grid.n_chips, enc.dim) and feats.dtype == np.float32
    assert len(enc.feature_names) == enc.dim
    predicted = enc.is_crystalline(feats)  # the encoder's own threshold: crystallinity > 0
    accuracy = float((predicted == crystalline).mean())
    assert accuracy >= 0.95, (spec.session_id, accuracy)
    # period of substrate chips = the SrTiO3 lattice constant (coarse: one 48 px window per chip)
    sub = region == synth.REGION_NAMES.index("substrate")
    period_nm = np.median(feats[sub, enc.period_index]) * spec.pixel_size_nm
    assert abs(period_nm - synth.A_STO) < 0.01, period_nm
    assert np.all(feats[~predicted, enc.period_index] >= 0)


def test_fft_grid_is_checked_against_image():
    spec = synth.DEMO_CAMPAIGN[0]
    haadf = synth.make_haadf(spec)[:240, :240]
    grid = ChipGrid.fit(haadf.shape, 15)
    chips = grid.tiles(haadf)
    enc = get_encoder("fft", window_px=32, n_radial=4, n_angular=4)
    assert enc.dim == 4 * 4 + 3
    with pytest.raises(ValueError, match="chips were given"):
        enc.encode(chips[:-1], image=haadf)
    transposed = chips.reshape(16, 16, 15, 15).swapaxes(0, 1).reshape(-1, 15, 15)
    with pytest.raises(ValueError, match="does not equal image tile"):
        enc.encode(transposed, image=haadf)
    # without the image, each chip is its own window
    alone = enc.encode(chips)
    assert alone.shape == (256, enc.dim) and np.all(np.isfinite(alone))
    # deterministic, batch-size invariant
    np.testing.assert_array_equal(enc.encode(chips, batch_size=7, image=haadf), enc.encode(chips, image=haadf))
