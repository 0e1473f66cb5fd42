"""One benchmark for all HAADF encoders, in one run, with the fft baseline beside them.

    .venv/bin/python bench/encoders.py [--device cpu|cuda|auto] [--quick] [--json OUT]
    .venv/bin/python bench/encoders.py --vgg-detail [--quick]   # VGG16 / sgemm / CL throughput detail

Table columns, per encoder (fft, effnet, ssl; vgg16 when its ImageNet weights are installed):

- ``chips/s cpu`` (and ``chips/s cuda`` when a GPU is usable): ``encode`` throughput on the
  defective@0.1 demo session (2,601 10-px chips, context windows included), best of 2 (wall clock;
  the machine may be shared: the CPU-time figure ``cpu-s`` is printed too);
- ``atomagined mean`` / ``worst``: few-shot top-1 of the atomagined protocol
  (:mod:`mmlake.encoders.benchmark`: 8 classes, 5 support chips from the clean image, 16 conditions,
  5 support draws), mean over the conditions and the worst condition;
- ``demo AMI``: HAADF-alone few-shot AMI against truth on each demo session (min .. max and all four).

ssl is trained twice with the same code and parameters: on the demo campaign's own chips (with the
cross-modal EDS term), and on the atomagined images' chips (all conditions, no labels, no EDS); the
training time (wall and CPU) is printed. Then the segmentation ensembles on the demo sessions, with
the HAADF features segmentation's ``auto`` rule picks: AMI against truth of haadf, eds, ensemble and
ensemble_auto per method.
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


def vgg_detail(args) -> int:

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


def _fmt(x):
    return "-" if x is None else f"{x:.3f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions / steps (smoke run)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--vgg-detail", action="store_true", help="the VGG16 / sgemm / Cliff-Lorimer throughput detail")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    if args.vgg_detail:
        return vgg_detail(args)

    import json

    import torch

    from mmlake import synth
    from mmlake.encoders import auto_haadf_encoder, benchmark as B, get_encoder
    from mmlake.encoders.device import resolve_device
    from mmlake.encoders.ssl import SSLEncoder, SSLSession, train_ssl
    from mmlake.encoders.vgg16 import WeightsUnavailableError

    device = resolve_device(args.device)
    # $MMLAKE_BENCH_THREADS: on a machine shared with other jobs, 1 thread can be much faster than 2
    n_threads = int(os.environ.get("MMLAKE_BENCH_THREADS", cores()))
    torch.set_num_threads(n_threads)
    print(f"torch {torch.__version__}, threads {n_threads}, device {device}", flush=True)
    t0 = time.perf_counter()
    demo = B.demo_sessions(with_eds=True)
    print(f"demo sessions built in {time.perf_counter() - t0:.1f} s", flush=True)
    have_atom = (B.default_atomagined_root() / "retrieval" / "targets" / "png").is_dir()
    task = B.load_atomagined() if have_atom else None
    if task is None:
        print(f"atomagined data absent ({B.default_atomagined_root()}): those columns are skipped")

    encoders = {"fft": get_encoder("fft"), "effnet": get_encoder("effnet")}
    try:
        encoders["vgg16"] = get_encoder("vgg16")
    except WeightsUnavailableError:
        print("vgg16: ImageNet weights not installed on this machine -> not in the table")
    ssl_kw = {"steps": 20} if args.quick else {}
    train_info = {}
    # ssl on the demo campaign's own chips (+ EDS)
    sessions = [SSLSession(s.session_id, s.image, spec.chip_px, s.eds, spec.energy_offset_kev, spec.energy_scale_kev)
                for s, spec in zip(demo, synth.DEMO_CAMPAIGN)]
    w0, c0 = time.perf_counter(), time.process_time()
    tr = train_ssl(sessions, device=device, **ssl_kw)
    train_info["demo"] = {"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0,
                          "final_loss": tr.loss_curve[-1]["loss"], "first_loss": tr.loss_curve[0]["loss"]}
    print(f"ssl trained on the demo campaign ({tr.params['n_chips']} chips, {tr.params['steps']} steps x "
          f"{tr.params['batch_size']}): {train_info['demo']['wall_s']:.1f} s wall, {train_info['demo']['cpu_s']:.1f} s "
          f"CPU; loss {train_info['demo']['first_loss']:.3f} -> {train_info['demo']['final_loss']:.3f}", flush=True)
    encoders["ssl"] = SSLEncoder(state_dict=tr.state_dict, params=tr.params)
    ssl_atom = None
    if task is not None:
        atom_sessions = [SSLSession(f"{c}-{cond}", img, B.CHIP_PX) for (c, cond), img in task.images.items()]
        w0, c0 = time.perf_counter(), time.process_time()
        tra = train_ssl(atom_sessions, device=device, **ssl_kw)
        train_info["atomagined"] = {"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0}
        print(f"ssl trained on the atomagined chips (no labels): {train_info['atomagined']['wall_s']:.1f} s wall",
              flush=True)
        ssl_atom = SSLEncoder(state_dict=tra.state_dict, params=tra.params)

    rows, feats_demo = {}, {}
    big = demo[3]
    for name, enc in encoders.items():
        row = {}
        for dev in ["cpu"] + (["cuda"] if device.startswith("cuda") else []):
            best, cpu = None, None
            for _ in range(1 if args.quick else 2):
                w, c = time.perf_counter(), time.process_time()
                enc.encode(big.chips, device=dev, image=big.image)
                if dev != "cpu":
                    torch.cuda.synchronize()
                w, c = time.perf_counter() - w, time.process_time() - c
                best = w if best is None else min(best, w)
                cpu = c if cpu is None else min(cpu, c)
            row[f"chips_per_s_{dev}"] = len(big.chips) / best
            row[f"cpu_s_{dev}"] = cpu
        ami, feats_demo[name] = {}, {}
        for s in demo:
            x = enc.encode(s.chips, device=device, image=s.image)
            feats_demo[name][s.session_id] = x
            ami.update(B.demo_haadf_ami(lambda c, im, x=x: x, [s]))
        row["demo_ami"] = ami
        atom_enc = ssl_atom if name == "ssl" else enc
        if task is not None:
            r = B.atomagined_fewshot(lambda c, im: atom_enc.encode(c, device=device, image=im), task)
            row.update({"atom_mean": r["mean"], "atom_worst": r["worst"], "atom_worst_condition": r["worst_condition"],
                        "atom_top1": r["top1"]})
        rows[name] = row
        print(f"  {name} done", flush=True)

    print()
    sids = [s.session_id for s in demo]
    hdr = (f"{'encoder':8} {'chips/s cpu':>11} {'cpu-s':>6} " + (f"{'chips/s cuda':>12} " if device != 'cpu' else "")
           + f"{'atom mean':>9} {'atom worst':>10} {'(condition)':>14} | demo AMI " + " ".join(f"{s:>13}" for s in sids))
    print(hdr)
    print("-" * len(hdr))
    for name, r in rows.items():
        line = f"{name:8} {r['chips_per_s_cpu']:11.1f} {r['cpu_s_cpu']:6.1f} "
        if device != "cpu":
            line += f"{r['chips_per_s_cuda']:12.1f} "
        line += (f"{_fmt(r.get('atom_mean')):>9} {_fmt(r.get('atom_worst')):>10} {r.get('atom_worst_condition', '-')[-12:]:>14}"
                 f" | {'':8} " + " ".join(f"{r['demo_ami'][s]:13.3f}" for s in sids))
        print(line)
    print("(ssl's atomagined columns: ssl trained on the atomagined chips themselves; its demo columns and "
          "chips/s: ssl trained on the demo campaign)")
    if task is not None:
        print("\natomagined top-1 per condition:")
        conds = list(B.CONDITIONS)
        print(f"{'encoder':8} " + " ".join(f"{c.split('-')[-1]:>6}" for c in conds))
        for name, r in rows.items():
            print(f"{name:8} " + " ".join(f"{r['atom_top1'][c]:6.3f}" for c in conds))

    # ensembles on the demo sessions with the auto HAADF encoder
    from mmlake.eds import quantify_chips
    from mmlake.features import fill_missing
    from mmlake.segment import ami as ami_score
    from mmlake.segment.session import METHODS, segment_session

    auto = auto_haadf_encoder(list(rows))
    print(f"\nensembles on the demo sessions, HAADF = {auto} (segmentation's auto rule), EDS = Cliff-Lorimer at.%:")
    ens = {}
    print(f"{'session':14} {'method':13} {'haadf':>6} {'eds':>6} {'ensemble':>8} {'ens_auto':>8} "
          f"{'best single':>11} {'auto - best':>11}  chosen haadf weight")
    for s, spec in zip(demo, synth.DEMO_CAMPAIGN):
        res = quantify_chips(s.eds, spec.energy_offset_kev, spec.energy_scale_kev, spec.elements,
                             grid=(len(s.chips) // s.n_cols, s.n_cols), beam_energy_kev=spec.beam_kv,
                             energy_resolution_mnka_ev=spec.energy_resolution_mnka_ev, kfactors=spec.kfactors)
        eds, _ = fill_missing(res.atomic_percent.astype(np.float64))
        feats = {"haadf": feats_demo[auto][s.session_id], "eds": eds}
        for method in METHODS:
            out = segment_session(method, feats, {"modality_weights": {"haadf": 0.5, "eds": 0.5}}, s.support)
            a = {r.modality: ami_score(r.labels, s.truth) for r in out}
            wsel = next((r.params.get("weight_selection", {}).get("chosen") for r in out if r.modality == "ensemble_auto"), None)
            best = max(a["haadf"], a["eds"])
            ens[f"{s.session_id} {method}"] = {**a, "haadf_weight": wsel}
            print(f"{s.session_id:14} {method:13} {a['haadf']:6.3f} {a['eds']:6.3f} {a['ensemble']:8.3f} "
                  f"{a.get('ensemble_auto', float('nan')):8.3f} {best:11.3f} {a.get('ensemble_auto', float('nan')) - best:+11.3f}  {wsel}",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"encoders": rows, "ssl_training": train_info, "ensembles": ens, "auto_haadf": auto},
                      f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
