"""Encoder and EDS-quantification throughput on this machine, against a baseline measured in the
same run (torch sgemm).

    .venv/bin/python bench/encoders.py [--quick] [--device cpu|cuda|auto]

Prints (wall-clock figures are best-of-N; "dedicated cores" figures use the process CPU time
divided by the thread count, which is what a call costs on cores of its own when the machine is
shared with other jobs -- ratios are always taken between figures of the same kind):
- torch fp32 matmul (2048x2048, sgemm) GFLOP/s with threads = available cores: the machine's
  practical peak for dense fp32 work through the same library;
- VGG16 ``features`` at 32x32 input: FLOPs per chip (counted from the model's conv layers), then
  for batch sizes 1, 32, 256: chips/s through ``VGG16Encoder.encode`` (preprocessing included) and
  the bare forward pass, the implied GFLOP/s and its ratio to sgemm (goal >= 0.8), with the default
  memory format and with channels_last;
- the FFT descriptor's chips/s (48 px windows);
- Cliff-Lorimer quantification chips/s on a 51x51 (2601-chip) grid (the preprint's largest).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def measure(fn, reps: int, threads: int, cuda: bool = False) -> tuple[float, float]:
    """(best wall seconds, median CPU-seconds / threads) of ``fn`` over ``reps`` calls after one
    warm-up. On a machine shared with other jobs the wall time of a call is inflated by waiting for
    a core; the process CPU time divided by the thread count is what the call costs on cores of its
    own. Both are reported; ratios are taken between figures of the same kind."""
    fn()
    walls, cpus = [], []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        if cuda:
            import torch

            torch.cuda.synchronize()
        walls.append(time.perf_counter() - w0)
        cpus.append((time.process_time() - c0) / threads)
    return min(walls), float(np.median(cpus))


def vgg16_flops_per_chip(features, px: int = 32) -> float:
    """FLOPs (2 per multiply-add) of the conv layers for one px x px chip, counted with hooks."""
    import torch

    macs = []

    def hook(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        macs.append(out.numel() / out.shape[0] * k)

    hs = [m.register_forward_hook(hook) for m in features.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        features(torch.zeros(1, 3, px, px))
    for h in hs:
        h.remove()
    return 2.0 * sum(macs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    import torch

    from mmlake.encoders import get_encoder
    from mmlake.encoders.device import resolve_device

    device = resolve_device(args.device)
    n_threads = cores()
    torch.set_num_threads(n_threads)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()} "
          f"(available cores {n_threads}), oneDNN {torch.backends.mkldnn.is_available()}")
    cuda = device != "cpu"
    reps = 3 if args.quick else 8
    n = 2048
    ma, mb = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    w, c = measure(lambda: ma @ mb, reps * 2, n_threads, cuda)
    base_w, base_c = 2 * n**3 / w / 1e9, 2 * n**3 / c / 1e9
    print(f"sgemm 2048x2048 fp32: {base_w:7.1f} GFLOP/s wall (best), {base_c:7.1f} GFLOP/s on dedicated "
          "cores (CPU time)")

    enc = get_encoder("vgg16", weights="random", seed=0)
    flops = vgg16_flops_per_chip(enc._features)
    print(f"VGG16 features at 32x32: {flops / 1e9:.4f} GFLOP per chip "
          f"({flops / 2e6:.1f} M multiply-adds; the brief's 0.626 GFLOP "
          f"{'matches' if abs(flops / 1e9 - 0.626) < 0.002 else 'DIFFERS'})")
    rng = np.random.default_rng(0)
    variants = [("contiguous", False, True), ("channels_last", True, True)]
    if not cuda:
        variants.append(("no-oneDNN", False, False))
    print("columns: chips/s and GFLOP/s by best wall time | GFLOP/s on dedicated cores (CPU time) and "
          "its ratio to sgemm's; encode = VGG16Encoder.encode (preprocessing included), fwd = features only")
    print(f"{'batch':>5} {'variant':>14} | {'encode/s':>9} {'GF/s':>6} {'ratio':>5} {'GF/s*':>6} {'ratio*':>6} | "
          f"{'fwd/s':>9} {'GF/s':>6} {'ratio':>5} {'GF/s*':>6} {'ratio*':>6}")
    for label, cl, dnn in variants:
        e = get_encoder("vgg16", weights="random", seed=0, channels_last=cl)
        model = e._model_on(device)
        for bs in (1, 32, 256):
            nchips = {1: 8, 32: 64, 256: 256}[bs]
            chips = rng.random((nchips, 15, 15), dtype=np.float32)
            x = e.preprocess(torch.from_numpy(chips[:bs]).to(device))
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)

            def fwd():
                with torch.inference_mode():
                    model(x)

            with torch.backends.mkldnn.flags(enabled=dnn):
                we, ce = measure(lambda: e.encode(chips, batch_size=bs, device=device), reps, n_threads, cuda)
                wf, cf = measure(fwd, reps, n_threads, cuda)
            cells = []
            for t_w, t_c, nn in ((we, ce, nchips), (wf, cf, bs)):
                gw, gc = nn * flops / t_w / 1e9, nn * flops / t_c / 1e9
                cells.append(f"{nn / t_w:9.1f} {gw:6.1f} {gw / base_w:5.2f} {gc:6.1f} {gc / base_c:6.2f}")
            print(f"{bs:5d} {label:>14} | {cells[0]} | {cells[1]}")

    # FFT descriptor
    from mmlake import synth
    from mmlake.chips import ChipGrid

    spec = synth.DEMO_CAMPAIGN[3]  # 512 px, 10 px chips: 2601 chips
    haadf = synth.make_haadf(spec)
    grid = ChipGrid.fit(haadf.shape, spec.chip_px)
    chips = grid.tiles(haadf)
    fft = get_encoder("fft")
    w, c = measure(lambda: fft.encode(chips, image=haadf), 1 if args.quick else 3, n_threads)
    print(f"fft descriptor (48 px windows), {grid.n_chips} chips: {grid.n_chips / w:8.0f} chips/s wall, "
          f"{grid.n_chips / c:8.0f} chips/s on dedicated cores")

    # Cliff-Lorimer on a 51x51 grid
    from mmlake.eds import quantify_chips

    small = synth.SessionSpec("bench", 0.0, chip_px=10, image_px=32, pixel_size_nm=0.05, cap_element="Pt")
    pdf = synth.region_spectrum(small, "film_ordered")[0]
    sums = rng.poisson(pdf * 100 * 40, (2601, len(pdf))).astype(np.float32)
    for method in ("fit", "windows"):
        w, c = measure(lambda: quantify_chips(sums, 0.0, 0.01, small.elements, grid=(51, 51),
                                              kfactors=small.kfactors, intensity_method=method),
                       1 if args.quick else 3, n_threads)
        print(f"Cliff-Lorimer ({method:7s}), 2601 chips x {sums.shape[1]} channels, 12 elements: "
              f"{2601 / w:6.0f} chips/s wall ({w:.2f} s), {2601 / c:6.0f} chips/s on dedicated cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
