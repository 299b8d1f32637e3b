"""The default uncertainty map of issue 16 (Ψ_v and a fast sampler whose intervals are
calibrated), chosen, calibrated and scored on three disjoint splits.

    python benchmarks/posterior.py validate    # candidates on validation frames -> the choice
    python benchmarks/posterior.py calibrate   # conformal scales on calibration frames -> manifest
    python benchmarks/posterior.py test        # the choice, raw and calibrated, on held-out frames
    python benchmarks/posterior.py compare     # every method calibrated alike: width, CRPS, energy
    python benchmarks/posterior.py condition   # how much each bundled Ψ leans on its condition at t = T
    python benchmarks/posterior.py frame       # Ψ_v(ŷ) against Ψ_v(ŷ, x) (needs diffusion_frame_v)
    python benchmarks/posterior.py exact       # isolated emitters: the exact posterior's intervals vs the map's
    python benchmarks/posterior.py speed       # seconds for one calibrated K = 32 map, Ψ in either layout

Splits (seeds below; none is the training stream, its validation batches or chapter 5/6's):
validation (isolated + dense frames) picks the sampler, calibration (dense frames) fits the
conformal scales (dense frames, sparse ones with 1–3 emitters and lone ones), test (the held-out seeds of
benchmarks/uncertainty.py) only scores. Isolated
frames: one emitter, i0 = 200, reference MCMC at β = 1 with x, y, photons and background
sampled (`uncertainty.isolated_reference`). Dense frames: the training distribution (1–20
emitters, i0 in [100, 400]); coverage over the significant pixels.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402
import uncertainty as ub  # noqa: E402
from common import boot  # noqa: E402

import ualm  # noqa: E402
from ualm import calibration as cal  # noqa: E402
from ualm import pretrained  # noqa: E402
from ualm.defaults import UPSAMPLE  # noqa: E402
from ualm.models.deepstorm import training_sim_config  # noqa: E402
from ualm.uncertainty import (DEFAULT_PSI, ensemble_map, mc_dropout_map, significant_pixels,  # noqa: E402
                              stored_conformal, uncertainty_map)

SEEDS = {"validation": {"isolated": 20261205, "dense": 20261206},
         "calibration": {"dense": 20261207, "sparse": 20261208, "lone": 20261209},
         "test": {"isolated": ub.ISOLATED_SEED, "dense": ub.DENSE_SEED}}
# label -> (weights, sampler, overrides)
CANDIDATES = {
    "Ψ (paper schedule), DDIM 10 from the guided start (before)": ("diffusion_quick", "ddim", {}),
    "Ψ_v, ancestral, 100 steps": ("diffusion_v", "ancestral", {}),
    "Ψ_v, DDIM 50, η = 1": ("diffusion_v", "ddim", {"steps": 50}),
    "Ψ_v, DDIM 20, η = 1": ("diffusion_v", "ddim", {"steps": 20}),
}
STD_BAND = (0.9, 1.1)  # the band for the isolated total-std ratio


def candidate_rows(args, candidates=None, seeds=None) -> dict:
    """Each candidate (label -> (weights, sampler, overrides)) on isolated frames against β = 1
    MCMC and on dense frames against the truth (validation seeds unless told)."""
    phi = pretrained.load("deepstorm_quick")
    candidates = CANDIDATES if candidates is None else candidates
    seeds = SEEDS["validation"] if seeds is None else seeds
    sim_iso, ref = ub.isolated_reference(args.isolated, seeds["isolated"], args.mcmc_iters, args.threads)
    dense = ualm.simulate_batch(args.dense, training_sim_config(), generator=ualm.make_generator(seeds["dense"]),
                                dtype=torch.float32)
    yhat_mse = float(((phi.predict(dense["x"]) - dense["y"]) ** 2).mean())
    rows = {}
    for label, (weights, sampler, over) in candidates.items():
        psi = pretrained.load(weights)
        iso = uncertainty_map(sim_iso["x"], psi, phi, args.samples_isolated, sampler, seed=1, progress=False, **over)
        t0 = time.perf_counter()
        res = uncertainty_map(dense["x"], psi, phi, args.samples, sampler, seed=2, progress=False, **over)
        sec = time.perf_counter() - t0
        sig = significant_pixels(dense["y"], res.mean())
        c = cal.calibration(res.samples, dense["y"], sig)
        rows[label] = {"weights": weights, "sampler": sampler, "overrides": over,
                       "evals_per_sample": res.info["evals_per_sample"],
                       "isolated": ub.isolated_scores(iso.mean(), iso.var(), ref),
                       "dense": c.as_row(), "mse": float(((res.mean() - dense["y"]) ** 2).mean()),
                       "yhat_mse": yhat_mse, "seconds_per_frame": sec / args.dense,
                       "seconds_per_frame_k32": sec / args.dense * 32 / args.samples}
        r = rows[label]
        print(f"{label}: std ratio {r['isolated']['std_ratio']['median']:.3f} "
              f"corr {r['isolated']['corr']['median']:.3f}  cov90 {c.at(0.9):.3f}  MSE/ŷ {r['mse'] / yhat_mse:.3f}  "
              f"{r['seconds_per_frame_k32']:.1f} s/frame at K=32",
              flush=True)
    return rows


def choose(rows: dict) -> str:
    """The fastest Ψ_v candidate whose isolated median std ratio lies in STD_BAND and whose
    sample mean is no worse than ŷ; else the ancestral reference."""
    ok = [k for k, r in rows.items() if r["weights"] == "diffusion_v"
          and STD_BAND[0] <= r["isolated"]["std_ratio"]["median"] <= STD_BAND[1] and r["mse"] <= r["yhat_mse"]]
    if not ok:
        return "Ψ_v, ancestral, 100 steps"
    return min(ok, key=lambda k: rows[k]["seconds_per_frame"])


def validate(args) -> int:
    rows = candidate_rows(args)
    choice = choose(rows)
    print("choice:", choice)
    payload = {"protocol": {"isolated": args.isolated, "dense": args.dense, "samples_isolated": args.samples_isolated,
                            "samples": args.samples, "mcmc_iters": args.mcmc_iters, "seeds": SEEDS["validation"]},
               "weights_sha256": {w: pretrained.manifest(w)["sha256"] for w in {r["weights"] for r in rows.values()}},
               "candidates": rows, "rule": choose.__doc__.strip(), "choice": choice,
               "command": shlex.join(["python", "benchmarks/posterior.py", *sys.argv[1:]])}
    common.save("posterior_validation", payload, args.out)
    return 0


# Ψ conditioned on ŷ against Ψ conditioned on ŷ and the frame, both on the schedule that reaches
# noise, so that neither chain starts at ŷ and the condition has to carry the answer
FRAME_PAIR = {"Ψ_v(ŷ), DDIM 20, η = 1": ("diffusion_v", "ddim", {"steps": 20}),
              "Ψ_v(ŷ, x), DDIM 20, η = 1": ("diffusion_frame_v", "ddim", {"steps": 20})}


def condition_use(weights: str, n: int = 64, seed: int = 11) -> dict:
    """How much the network leans on each condition channel at t = T: its training loss (eq. 9,
    with its own target, ε or v) on held-out pairs with the right condition, and with one channel
    taken from another frame (rolled by one in the batch). On a schedule that reaches noise
    (γ_T ≈ 0) y_T holds no trace of y_0 and the answer comes from the condition alone; on the
    paper's (γ_T ≈ 0.60) y_T still holds most of y_0, and the condition only helps."""
    from ualm.diffusion import condition, diffusion_loss, schedule
    net = pretrained.load(weights).eval()
    cfg = pretrained.manifest(weights)["model_config"]
    names = tuple(cfg["cond"])
    sim = ualm.simulate_batch(n, training_sim_config(), generator=ualm.make_generator(seed), dtype=torch.float32)
    c = condition(pretrained.load("deepstorm_quick"), sim["x"], names)
    sched = schedule(cfg["schedule"])
    batch = {"y": sim["y"], "t": torch.full((n,), sched.T - 1, dtype=torch.long),
             "eps": torch.randn(sim["y"].shape, generator=ualm.make_generator(seed + 1))}
    swaps = [("right condition", c)]
    swaps += [(f"{name} from another frame", torch.cat([c[:, :i], c.roll(1, 0)[:, i:i + 1], c[:, i + 1:]], 1))
              for i, name in enumerate(names)]
    with torch.no_grad():
        return {label: float(diffusion_loss(net, {**batch, "cond": cc}, sched)) for label, cc in swaps}


