"""
Time the training step of a stage, or the cascade; print one JSON line.

    python bench.py train --stage video --preset base           # fast path beside the plain path, MFU on a GPU
    python bench.py train --stage video --preset base --compile  # the same through torch.compile
    python bench.py sample                                       # the cascade for 16 prompts, stage by stage

`train` builds the stage's network with fresh weights, runs 3 warm-up steps and --steps timed ones on the
fast path (autocast where native, fused AdamW, SDPA, optionally torch.compile), then the same on the plain
path (fp32, eager, unfused AdamW), in one process: their ratio is measured on one machine in one run.
On CUDA it also prints where the GPU time goes (torch.profiler). BENCHMARKS.md has every figure.
"""
import json
import resource
import sys
import time

import torch
from tqdm import tqdm

import cli
import judge
import mav
import pipeline
import train
import train_setup

# Dense bf16 peak of the accelerators MFU is quoted against (FLOP/s), by a part of their name.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def device_name(device: torch.device) -> str:
    """What a benchmark ran on: the GPU's name, or the CPU and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)" if device.type == "cpu" else device.type


def synchronize(device: torch.device):
    """Wait for the device's queued work (for honest timings); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def parse_args(argv=None):
    p = cli.ArgumentParser(description="Time a training step, or the cascade.", formatter_class=cli.HelpFormatter)
    what = p.add_subparsers(dest="what", required=True)
    t = what.add_parser("train", help="a stage's training step", formatter_class=cli.HelpFormatter)
    t.add_argument("--stage", required=True, choices=train_setup.TRAINABLE)
    t.add_argument("--preset", default="cpu", choices=list(mav.PRESETS))
    t.add_argument("--recipe", nargs="+", action="extend", default=[], metavar="FIELD=VALUE",
                   help="the stage's recipe, changed as in train.py (batch, frames, joint_images matter here)")
    t.add_argument("--model", nargs="+", action="extend", default=[], metavar="FIELD=VALUE",
                   help="the network's temporal switches, as in train.py (e.g. temporal_attention=0)")
    t.add_argument("--steps", type=int, default=10, help="timed steps")
    t.add_argument("--compile", nargs="?", const="default", default=None,
                   choices=["default", "reduce-overhead", "max-autotune"], help="torch.compile the fast path")
    s = what.add_parser("sample", help="the cascade, stage by stage", formatter_class=cli.HelpFormatter)
    s.add_argument("--num-samples", type=int, default=16, help="prompts, drawn at random")
    s.add_argument("--seed", type=int, default=0)
    cli.add_cascade_arguments(s.add_argument_group("the cascade"), stages_help="comma-separated subset of "
                              "video,interp,sr (default: every stage with a checkpoint)")
    for parser in (t, s):
        cli.add_device_arguments(parser.add_argument_group("hardware"))
    args = p.parse_args(argv)
    if args.what == "train":
        args.recipe = train_setup.recipe_of(t, args.stage, args.recipe)
        args.model = train_setup.model_changes(t, args.stage, args.model)
        if not 1 <= args.steps <= 10_000:
            t.error(f"--steps must be in 1 .. 10000 (timed steps), got {args.steps}")
    else:
        cli.check_cascade(s, args, image_alone=False)
    args.device, args.precision, args.precision_why = cli.device_and_precision(args.device, args.precision, p.error)
    if args.what == "train":
        train_setup.check_memory(t, args.stage, args.preset, args.recipe, args.model, args.device)
    return args


def time_steps(args, device, fast: bool, cache):
    """Seconds per training step of fresh weights (after 3 warm-up steps); the FLOPs of one (fast path), the
    peak memory, the parameter count, and a function that takes one more step."""
    from torch.utils.flop_counter import FlopCounterMode
    torch.manual_seed(0)
    model = judge.Judge(judge.JudgeConfig()) if args.stage == "judge" else \
        mav.UNet(mav.stage_config(args.stage, args.preset, changes=args.model))
    step_loss, one_step = train.fresh_steps(model, args.stage, args.recipe, cache, device, args.precision,
                                            plain=not fast)
    run = train.compiled(step_loss, args.compile) if fast and args.compile else step_loss
    flops = None
    if fast:  # counted on one eager step (the compiled graph does the same arithmetic)
        with FlopCounterMode(display=False) as counter:
            one_step(step_loss)
        flops = counter.get_total_flops()
    for _ in range(3):
        one_step(run)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in tqdm(range(args.steps), desc=f"bench {'fast' if fast else 'plain'}", leave=False):
        one_step(run)
    synchronize(device)
    step_s = (time.perf_counter() - t0) / args.steps
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2 ** 30
    return step_s, flops, peak, sum(p.numel() for p in model.parameters()), lambda: one_step(run)


