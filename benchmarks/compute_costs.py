"""Compute costs of φ (DeepSTORM) and Ψ (the diffusion U-Net) for each training profile:
FLOPs per training step and per sampling evaluation (torch.utils.flop_counter), measured CPU
(and CUDA, when present) seconds, and estimated T4 / A100 / H100 / H200 times from the vendors'
peak dense throughput at a stated efficiency. Estimates are labelled "kind": "estimate" and stay
estimates until a GPU run measures them ("kind": "measured").

FlopCounterMode counts matrix products, convolutions and attention (forward and backward), not
elementwise ops (norms, activations, the optimizer), so a FLOP count is a lower bound on work.
Times are the network only: the on-the-fly simulation of training batches is not included.

    python benchmarks/compute_costs.py [--threads 2] [--efficiency 0.3] [--budget-minutes 5]
    python benchmarks/compute_costs.py --device cuda --out /tmp/compute_costs_gpu.json
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402

from ualm.diffusion import DiffusionLoss, predict, schedule, to_net  # noqa: E402
from ualm.models.deepstorm import DeepSTORM, deepstorm_loss  # noqa: E402
from ualm.models.unet import UNet  # noqa: E402
from ualm.profiles import deepstorm_settings, diffusion_settings  # noqa: E402

# Peak dense throughput in TFLOP/s (no structured sparsity). "amp": the mixed-precision tensor
# cores ualm.train uses (bf16 where supported, else fp16). An fp32 model's convolutions run on
# TF32 tensor cores by default where there are some (cudnn.allow_tf32), so its estimate uses tf32.
GPUS = {"T4": {"amp": 65.0, "amp_dtype": "fp16", "tf32": None, "fp32": 8.1},
        "A100-SXM": {"amp": 312.0, "amp_dtype": "bf16", "tf32": 156.0, "fp32": 19.5},
        "H100-SXM": {"amp": 989.0, "amp_dtype": "bf16", "tf32": 494.0, "fp32": 67.0},
        "H200": {"amp": 989.0, "amp_dtype": "bf16", "tf32": 494.0, "fp32": 67.0}}
GPU_SOURCE = ("NVIDIA datasheets (dense, i.e. half the 'with sparsity' figures): Tesla T4 "
              "(65 fp16 mixed, 8.1 fp32), A100 SXM (312 bf16, 156 tf32, 19.5 fp32), H100 SXM "
              "(989 bf16, 494 tf32, 67 fp32); H200 SXM has the H100 SXM's compute")


def profiles(settings) -> list[str]:
    """'quick' and 'full', and 'gpu' when ualm.profiles defines it."""
    try:
        return ["quick", "full", "gpu"] if settings("gpu") else ["quick", "full"]
    except ValueError:
        return ["quick", "full"]


def network(name: str, profile: str) -> dict:
    """The model, its loss, its TrainConfig, and makers of a synthetic training batch and of one
    sampling evaluation (φ: a forward of frames; Ψ: `predict` as the samplers call it)."""
    if name == "phi":
        s = deepstorm_settings(profile)
        model = DeepSTORM(s["model"])

        def batch(b, dev):  # raw frames in ADU and peak-normalised KDEs
            return {"x": 100 + 200 * torch.rand(b, 20, 20, device=dev), "y": torch.rand(b, 80, 80, device=dev)}

        def evaluate(m, b, dev):
            x = batch(b, dev)["x"]
            return lambda: m(x)
        return dict(model=model, loss=deepstorm_loss, train=s["train"], batch=batch, evaluate=evaluate,
                    config=s["model"].to_dict())
    s = diffusion_settings(profile)
    cfg, sched = s["model"], schedule(s["model"].schedule)
    model = UNet(cfg)

    def batch(b, dev):  # the keys of DiffusionSource.batch
        return {"y": torch.rand(b, 80, 80, device=dev),
                "cond": to_net(torch.rand(b, len(cfg.cond), 80, 80, device=dev)),
                "t": torch.randint(1, sched.T + 1, (b,), device=dev), "eps": torch.randn(b, 80, 80, device=dev)}

    def evaluate(m, b, dev):
        d = batch(b, dev)
        return lambda: predict(m, sched, d["eps"], 50, d["cond"], clip=True)
    return dict(model=model, loss=DiffusionLoss(sched), train=s["train"], batch=batch, evaluate=evaluate,
                config=cfg.to_dict())


def train_step(model, loss_fn, batch, amp_dtype=None):
    """One optimizer step as ualm.train._step takes it (autocast, GradScaler for fp16, grad clip)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    dev = next(model.parameters()).device.type

    def step():
        with torch.autocast(dev, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = loss_fn(model, batch)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
    return step


def count(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def train_flops(net, b) -> int:
    """FLOPs of forward + backward of the loss at batch b (CPU, train mode)."""
    model, batch = net["model"].train(), net["batch"](b, "cpu")
    return count(lambda: net["loss"](model, batch).backward())


def measure(net, dev, eval_batch, slow) -> dict:
    """Seconds per training step (profile batch) and per sampling evaluation per chain (at
    eval_batch chains per call, no_grad), in fp32 and, on CUDA, under autocast. Errors (e.g.
    out of memory on a small GPU) are recorded, not raised, so the other numbers survive."""
    dev = torch.device(dev)
    amp = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if dev.type == "cuda" else None
    out = {"kind": "measured", "eval_batch": eval_batch, "train": {}, "eval": {}}
    if amp:
        out.update(device_name=torch.cuda.get_device_name(dev), amp_dtype=str(amp).replace("torch.", ""))
    # one timed call after a warm-up for the slow networks (minutes per step on a 2-core CPU)
    timed = (lambda f: common.best_time(f, dev, 1, 0.0)) if slow else (lambda f: common.best_time(f, dev, 3, 0.3))
    for label, dtype in ([("amp", amp)] if amp else []) + [("fp32", None)]:
        model = fn = None
        try:
            model = copy.deepcopy(net["model"]).to(dev).train()
            batch = net["batch"](net["train"].batch_size, dev)
            out["train"][label] = timed(train_step(model, net["loss"], batch, dtype))
            fn = net["evaluate"](model.eval(), eval_batch, dev)
            with torch.no_grad(), torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                out["eval"][label] = timed(fn) / eval_batch
        except Exception as err:
            out.setdefault("errors", {})[label] = f"{type(err).__name__}: {str(err)[:300]}"
        model = fn = None
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return out


def estimates(t_flops, s_flops, steps, efficiency, budget_minutes) -> dict:
    """Seconds = FLOPs / (peak × efficiency), per GPU and precision path."""
    out = {}
    for gpu, peak in GPUS.items():
        for path, tflops in (("amp", peak["amp"]), ("fp32", peak["tf32"] or peak["fp32"])):
            rate = tflops * 1e12 * efficiency
            t = t_flops / rate
            out[f"{gpu}/{path}"] = {"kind": "estimate", "peak_tflops": tflops,
                                    "est_seconds_per_train_step": t,
                                    "est_seconds_per_sample_eval": s_flops / rate,
                                    "est_full_run_minutes": steps * t / 60,
                                    "est_steps_in_budget": int(budget_minutes * 60 / t)}
    return out


def costs(name, profile, threads=2, efficiency=0.3, budget_minutes=5.0, device=None,
          measure_cpu=True) -> dict:
    """One row: FLOPs, parameters, measured seconds (CPU; CUDA when `device` is cuda) and GPU
    estimates of network `name` ('phi' or 'psi') in `profile`."""
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    net = network(name, profile)
    tc = net["train"]
    # count at batch 1 and 2 (no op mixes samples, so FLOPs are linear in the batch), then scale
    # to the profile's batch; networks under 1 TFLOP per step are also counted at full batch
    f1, f2 = train_flops(net, 1), train_flops(net, 2)
    with torch.no_grad():
        s_flops = count(net["evaluate"](net["model"].eval(), 1, "cpu"))
    row = {"network": name, "profile": profile, "model_config": net["config"],
           "params": sum(p.numel() for p in net["model"].parameters()),
           "batch_size": tc.batch_size, "steps": tc.steps, "train_flops": f1 * tc.batch_size,
           "train_flops_note": f"counted at batch 1 x {tc.batch_size}; batch 2 counts {f2 / f1:.6f} x batch 1",
           "sample_flops": s_flops}
    slow = row["train_flops"] > 1e12
    if not slow:
        full = train_flops(net, tc.batch_size)
        row.update(train_flops_counted_at_full_batch=full, linear_in_batch=full == f1 * tc.batch_size)
    row.update(cpu_s_per_train_step=None, cpu_s_per_sample_eval=None, cpu={"skipped": "--no-cpu"})
    runs = [("cpu", "cpu", 32, slow)] if measure_cpu else []
    if device is not None and torch.device(device).type == "cuda":
        runs.append(("cuda", device, 512, False))
    for key, dev, eval_batch, is_slow in runs:
        m = measure(net, dev, eval_batch, is_slow)
        if key == "cpu":  # a shared CPU runs slower: keep the load next to the numbers
            m.update(threads=threads, load_average=[round(v, 2) for v in os.getloadavg()])
        t = m["train"].get("amp", m["train"].get("fp32"))  # the precision ualm.train runs
        if t:
            m.update(gflops_per_s_train=row["train_flops"] / t / 1e9, full_run_minutes=tc.steps * t / 60,
                     steps_in_budget=int(budget_minutes * 60 / t))
        train, evals = m.pop("train"), m.pop("eval")
        # CPU: fp32 seconds; CUDA: {"amp": s, "fp32": s}
        row.update({f"{key}_s_per_train_step": train.get("fp32") if key == "cpu" else train,
                    f"{key}_s_per_sample_eval": evals.get("fp32") if key == "cpu" else evals, key: m})
    row["estimates"] = estimates(row["train_flops"], s_flops, tc.steps, efficiency, budget_minutes)
    return row


def conv_check() -> dict:
    """FlopCounterMode on one Conv2d against the closed form 2·Cin·Cout·k²·H·W·B."""
    b, cin, cout, k, h, w = 4, 16, 32, 3, 80, 80
    counted = count(lambda: nn.Conv2d(cin, cout, k, padding=1)(torch.randn(b, cin, h, w)))
    return {"counted": counted, "closed_form": 2 * cin * cout * k * k * h * w * b}


def fmt(v):
    return "-" if v is None else f"{v:.3g}"


def table(rows, budget_minutes):
    print(f"{'net':4s} {'profile':7s} {'params':>7s} {'batch':>5s} {'steps':>6s} {'GF/step':>8s} {'GF/eval':>8s} "
          f"{'cpu s/step':>10s} {'cpu s/eval':>10s} {'cpu GF/s':>8s}  " + "  ".join(f"{g:>14s}" for g in GPUS))
    for r in rows:
        est = "  ".join(f"{r['estimates'][g + '/amp']['est_full_run_minutes']:6.1f}m/"
                        f"{r['estimates'][g + '/amp']['est_steps_in_budget']:<7d}"
                        for g in GPUS)
        print(f"{r['network']:4s} {r['profile']:7s} {r['params'] / 1e6:6.2f}M {r['batch_size']:5d} {r['steps']:6d} "
              f"{r['train_flops'] / 1e9:8.1f} {r['sample_flops'] / 1e9:8.3f} {fmt(r['cpu_s_per_train_step']):>10s} "
              f"{fmt(r['cpu_s_per_sample_eval']):>10s} {fmt(r['cpu'].get('gflops_per_s_train')):>8s}  {est}")
        if "cuda" in r:
            g = r["cuda"]
            print(f"     {g.get('device_name')}: s/step {r['cuda_s_per_train_step']}, s/eval per chain "
                  f"{r['cuda_s_per_sample_eval']}, errors {g.get('errors', {})}")
    print(f"GPU columns: estimates (amp) of full-run minutes / training steps in {budget_minutes:g} min")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--efficiency", type=float, default=0.3,
                   help="fraction of peak throughput assumed for the GPU estimates (small conv nets)")
    p.add_argument("--budget-minutes", type=float, default=5.0, help="budget for 'steps in budget'")
    p.add_argument("--device", default=None, help="also measure on this CUDA device (default: cuda when present)")
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU timings (e.g. on the GPU machine)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/compute_costs.json)")
    args = p.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    t0, load0 = time.perf_counter(), [round(v, 2) for v in os.getloadavg()]
    rows = [costs(name, prof, args.threads, args.efficiency, args.budget_minutes, device, not args.no_cpu)
            for name, settings in (("phi", deepstorm_settings), ("psi", diffusion_settings))
            for prof in profiles(settings)]
    table(rows, args.budget_minutes)
    check = conv_check()
    print(f"Conv2d check: FlopCounterMode {check['counted']} vs 2·Cin·Cout·k²·H·W·B {check['closed_form']}")
    common.save("compute_costs", {
        "efficiency": args.efficiency, "budget_minutes": args.budget_minutes, "gpus": GPUS,
        "gpu_source": GPU_SOURCE, "conv_check": check, "load_average_start": load0,
        "runtime_s": time.perf_counter() - t0,
        "notes": ["FLOPs from torch.utils.flop_counter.FlopCounterMode: matmuls, convolutions and "
                  "attention (on the CPU SDPA runs as bmm and is counted), forward and backward; "
                  "elementwise ops (norms, activations, optimizer) are not counted",
                  "train_flops: one step (forward + backward of the loss) at the profile's batch, "
                  "counted at batch 1 and multiplied (verified exact at the full batch for the networks under "
                  "1 TFLOP per step)",
                  "sample_flops and *_s_per_sample_eval: one network evaluation of one sampling chain "
                  "(φ: one frame); CPU timings at 32 chains per call, CUDA at 512",
                  "estimates: FLOPs / (peak x efficiency), network only (no batch simulation), "
                  "'kind': 'estimate' until a GPU run measures them; for the small networks (φ, "
                  "Ψ small) they are lower bounds: a step of a few GFLOPs is bound by kernel launches "
                  "and the Python loop (milliseconds), not by FLOPs",
                  "CPU timings: best of 3 after a warm-up; networks over 1 TFLOP per training step (the paper "
                  "U-Net) one call after a warm-up"],
        "rows": rows}, args.out)


if __name__ == "__main__":
    main()