CONDITIONED = ("diffusion_v", "diffusion_quick", "diffusion_frame_quick")


def condition(args) -> int:
    """condition_use for each bundled Ψ (chapter 6 quotes it)."""
    rows = {w: condition_use(w) for w in CONDITIONED}
    for w, r in rows.items():
        print(w, r, flush=True)
    payload = {"weights_sha256": {w: pretrained.manifest(w)["sha256"] for w in CONDITIONED},
               "protocol": {"frames": 64, "seed": 11, "t": "T (the last step)", "swap": "roll by one in the batch"},
               "loss_at_T": rows, "command": shlex.join(["python", "benchmarks/posterior.py", *sys.argv[1:]])}
    common.save("posterior_condition", payload, args.out)
    return 0


def frame(args) -> int:
    """Ψ_v(ŷ) against Ψ_v(ŷ, x) on the held-out seeds (no choice is made here)."""
    rows = candidate_rows(args, FRAME_PAIR, SEEDS["test"])
    for row in rows.values():
        row["loss_at_T"] = condition_use(row["weights"])
        print(row["weights"], "loss at t = T:", row["loss_at_T"], flush=True)
    payload = {"protocol": {"isolated": args.isolated, "dense": args.dense, "samples_isolated": args.samples_isolated,
                            "samples": args.samples, "mcmc_iters": args.mcmc_iters, "seeds": SEEDS["test"]},
               "weights_sha256": {w: pretrained.manifest(w)["sha256"] for w in {r["weights"] for r in rows.values()}},
               "candidates": rows, "command": shlex.join(["python", "benchmarks/posterior.py", *sys.argv[1:]])}
    common.save("posterior_frame", payload, args.out)
    return 0


def chosen() -> tuple[str, dict]:
    """The sampler and settings that validation chose (results/posterior_validation.json)."""
    val = json.loads((common.RESULTS / "posterior_validation.json").read_text())
    row = val["candidates"][val["choice"]]
    if row["weights"] != DEFAULT_PSI:
        raise SystemExit(f"validation chose {row['weights']}, not {DEFAULT_PSI}")
    return row["sampler"], row["overrides"]


CALIBRATION_KS = (8, 16, 32)  # a Conformal per K, each from the first K of the same samples
SPARSE_COUNT = (1, 3)  # emitters in the added sparse calibration frames (class 0–1 detected)


def cached_samples(name: str, x: torch.Tensor, n_samples: int, seed: int, sampler: str, over: dict) -> dict:
    """Raw samples of the default map for frames x, kept in runs/ (keyed by the weights and the
    settings) so that a failed fit or a later comparison does not cost the sampling again."""
    key = pretrained.manifest(DEFAULT_PSI)["sha256"]
    tag = "_".join(f"{k}{v}" for k, v in sorted(over.items()))
    cache = ROOT / "runs" / f"posterior_{name}_{len(x)}x{n_samples}_{sampler}_{tag}_s{seed}.pt"
    got = torch.load(cache, weights_only=True) if cache.is_file() else None
    if got is None or got["sha256"] != key or got["samples"].shape[:2] != (len(x), n_samples):
        t0 = time.perf_counter()
        res = uncertainty_map(x, n_samples=n_samples, sampler=sampler, calibrate=False, seed=seed, **over)
        got = {"sha256": key, "samples": res.samples, "yhat": res.yhat, "seconds": time.perf_counter() - t0}
        cache.parent.mkdir(exist_ok=True)
        torch.save(got, cache)
    return got