def bench_train(args):
    """Training speed of a stage: the fast path beside the plain path, in one process."""
    device = torch.device(args.device)
    cache = None if args.stage == "judge" else pipeline.load_text_cache(cli.SHIPPED, write=False).to(device)
    step_s, flops, peak, params, fast_step = time_steps(args, device, True, cache)
    plain_s = time_steps(args, device, False, cache)[0]
    r, name = args.recipe, device_name(device)
    peak_flops = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
    achieved = flops / step_s
    print(json.dumps({
        "bench": "train", "stage": args.stage, "preset": args.preset, "device": name, "torch": torch.__version__,
        "params": params, "batch": r.batch, "joint_images": r.joint_images, "precision": args.precision,
        "compile": args.compile, "step_s": round(step_s, 4), "samples_per_s": round((r.batch + r.joint_images)
                                                                                    / step_s, 1),
        "frames_per_s": round((r.batch * r.frames + r.joint_images) / step_s, 1), "peak_mem_gib": round(peak, 2),
        "flops_per_step": flops, "achieved_tflops": round(achieved / 1e12, 3),
        "peak_tflops": peak_flops and peak_flops / 1e12, "mfu": peak_flops and round(achieved / peak_flops, 4),
        "plain_step_s": round(plain_s, 4), "speedup_vs_plain": round(plain_s / step_s, 2)}))
    if device.type == "cuda":  # where the time goes: the top kernels of a few fast steps, for BENCHMARKS.md
        print(profile_table(fast_step), file=sys.stderr)


def profile_table(step, steps: int = 3) -> str:
    """torch.profiler over a few CUDA training steps -> the GPU's busy share of the wall time and the
    kernels that take most of it: whether a step is bound by its arithmetic or by launching kernels."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    averages = prof.key_averages()
    kernels = [e for e in averages if str(e.device_type).endswith("CUDA")]
    busy = sum(e.self_device_time_total for e in kernels) / 1e6  # µs -> s
    launches = sum(e.count for e in kernels) / steps
    head = (f"profile: GPU busy {busy / wall:.0%} of {wall / steps * 1e3:.1f} ms per step, "
            f"{launches:.0f} kernels per step")
    return head + "\n" + averages.table(sort_by="self_device_time_total", row_limit=12)


def bench_sample(args):
    """Wall time of the cascade for N prompts with the chosen step counts, per stage (after one warm-up
    run of the same size off the CPU), and the frames it generates per second."""
    device = torch.device(args.device)
    stages = cli.choose_stages(args)
    run = cli.cascade(args, cli.load_models(args, stages), stages)
    cache = run.cache
    n, g = args.num_samples, torch.Generator().manual_seed(args.seed)
    ids = mav.prompt_ids(torch.randint(10, (n, 2), generator=g), g)
    text, null = cache(ids).to(device), cache(torch.full((n,), mav.NULL_PROMPT)).to(device)
    timings, clock = {}, [time.perf_counter()]

    def done(stage):
        synchronize(device)
        timings[stage] = round(time.perf_counter() - clock[0], 2)
        clock[0] = time.perf_counter()
    with cli.autocast(device, args.precision):
        if device.type != "cpu":  # first-call costs (cuDNN autotuning...) are not timed
            run.generate(text[:1], null[:1], g, **cli.cascade_options(args, quiet=True))
        clock[0] = time.perf_counter()
        x, _ = run.generate(text, null, g, **cli.cascade_options(args), done=done)
    total = sum(timings.values())
    print(json.dumps({"bench": "sample", "device": device_name(device), "torch": torch.__version__, "prompts": n,
                      "stages": "+".join(stages), "steps": {"video": args.steps, "interp": args.interp_steps,
                                                            "sr": args.sr_steps},
                      "guidance": args.guidance, "image_expert": run.effective_image_expert(args.image_expert),
                      "precision": args.precision, "seconds": timings,
                      "total_s": round(total, 2), "frames_out": n * x.shape[2], "size": x.shape[-1],
                      "frames_per_s": round(n * x.shape[2] / total, 2)}))


def main(argv=None):
    args = parse_args(argv)
    print(f"device: {args.device}, precision: {args.precision} ({args.precision_why})")
    return bench_train(args) if args.what == "train" else bench_sample(args)


if __name__ == "__main__":
    main()