def calibration_split(args) -> dict:
    """The calibration frames, by part: `args.calibration` from the training distribution,
    `args.sparse` with SPARSE_COUNT emitters and `args.lone` with one emitter each, so that the
    class of lone emitters holds enough frames for conformal risk control's finite-sample term
    (((1 − α)(n + 1) − 1)/n asks for a miss of 7.75 % instead of 10 % at n = 40) to stay small."""
    seed = SEEDS["calibration"]
    parts = {"dense": (args.calibration, training_sim_config()),
             "sparse": (args.sparse, training_sim_config().replace(count=SPARSE_COUNT)),
             "lone": (args.lone, training_sim_config().replace(count=1))}
    return {name: ualm.simulate_batch(n, config, generator=ualm.make_generator(seed[name]), dtype=torch.float32)
            for name, (n, config) in parts.items() if n}


def calibration_data(args) -> dict:
    """What the calibration frames are, as stored with the scales."""
    seed = SEEDS["calibration"]
    return {"frames": args.calibration, "seed": seed["dense"], "count": [1, 20], "i0": [100.0, 400.0],
            "sparse_frames": args.sparse, "sparse_seed": seed["sparse"], "sparse_count": list(SPARSE_COUNT),
            "lone_frames": args.lone, "lone_seed": seed["lone"], "lone_sample_seed": LONE_SAMPLE_SEED,
            "mask": "significant_pixels(y, mean of the first K)", "sample_seed": SAMPLE_SEED}


SAMPLE_SEED, LONE_SAMPLE_SEED = 3, 6  # the sample seeds of the dense + sparse frames and of the lone ones


def kept_classes(previous, sampler, over, data, classes, cls, lone) -> dict:
    """Classes whose stored scales a refit would reproduce: same sampler and settings, same
    dense and sparse frames and sample seed, no lone frame in the class, and as many frames in
    it as the stored fit had. Chain (f, k) draws from its own seed (`first_frame`), so the
    class's samples, and its scales, would be the same. Returns {class index: {K: scales}}."""
    if previous is None or (previous["sampler"], previous["overrides"]) != (sampler, over):
        return {}
    same = ("frames", "seed", "count", "i0", "sparse_frames", "sparse_seed", "sparse_count", "mask", "sample_seed")
    if any(previous["data"].get(key) != data[key] for key in same):
        return {}
    kept = {}
    for c, bounds in enumerate(classes):
        idx = cls == c
        if bool((idx & lone).any()):
            continue
        rows = {}
        for k, d in previous["conformal"].items():
            stored = {tuple(b): (row, n) for b, row, n in zip(d["classes"], d["scales"], d["frames"])}
            if tuple(bounds) in stored and stored[tuple(bounds)][1] == int(idx.sum()):
                rows[int(k)] = stored[tuple(bounds)][0]
        if set(rows) == set(CALIBRATION_KS):
            kept[c] = rows
    return kept


def frame_samples(x: torch.Tensor, where: list, n_samples: int, sampler: str, over: dict) -> torch.Tensor:
    """Raw samples of the default map for frames x, frame j drawn as frame where[j] = (sample
    seed, index) of its part's call would be; kept frame by frame in runs/ (resumable)."""
    key = pretrained.manifest(DEFAULT_PSI)["sha256"]
    tag = "_".join(f"{k}{v}" for k, v in sorted(over.items()))
    cache = ROOT / "runs" / f"posterior_calibration_frames_{key[:12]}_{sampler}_{tag}_K{n_samples}.pt"
    store = torch.load(cache, weights_only=True) if cache.is_file() else {}
    out, new, t0 = [], 0, time.perf_counter()
    cache.parent.mkdir(exist_ok=True)
    for j, (seed, index) in enumerate(where):
        name = f"{seed}:{index}"
        if name not in store:
            res = uncertainty_map(x[j:j + 1], n_samples=n_samples, sampler=sampler, calibrate=False, seed=seed,
                                  first_frame=index, progress=False, **over)
            store[name], new = res.samples[0].cpu(), new + 1
            if new % 10 == 0:  # saved every 10 new frames: an interrupted run resumes there
                torch.save(store, cache)
                print(f"{j + 1}/{len(where)} frames sampled, {time.perf_counter() - t0:.0f} s", flush=True)
        out.append(store[name])
    if new % 10:
        torch.save(store, cache)
    return torch.stack(out)


def calibrate(args) -> int:
    """Conformal scales per class of detected emitters, at each K of CALIBRATION_KS. A class the
    stored calibration already fitted on the same frames keeps its scales (`kept_classes`;
    --full refits all): adding the lone frames only needs the lone class sampled."""
    sampler, over = chosen()
    parts = calibration_split(args)
    data = calibration_data(args)
    t0 = time.perf_counter()
    # each frame: (sample seed, index in its part's call); dense and sparse frames are one call
    n_first = sum(len(parts[p]["x"]) for p in ("dense", "sparse") if p in parts)
    n_lone = len(parts["lone"]["x"]) if "lone" in parts else 0
    where = [(SAMPLE_SEED, i) for i in range(n_first)] + [(LONE_SAMPLE_SEED, i) for i in range(n_lone)]
    lone = torch.arange(len(where)) >= n_first
    x = torch.cat([part["x"] for part in parts.values()])
    y = torch.cat([part["y"] for part in parts.values()])
    yhat = pretrained.load("deepstorm_quick").predict(x)  # as uncertainty_map computes it
    counts = cal.detected_counts(yhat)
    classes = cal.merge_classes(counts)
    cls = cal.class_index(counts, classes)
    previous = None if args.full else pretrained.stored_calibration(DEFAULT_PSI)  # checksum verified
    previous_sha = pretrained.manifest(DEFAULT_PSI).get("calibration", {}).get("sha256")
    kept = kept_classes(previous, sampler, over, data, classes, cls, lone)
    refit = [c for c in range(len(classes)) if c not in kept]
    todo = torch.nonzero(torch.isin(cls, torch.tensor(refit, dtype=torch.long))).flatten()
    print(f"classes {classes}: frames {torch.bincount(cls, minlength=len(classes)).tolist()}; kept {sorted(kept)}, "
          f"sampling the {len(todo)} frames of classes {refit}", flush=True)
    samples = frame_samples(x[todo], [where[i] for i in todo.tolist()], max(CALIBRATION_KS), sampler, over)
    seconds_sampling = time.perf_counter() - t0
    by_k = {}
    for k in CALIBRATION_KS:
        s = samples[:, :k]
        fitted = cal.fit_conformal(s, y[todo], significant_pixels(y[todo], s.mean(1)), counts[todo],
                                   classes=[classes[c] for c in refit], min_frames=0)
        rows = dict(zip(refit, fitted.scales)) | {c: tuple(r[k]) for c, r in kept.items()}
        conf = cal.Conformal(levels=fitted.levels, classes=tuple(tuple(c) for c in classes),
                             scales=tuple(tuple(rows[c]) for c in range(len(classes))),
                             frames=tuple(int((cls == c).sum()) for c in range(len(classes))), samples=k)
        by_k[str(k)] = conf.to_dict()
        for i, (c, row, n) in enumerate(zip(conf.classes, conf.scales, conf.frames)):
            print(f"K = {k}, class {c}: {n} frames, λ at {conf.levels} = {[round(v, 3) for v in row]}"
                  + (" (kept)" if i in kept else ""))
    payload = {"sampler": sampler, "overrides": over, "conformal": by_k, "data": data,
               "kept": ({"classes": [classes[c] for c in sorted(kept)], "from_calibration": previous_sha,
                         "command": previous["command"]} if kept else None),
               "sampled_frames": len(todo), "seconds_sampling": seconds_sampling,
               "seconds": time.perf_counter() - t0,
               "command": shlex.join(["python", "benchmarks/posterior.py", *sys.argv[1:]])}
    pretrained.record_calibration(DEFAULT_PSI, pretrained.manifest(DEFAULT_PSI)["sha256"], payload)
    return 0


def frame_coverage(samples, y, mask, level, lam=None) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: covered and scored pixel counts of the (scaled) Gaussian interval."""
    lo, hi = cal.scaled_interval(samples, level, lam)
    yy = y.double()
    inside = ((yy >= lo) & (yy <= hi) & mask).sum((1, 2)).numpy()
    return inside, mask.sum((1, 2)).numpy()


def coverage_table(raw, counts, sim, conf, misses: bool = True) -> dict:
    """Raw and calibrated coverage of K raw samples per frame (F, K, H, W) at every level, overall
    and per class of true emitter count; conf: the `Conformal` for this K."""
    y = sim["y"]
    mean = raw.mean(1)
    mask = significant_pixels(y, mean)
    true_n = sim["mask"].sum(1)
    out = {"samples": int(raw.shape[1]), "levels": list(cal.LEVELS), "raw": {}, "calibrated": {}, "by_density": []}
    parts = {}
    for level in cal.LEVELS:
        parts[("raw", level)] = frame_coverage(raw, y, mask, level)
        parts[("calibrated", level)] = frame_coverage(raw, y, mask, level, conf.scale(counts, level))
        for kind in ("raw", "calibrated"):
            out[kind][str(level)] = boot(*parts[(kind, level)])
    for lo, hi in ub.DENSITY_BINS:
        f = ((true_n >= lo) & (true_n <= hi)).numpy()
        if f.any():
            out["by_density"].append({"emitters": [lo, hi], "frames": int(f.sum()),
                                      **{kind: boot(parts[(kind, 0.9)][0][f], parts[(kind, 0.9)][1][f])
                                         for kind in ("raw", "calibrated")}})
    lam = conf.scale(counts, 0.9).to(raw.dtype)[:, None, None]
    out["mean_abs_z_calibrated"] = float(cal.zscores(y, mean, lam * raw.std(1), mask).abs().mean())
    out["mean_abs_z_raw"] = float(cal.zscores(y, mean, raw.std(1), mask).abs().mean())
    out["mean_abs_z_ideal"] = cal.expected_abs_z(raw.shape[1])
    if misses:
        out["misses"] = miss_decomposition(raw, sim, mask, conf.scale(counts, 0.9))
    return out


def miss_decomposition(raw, sim, mask, lam) -> dict:
    """Coverage at 90 % (calibrated) on pixels within 1 px of a true emitter that detection in the
    sample mean misses, versus the rest; and the share of the uncovered pixels near such emitters."""
    from ualm.detect import detect, match
    from ualm.simulate import to_kde_coords
    lo, hi = cal.scaled_interval(raw, 0.9, lam)
    inside = (sim["y"].double() >= lo) & (sim["y"].double() <= hi)
    near = torch.zeros_like(mask)
    h, w = mask.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    for f, det in enumerate(detect(raw.mean(1).float())):
        truth = sim["theta"][f][sim["mask"][f]].double().numpy()
        _, it, _ = match(np.asarray(det).reshape(-1, 2), truth)
        for e in sorted(set(range(len(truth))) - set(it.tolist())):
            kx, ky = to_kde_coords(torch.tensor(truth[e])).tolist()
            near[f] |= (xx - kx) ** 2 + (yy - ky) ** 2 <= UPSAMPLE ** 2
    near &= mask
    rest = mask & ~near
    missed = mask & ~inside
    return {"coverage_near_missed": float(inside[near].double().mean()) if near.any() else float("nan"),
            "coverage_rest": float(inside[rest].double().mean()),
            "pixels_near_missed": int(near.sum()), "share_of_uncovered_near_missed":
                float((missed & near).sum() / max(int(missed.sum()), 1))}


SHIFTS = {"i0 in [400, 800] photons (training: [100, 400])": {"i0": (400.0, 800.0)},
          "PSF σ = 1.0 px (training: 0.92)": {"sigma": 1.0},
          "background 5 photons/px (training: 0)": {"background": 5.0}}


def test_split(args) -> dict:
    """The held-out dense frames and the shifted ones (seeds of benchmarks/uncertainty.py)."""
    seed = SEEDS["test"]["dense"]
    out = {"dense": ualm.simulate_batch(args.dense, training_sim_config(), generator=ualm.make_generator(seed),
                                        dtype=torch.float32)}
    for i, (label, change) in enumerate(SHIFTS.items()):
        out[label] = ualm.simulate_batch(args.shift, training_sim_config().replace(**change),
                                         generator=ualm.make_generator(seed + 100 + i), dtype=torch.float32)
    return out


def calibration_sha() -> dict:
    """{DEFAULT_PSI: SHA-256 of the calibration stored with it}: what calibrated numbers depend on."""
    return {DEFAULT_PSI: pretrained.manifest(DEFAULT_PSI)["calibration"]["sha256"]}


def stored_calibration() -> dict:
    stored = pretrained.stored_calibration(DEFAULT_PSI)
    if stored is None:
        raise SystemExit("no stored calibration: run python benchmarks/posterior.py calibrate first")
    return stored


def test(args) -> int:
    sampler, over = chosen()
    stored = stored_calibration()
    k = args.samples
    out = {"sampler": sampler, "overrides": over, "weights_sha256": pretrained.manifest(DEFAULT_PSI)["sha256"],
           "calibration_sha256": calibration_sha(),
           "protocol": {"isolated": args.isolated, "dense": args.dense, "samples": k,
                        "samples_small": args.samples_small,
                        "samples_isolated": args.samples_isolated, "seeds": SEEDS["test"], "shift_frames": args.shift}}
    seeds = SEEDS["test"]
    # isolated emitters against β = 1 MCMC, raw and calibrated (the default map, as a user gets it)
    sim_iso, ref = ub.isolated_reference(args.isolated, seeds["isolated"], args.mcmc_iters, args.threads)
    iso = uncertainty_map(sim_iso["x"], n_samples=args.samples_isolated, seed=1, progress=False)
    out["isolated"] = {"calibrated": ub.isolated_scores(iso.mean(), iso.var(), ref),
                       "raw": ub.isolated_scores(iso.raw().mean(1), iso.raw().var(1), ref),
                       "scale": [float(v) for v in iso.scale], "detected": iso.counts.tolist()}
    print("isolated std ratio raw", out["isolated"]["raw"]["std_ratio"], "calibrated",
          out["isolated"]["calibrated"]["std_ratio"], "corr", out["isolated"]["raw"]["corr"], flush=True)
    # one calibrated map of one frame, timed as a user would call it
    split = test_split(args)
    dense = split["dense"]
    t0 = time.perf_counter()
    uncertainty_map(dense["x"][:1], n_samples=32, seed=4, progress=False)
    out["seconds_one_frame_k32"] = time.perf_counter() - t0
    # dense held-out frames at K, and at a smaller K from the first samples of the same chains
    got = cached_samples("test", dense["x"], k, 2, sampler, over)
    counts = cal.detected_counts(got["yhat"])
    yhat_mse = float(((got["yhat"] - dense["y"]) ** 2).mean())
    out["dense"] = {**coverage_table(got["samples"], counts, dense, stored_conformal(stored, k)),
                    "mse": float(((got["samples"].mean(1) - dense["y"]) ** 2).mean()), "yhat_mse": yhat_mse,
                    "seconds_per_frame": got["seconds"] / args.dense}
    ks = args.samples_small
    out["dense_small"] = coverage_table(got["samples"][:, :ks], counts, dense, stored_conformal(stored, ks),
                                        misses=False)
    print("dense", {kk: out["dense"][kk] for kk in ("raw", "calibrated", "mse", "yhat_mse")}, flush=True)
    print(f"K={ks}", out["dense_small"]["calibrated"], flush=True)
    # shifts away from the training distribution
    out["shift"] = {}
    for label in SHIFTS:
        sim = split[label]
        g = cached_samples(f"shift{list(SHIFTS).index(label)}", sim["x"], k, 5, sampler, over)
        t = coverage_table(g["samples"], cal.detected_counts(g["yhat"]), sim, stored_conformal(stored, k),
                           misses=False)
        out["shift"][label] = {"raw_90": t["raw"]["0.9"], "calibrated_90": t["calibrated"]["0.9"],
                               "mse": float(((g["samples"].mean(1) - sim["y"]) ** 2).mean()),
                               "yhat_mse": float(((g["yhat"] - sim["y"]) ** 2).mean())}
        print(label, out["shift"][label], flush=True)
    out["command"] = shlex.join(["python", "benchmarks/posterior.py", *sys.argv[1:]])
    common.save("posterior_test", out, args.out)
    return 0


# ----------------------------------------------------------------------------- sharpness and scores

BLUR_PX = 2.0  # KDE px: the heuristic's spread is ŷ blurred by a Gaussian of this std


def blurred_yhat_samples(yhat: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """A spread with no learning: K draws of ŷ + g ⊙ ξ, ξ ~ N(0, 1) per pixel centred over the K
    draws, g = ŷ blurred by a Gaussian of BLUR_PX (wide where ŷ has mass, zero far from it). Its width is set by the
    conformal scale, like every other method's."""
    from scipy.ndimage import gaussian_filter
    spread = torch.from_numpy(gaussian_filter(yhat.detach().cpu().numpy(), sigma=(0, BLUR_PX, BLUR_PX),
                                              mode="constant", truncate=3.0)).to(yhat.dtype)
    gen = ualm.make_generator(seed)
    xi = torch.randn((yhat.shape[0], k, *yhat.shape[1:]), generator=gen, dtype=yhat.dtype)
    xi = xi - xi.mean(1, keepdim=True)  # the samples' mean is ŷ itself, not ŷ plus noise
    return yhat[:, None] + spread.clamp(min=0)[:, None] * xi


def method_samples(name: str, split: str, x: torch.Tensor, yhat: torch.Tensor, k: int, nets: dict) -> torch.Tensor:
    """K raw samples (F, K, H, W) of one method on frames x (the ensemble: its 5 members)."""
    seed = {"calibration": 3, "test": 2}[split]
    if name.startswith("diffusion"):
        sampler, over = chosen()
        return cached_samples(split, x, k, seed, sampler, over)["samples"]
    if name.startswith("MC dropout"):
        return mc_dropout_map(x, nets["deepstorm_ens0"], k, seed=seed).samples
    if name.startswith("deep ensemble"):
        return ensemble_map(x, [nets[w] for w in ub.ENSEMBLE]).samples
    return blurred_yhat_samples(yhat, k, seed)


COMPARED = ("diffusion: Ψ_v, DDIM 20 (the default map)", "MC dropout (φ, p = 0.1)",
            f"deep ensemble ({len(ub.ENSEMBLE)} φ)", f"blurred ŷ (no learning, σ = {BLUR_PX:g} px)")


def scores(samples: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> dict:
    """Proper scores of samples (F, K, H, W) against the truth (scoringrules, unbiased "fair"
    estimators, so an ensemble of 5 is not penalised for its size): CRPS per pixel averaged over
    the masked pixels, and the energy score of each whole frame (H·W dimensions) averaged."""
    import scoringrules as sr
    fc = samples.double().numpy()
    obs = y.double().numpy()
    crps = sr.crps_ensemble(obs, np.moveaxis(fc, 1, -1), m_axis=-1, estimator="fair")
    f, k = fc.shape[:2]
    es = sr.es_ensemble(obs.reshape(f, -1), fc.reshape(f, k, -1), m_axis=-2, v_axis=-1, estimator="fair")
    m = mask.numpy()
    return {"crps": float(crps[m].mean()), "energy": float(np.mean(es)),
            # per frame, for paired comparisons between methods on the same frames
            "crps_sum_per_frame": [float(v) for v in (crps * m).sum((1, 2))],
            "energy_per_frame": [float(v) for v in es]}


def width_at_level(raw: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, level: float = 0.9) -> dict:
    """Sharpness at exactly equal coverage: the one factor on the raw interval (found by bisection
    on these very frames) whose pooled coverage is `level`, and the mean width it gives. Fitted on
    the frames it scores, so it flatters every method alike; NaN where no factor reaches it."""
    yy = y.double()

    def cover(lam):
        lo, hi = cal.scaled_interval(raw, level, torch.full((raw.shape[0],), lam, dtype=torch.double))
        return float(((yy >= lo) & (yy <= hi))[mask].double().mean()), float((hi - lo)[mask].mean())

    a, b = 0.0, 1.0
    while cover(b)[0] < level:
        b *= 2
        if b > 1e4:
            return {"scale": float("nan"), "width": float("nan")}
    for _ in range(40):
        a, b = (a, (a + b) / 2) if cover((a + b) / 2)[0] >= level else ((a + b) / 2, b)
    return {"scale": b, "width": cover(b)[1]}


def compare(args) -> int:
    """Every method calibrated the same way on the same calibration frames (conformal risk control
    of the 90 % interval per class of emitters detected in ŷ, on the pixels where the truth or the
    method's own mean exceeds 0.05, as `calibrate` fits the default map's stored scales, which are
    used for the diffusion), then scored on the held-out dense frames, all on the same pixels
    (truth or ŷ > 0.05): coverage and mean width of the calibrated 90 % interval, CRPS and energy
    score of the calibrated samples, MSE of their mean."""
    nets = {w: pretrained.load(w) for w in ["deepstorm_quick", *ub.ENSEMBLE]}
    phi = nets["deepstorm_quick"]
    parts = calibration_split(args)
    calib = {k: torch.cat([part[k] for part in parts.values()]) for k in ("x", "y")}
    test_ = test_split(args)["dense"]
    k = args.samples
    data = {}
    for split, sim in (("calibration", calib), ("test", test_)):
        yhat = phi.predict(sim["x"])
        data[split] = {"sim": sim, "yhat": yhat, "counts": cal.detected_counts(yhat),
                       "mask": significant_pixels(sim["y"], yhat)}
    rows = {}
    for name in COMPARED:
        t0 = time.perf_counter()
        c, t = data["calibration"], data["test"]
        row = {}
        try:
            if name.startswith("diffusion"):  # its stored calibration, fitted exactly this way by `calibrate`
                conf = stored_conformal(stored_calibration(), k)
            else:
                s = method_samples(name, "calibration", c["sim"]["x"], c["yhat"], k, nets)
                conf = cal.fit_conformal(s, c["sim"]["y"], significant_pixels(c["sim"]["y"], s.mean(1)), c["counts"],
                                         levels=(0.9,))
            row.update(scales_90=[r[conf.levels.index(0.9)] for r in conf.scales],
                       classes=[list(cc) for cc in conf.classes])
        except ValueError as err:  # pixels where every sample agrees and misses: no scale covers them
            conf = None
            row["not_calibrated"] = str(err)
        raw = method_samples(name, "test", t["sim"]["x"], t["yhat"], k, nets).double().cpu()
        row.update(scored(raw, t, conf))
        row["seconds"] = time.perf_counter() - t0
        rows[name] = row
        report(name, row)
    # A control for the spread alone: the heuristic's spread about the diffusion's own mean, so
    # that a better mean cannot pass for a better spread. Its scale is fitted on the test frames
    # themselves (one class), which can only flatter it.
    t = data["test"]
    mean_d = method_samples(COMPARED[0], "test", t["sim"]["x"], t["yhat"], k, nets).mean(1)
    ctrl = blurred_yhat_samples(mean_d.float(), k, seed=2).double()
    y = t["sim"]["y"].double()
    conf = cal.fit_conformal(ctrl, y, significant_pixels(y, ctrl.mean(1)), t["counts"], levels=(0.9,),
                             classes=((0, None),))
    rows[CONTROL] = {"scales_90": [conf.scales[0][0]], "classes": [[0, None]], **scored(ctrl, t, conf)}
    report(CONTROL, rows[CONTROL])
    out = {"weights_sha256": {w: pretrained.manifest(w)["sha256"] for w in [DEFAULT_PSI, *nets]},
           "calibration_sha256": calibration_sha(),
           "protocol": {"calibration_frames": len(calib["x"]), "test_frames": len(test_["x"]), "samples": k,
                        "mask": "scored on significant_pixels(y, ŷ), the same pixels for every method; "
                                "calibrated on significant_pixels(y, the method's own mean)",
                        "seeds": {"calibration": SEEDS["calibration"], "test": SEEDS["test"]["dense"]},
                        "scoring": "scoringrules crps_ensemble / es_ensemble, estimator='fair'"},
           "methods": rows, "rule": compare.__doc__.strip(),
           "command": shlex.join(["python", "benchmarks/posterior.py", *sys.argv[1:]])}
    common.save("posterior_compare", out, args.out)
    return 0


CONTROL = f"blurred spread (σ = {BLUR_PX:g} px) about the diffusion's mean, scaled on the test frames"


def scored(raw: torch.Tensor, t: dict, conf) -> dict:
    """The scores of raw samples (F, K, H, W) on the test frames t, calibrated by conf (None: raw)."""
    y, mask = t["sim"]["y"].double(), t["mask"]
    lam = conf.scale(t["counts"], 0.9) if conf is not None else None
    lo, hi = cal.scaled_interval(raw, 0.9, lam)
    inside, total = ((y >= lo) & (y <= hi) & mask).sum((1, 2)).numpy(), mask.sum((1, 2)).numpy()
    return {"samples": int(raw.shape[1]), "coverage_90": boot(inside, total), "width_90": float((hi - lo)[mask].mean()),
            "zero_spread": float((raw.std(1)[mask] == 0).double().mean()), "raw": scores(raw, y, mask),
            "mse": float(((raw.mean(1) - y) ** 2).mean()),
            "calibrated": scores(cal.apply_conformal(raw, conf, t["counts"]), y, mask) if conf is not None else None,
            "spread_skill": spread_skill(raw, y, mask, lam), "at_exactly_90": width_at_level(raw, y, mask)}


def report(name: str, row: dict) -> None:
    sc = row["calibrated"] or row["raw"]
    print(f"{name}: {'calibrated' if row['calibrated'] else 'NOT calibrated'} cov90 {row['coverage_90']['value']:.3f} "
          f"width {row['width_90']:.4f} CRPS {sc['crps']:.4f} ES {sc['energy']:.3f} MSE {row['mse']:.2e}", flush=True)


def spread_skill(raw: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, lam=None, bins: int = 10) -> dict:
    """RMSE of the mean against the (calibrated) predicted std, in bins of equal pixel count of
    that std: a calibrated spread lies on RMSE = std in every bin. Unlike a rank correlation of
    std and error, it does not reward a map only for knowing where the emitters are."""
    std = raw.std(1) * (lam.to(raw.dtype)[:, None, None] if lam is not None else 1.0)
    sd, err = std[mask], (raw.mean(1) - y)[mask]
    order = torch.argsort(sd)
    parts = torch.tensor_split(order, bins)
    return {"std": [float(sd[i].pow(2).mean().sqrt()) for i in parts],
            "rmse": [float(err[i].pow(2).mean().sqrt()) for i in parts], "pixels": [int(len(i)) for i in parts]}


EXACT_SEED = 20261211  # isolated frames of this diagnostic only: no choice is made on them
EXACT_MCMC_SEED = 20261212


def needed_scale(samples, y, mask, level: float = 0.9) -> float:
    """The λ that risk control would fit on these frames alone: how much the Gaussian intervals
    of `samples` must widen (> 1) or may narrow (< 1) to cover the truth at `level`."""
    sc = cal.interval_scores(samples, y, level)
    return cal.risk_control_scale([sc[i][mask[i]] for i in range(len(y))], level)


def exact(args) -> int:
    """Isolated emitters: do the exact posterior's own per-pixel Gaussian intervals cover the
    truth, and what does the default map's calibration add there? β = 1 MCMC (x, y, photons,
    background) gives K draws per frame, their KDEs the intervals; the default map is scored on
    the same frames, raw and calibrated. Separates what any K-sample Gaussian interval needs from
    what the diffusion's own errors need."""
    n = args.isolated
    sim = ualm.simulate_batch(n, ualm.SimConfig(layout="isolated", count=1), generator=ualm.make_generator(EXACT_SEED),
                              dtype=torch.float32)
    post = ualm.sample_posterior(sim["x"].double(), params=("x", "y", "photons", "background"), n_chains=4,
                                 n_iter=args.mcmc_iters, burn_in=args.mcmc_iters // 3, seed=EXACT_MCMC_SEED)
    flat = post.samples.reshape(n, -1, post.samples.shape[-1])
    y = sim["y"]
    rows = {}
    for k in (args.samples, 256):
        idx = torch.linspace(0, flat.shape[1] - 1, k).long()
        draws = ualm.kde(flat[:, idx, None, :2].float(), shape=(20, 20))
        mask = significant_pixels(y, draws.mean(1))
        rows[f"mcmc_K{k}"] = {"coverage": dict(zip(map(str, cal.LEVELS), cal.coverage(draws, y, mask).tolist())),
                              "needed_scale_90": needed_scale(draws, y, mask)}
    t0 = time.perf_counter()
    res = uncertainty_map(sim["x"], n_samples=args.samples, seed=5, progress=False)
    sec = time.perf_counter() - t0
    raw = res.raw()
    mask = significant_pixels(y, raw.mean(1))
    rows["diffusion_raw"] = {"coverage": dict(zip(map(str, cal.LEVELS), cal.coverage(raw, y, mask).tolist())),
                             "needed_scale_90": needed_scale(raw, y, mask)}
    rows["diffusion_calibrated"] = {"coverage": dict(zip(map(str, cal.LEVELS),
                                                         cal.coverage(res.samples, y, mask).tolist())),
                                    "scale_90_applied": sorted({round(float(v), 4) for v in res.scale})}
    for key, row in rows.items():
        print(key, row, flush=True)
    payload = {"protocol": {"frames": n, "seed": EXACT_SEED, "mcmc_seed": EXACT_MCMC_SEED, "i0": ualm.SimConfig().i0,
                            "mcmc_iters": args.mcmc_iters,
                            "samples": args.samples, "rhat_max": float(post.rhat().max()),
                            "detected_counts": torch.bincount(res.counts.long()).tolist()},
               "weights_sha256": {DEFAULT_PSI: pretrained.manifest(DEFAULT_PSI)["sha256"]},
               "calibration_sha256": calibration_sha(), "seconds_diffusion": sec,
               "rows": rows, "command": shlex.join(["python", "benchmarks/posterior.py", *sys.argv[1:]])}
    common.save("posterior_exact", payload, args.out)
    return 0


def speed(args) -> int:
    """Seconds for one calibrated map of K samples of one frame, called as a user would (the
    bundled networks already loaded), with Ψ in channels-last layout (the CPU default) and in
    the contiguous one, alternating, `--repeats` times each after one warm-up call of each:
    median, min and max, and the ratio of the medians measured side by side."""
    x = test_split(args)["dense"]["x"][:1]
    layouts = {"channels_last": True, "contiguous": False}
    runs = {name: [] for name in layouts}
    out = {}
    for r in range(args.repeats + 1):
        for name, flag in layouts.items():
            t0 = time.perf_counter()
            res = uncertainty_map(x, n_samples=args.samples, seed=4, progress=False, channels_last=flag)
            sec = time.perf_counter() - t0
            if not res.info["calibrated"]:
                raise RuntimeError("the default map came out uncalibrated: the stored calibration does not fit")
            out[name] = res.samples
            if r:  # the first call of each warms oneDNN's caches
                runs[name].append(sec)
            print(f"{name}: {sec:.2f} s", flush=True)
    rows = {name: {"median": float(np.median(t)), "min": min(t), "max": max(t), "seconds": t}
            for name, t in runs.items()}
    payload = {"protocol": {"frames": 1, "samples": args.samples, "repeats": args.repeats, "seed": 4,
                            "frame": f"the first held-out dense frame (seed {SEEDS['test']['dense']})",
                            "threads": args.threads},
               "weights_sha256": {DEFAULT_PSI: pretrained.manifest(DEFAULT_PSI)["sha256"]},
               "calibration_sha256": calibration_sha(), "layouts": rows,
               "speedup_channels_last": rows["contiguous"]["median"] / rows["channels_last"]["median"],
               "max_abs_difference": float((out["channels_last"] - out["contiguous"]).abs().max()),
               "command": shlex.join(["python", "benchmarks/posterior.py", *sys.argv[1:]])}
    print({k: round(v["median"], 2) for k, v in rows.items()}, "speed-up", round(payload["speedup_channels_last"], 3))
    common.save("posterior_speed", payload, args.out)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["validate", "calibrate", "test", "compare", "frame", "condition", "exact",
                                     "speed"])
    ap.add_argument("--isolated", type=int, default=None, help="isolated frames (exact 48, the others 16)")
    ap.add_argument("--dense", type=int, default=None,
                    help="dense frames (validate and frame 32, test and compare 100)")
    ap.add_argument("--samples-isolated", type=int, default=None, help="validate 16, test 32")
    ap.add_argument("--samples", type=int, default=None,
                    help="samples per frame (validate 8, test and compare 32: the default map)")
    ap.add_argument("--samples-small", type=int, default=8, help="test: also scored with the first K samples")
    ap.add_argument("--mcmc-iters", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calibration", type=int, default=240, help="calibration frames (training distribution)")
    ap.add_argument("--sparse", type=int, default=120, help=f"added calibration frames with {SPARSE_COUNT} emitters")
    ap.add_argument("--lone", type=int, default=120, help="added calibration frames with one emitter each")
    ap.add_argument("--full", action="store_true", help="calibrate: refit every class, keep no stored scales")
    ap.add_argument("--shift", type=int, default=40, help="frames per shift")
    ap.add_argument("--repeats", type=int, default=5, help="speed: timed calls per layout")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.dense is None:
        args.dense = 100 if args.what in ("test", "compare") else 32  # the test split is scored on more frames
    if args.isolated is None:
        args.isolated = 48 if args.what == "exact" else 16
    if args.samples is None:
        args.samples = 32 if args.what in ("test", "compare", "exact", "speed") else 8
    if args.samples_isolated is None:
        args.samples_isolated = 32 if args.what == "test" else 16
    return {"validate": validate, "calibrate": calibrate, "test": test, "compare": compare,
            "frame": frame, "condition": condition, "exact": exact, "speed": speed}[args.what](args)


if __name__ == "__main__":
    raise SystemExit(main())
