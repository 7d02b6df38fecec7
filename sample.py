"""
Sample Moving MNIST videos from a prompt with the Make-A-Video cascade.

    python sample.py --prompt "2 and four"       # base 16x32² -> interp 76x32² -> SR 76x64² -> output/2_and_four.gif
    python sample.py --prompt "1 and 3" --prompt "6 and two" --num-samples 2   # a grid + grid.txt
    python sample.py --prompt "2 and four" --stages base --out clip.mp4 --scale 4
    python sample.py --prompt "2 and four" --extend 16                         # 32 base frames, then the rest
    python sample.py --eval                        # judge scores of 100 videos, beside real clips and the image model
    python sample.py --eval interp                 # PSNR on held-out clips vs linear blending
    python sample.py --eval sr                     # PSNR on held-out clips vs bicubic

The model knows prompts of the form "<digit> and <digit>", each digit a
numeral or a word ("2 and four", "two and 4"). Other text still samples, with
a warning.
"""
import argparse
import json
import os
import re
import sys
import time

import torch
import torch.nn.functional as F
from einops import rearrange
from tqdm import tqdm

import mav

BASE_FPS = 8                                            # frames per second of a base-rate clip
STAGES = {"base": "video", "interp": "interp", "sr": "sr"}  # cascade stage -> checkpoint name
CHECKPOINT_OF = {**STAGES, "image": "image", "judge": "judge"}


def parse_args(argv=None):
    p = mav.ArgumentParser(description="Sample Moving MNIST videos from text with the Make-A-Video cascade.",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--prompt", action="append", default=None,
                   help='"<digit> and <digit>", e.g. "2 and four" (repeat for a grid; default "2 and four")')
    p.add_argument("--num-samples", type=int, default=None,
                   help="videos per prompt (default 1); --eval: clips scored (videos 100, interp / sr 32)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same file")
    p.add_argument("--stages", default=None,
                   help="comma-separated subset of base,interp,sr (default: every stage with a checkpoint)")
    p.add_argument("--steps", type=int, default=50, help="diffusion steps of the base model")
    p.add_argument("--interp-steps", type=int, default=20, help="diffusion steps of frame interpolation")
    p.add_argument("--sr-steps", type=int, default=20, help="diffusion steps of super-resolution")
    p.add_argument("--sampler", default="ddim", choices=["ddim", "ancestral"])
    p.add_argument("--guidance", type=float, default=3.0,
                   help="classifier-free guidance weight of the base model (1 = none); interp and SR run unguided")
    p.add_argument("--frames", type=int, default=16, help="frames the base model generates")
    p.add_argument("--extend", type=int, default=0, help="continue the base clip by N frames (needs interp)")
    p.add_argument("--sr", default="spacetime", choices=["spacetime", "framewise"],
                   help="space-time SR, or frame by frame from one shared noise (the paper's SR_h)")
    p.add_argument("--checkpoints", default="checkpoints", help="folder with video/interp/sr checkpoints")
    p.add_argument("--text-encoder", default=None, help="must match the checkpoints' (default: theirs)")
    p.add_argument("--out", default=None, help="output .gif or .mp4 (default output/<prompt>.gif)")
    p.add_argument("--scale", type=int, default=1, help="enlarge the written frames by this factor")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    p.add_argument("--eval", nargs="?", const="videos", default=None, choices=["videos", "interp", "sr"],
                   help="videos (the default): judge scores of the cascade's samples beside real held-out clips "
                        "and the image model frame by frame; interp / sr: PSNR on held-out clips beside a "
                        "simple baseline. Prints one JSON line")
    p.add_argument("--bench", action="store_true",
                   help="time the cascade for --num-samples prompts (default 16), per stage, and print one JSON line")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"], help="autocast precision of the networks")
    args = p.parse_args(argv)
    args.prompt = args.prompt or ["2 and four"]
    args.num_samples = args.num_samples if args.num_samples is not None else \
        (16 if args.bench else {None: 1, "videos": 100, "interp": 32, "sr": 32}[args.eval])
    for name in ("num_samples", "steps", "interp_steps", "sr_steps", "frames", "scale"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.guidance < 0:
        p.error("--guidance must be >= 0")
    if args.extend < 0:
        p.error("--extend must be >= 0")
    if args.stages is not None:
        args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = [s for s in args.stages if s not in STAGES]
        if unknown or not args.stages:
            p.error(f"--stages: unknown stage {unknown[0] if unknown else '(none)'!r}; choose from base,interp,sr")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available here")
    return args


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "empty"


def load(args, stage: str):
    """The checkpoint of a cascade stage, or a one-line error that says how to make it."""
    name = CHECKPOINT_OF[stage]
    try:
        return mav.load_checkpoint(args.checkpoints, name, args.device,
                                   text_encoder=None if stage == "judge" else args.text_encoder)
    except mav.CheckpointError as e:
        if not os.path.exists(os.path.join(args.checkpoints, name + ".json")):
            how = "--stage image && python train.py --stage video" if stage == "base" else f"--stage {name}"
            mav.die(f"{e}; train it with: python train.py {how}")
        mav.die(str(e))


def choose_stages(args) -> list[str]:
    if args.stages is not None:
        stages = [s for s in STAGES if s in args.stages]  # always in cascade order
    else:
        stages = ["base"] + [s for s in ("interp", "sr")
                             if os.path.exists(os.path.join(args.checkpoints, STAGES[s] + ".json"))]
    if args.extend and not os.path.exists(os.path.join(args.checkpoints, "interp.json")):
        mav.die(f"--extend continues clips with the interpolation network: no interp checkpoint in "
                f"{args.checkpoints}/; train it with: python train.py --stage interp")
    return stages


def progress(desc):
    return lambda steps: tqdm(steps, desc=desc, dynamic_ncols=True, leave=False)


def autocast(args):
    return torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.precision == "bf16")


def cascade(args, models, stages, text, null, g, quiet=False, timings=None):
    """base -> (extend) -> interp -> sr for the prompts of `text`. -> (x (n 1 f h w) in [-1, 1], fps).
    `timings`, if given, receives each stage's wall time in seconds."""
    n = len(text)
    common = dict(sampler=args.sampler, generator=g)
    bar = (lambda desc: None) if quiet else progress
    sync = torch.cuda.synchronize if torch.device(args.device).type == "cuda" else (lambda: None)
    clock = [time.perf_counter()]

    def done(stage):
        if timings is not None:
            sync()
            timings[stage] = round(time.perf_counter() - clock[0], 2)
            clock[0] = time.perf_counter()

    x = mav.sample(models["base"][0], (n, 1, args.frames, mav.BASE, mav.BASE), text, null, steps=args.steps,
                   guidance=args.guidance, fps=torch.ones(n, device=args.device),
                   progress=bar(f"base {args.frames}x{mav.BASE}²"), **common)
    done("base")
    fps = BASE_FPS
    if args.extend:
        x = mav.extend(models["interp"][0], x, args.extend, text, null, steps=args.interp_steps, guidance=1.0,
                       progress=bar(f"extend +{args.extend}"), **common)
        done("extend")
    if "interp" in stages:
        x = mav.interpolate(models["interp"][0], x, text, null, steps=args.interp_steps, guidance=1.0,
                            progress=bar(f"interp {x.shape[2]}->{(x.shape[2] - 1) * mav.INTERP_FACTOR + 1}"),
                            **common)
        fps *= mav.INTERP_FACTOR
        done("interp")
    if "sr" in stages:
        x = mav.super_resolve(models["sr"][0], x, text, null, framewise=args.sr == "framewise",
                              steps=args.sr_steps, guidance=1.0,
                              progress=bar(f"sr {mav.BASE}²->{mav.SR_SCALE * mav.BASE}² ({args.sr})"), **common)
        done("sr")
    return x.float(), fps


def bench(args):
    """Wall time of the cascade for N prompts with the chosen step counts, per stage (after one warm-up
    run of the same size), and the frames it generates per second."""
    stages = choose_stages(args)
    models = {s: load(args, s) for s in stages + (["interp"] if args.extend and "interp" not in stages else [])}
    cache = mav.TextCache.load_or_build(args.checkpoints, models["base"][1]["text_encoder"])
    n, g = args.num_samples, torch.Generator().manual_seed(args.seed)
    ids = mav.prompt_ids(torch.randint(10, (n, 2), generator=g), g)
    text, null = cache(ids).to(args.device), cache(torch.full((n,), mav.NULL_PROMPT)).to(args.device)
    timings = {}
    with autocast(args):
        if torch.device(args.device).type == "cuda":  # first-call costs (cuDNN autotuning...) are not timed
            cascade(args, models, stages, text[:1], null[:1], g, quiet=True)
        x, _ = cascade(args, models, stages, text, null, g, timings=timings)
    total = sum(timings.values())
    device = torch.cuda.get_device_name(args.device) if torch.device(args.device).type == "cuda" else \
        f"cpu ({torch.get_num_threads()} threads)"
    print(json.dumps({"bench": "sample", "device": device, "torch": torch.__version__, "prompts": n,
                      "stages": "+".join(stages), "steps": {"base": args.steps, "interp": args.interp_steps,
                                                            "sr": args.sr_steps},
                      "guidance": args.guidance, "precision": args.precision, "seconds": timings,
                      "total_s": round(total, 2), "frames_out": n * x.shape[2], "size": x.shape[-1],
                      "frames_per_s": round(n * x.shape[2] / total, 2)}))


def evaluate_videos(args):
    """Judge scores of the cascade's samples, beside real held-out clips (the ceiling) and the
    image model sampled frame by frame with independent noise (the baseline)."""
    stages = choose_stages(args)
    models = {s: load(args, s) for s in stages + (["interp"] if args.extend and "interp" not in stages else [])}
    judge = load(args, "judge")[0]
    n, dev, chunk = args.num_samples, args.device, 16
    g = torch.Generator().manual_seed(args.seed)
    labels = torch.randint(10, (n, 2), generator=g)
    ids = mav.prompt_ids(labels, g)
    cache = mav.TextCache.load_or_build(args.checkpoints, models["base"][1]["text_encoder"])
    text, null = cache(ids).to(dev), cache(torch.full((n,), mav.NULL_PROMPT)).to(dev)
    t0 = time.time()
    with autocast(args):
        made = [cascade(args, models, stages, text[i:i + chunk], null[i:i + chunk], g, quiet=True)
                for i in tqdm(range(0, n, chunk), desc=f"sampling {n} videos ({'+'.join(stages)})", leave=False)]
    fps = made[0][1]
    videos = torch.cat([mav.to_pixels(x)[:, 0] for x, _ in made]).cpu()
    seconds = time.time() - t0

    # real held-out clips at the same frame rate and size: the ceiling; another draw: the FD reference
    interp = "interp" in stages
    base_rate = lambda v: v[:, ::mav.INTERP_FACTOR] if interp else v  # temporal figures comparable across stages
    data = mav.MovingMNIST("test")

    def real(seed):
        v, lab = data.sample(n, frames=videos.shape[1], stride=1 / mav.INTERP_FACTOR if interp else 1.0,
                             generator=torch.Generator().manual_seed(seed))
        return (v if videos.shape[-1] == mav.CANVAS else mav.area_downsample(v))[:, 0], lab

    reference = base_rate(real(args.seed + 2)[0])
    _, ref_feats = judge.read(reference.reshape(-1, 1, *reference.shape[-2:]))
    score = lambda v, lab: mav.score_videos(judge, v, lab, ref_feats)[0]
    result = {"stages": "+".join(stages), "n": n, "frames": videos.shape[1], "size": videos.shape[-1],
              "steps": args.steps, "guidance": args.guidance, **score(base_rate(videos), labels)}
    if interp:  # the same figures at the full frame rate
        result["full_rate"] = score(videos, labels)
    ceiling, ceiling_labels = real(args.seed + 1)
    result["ceiling"] = score(base_rate(ceiling), ceiling_labels)
    if os.path.exists(os.path.join(args.checkpoints, "image.json")):  # 16 unrelated frames per "video"
        image_model, f = load(args, "image")[0], args.frames
        per_frame = lambda t: t[torch.arange(len(t)).repeat_interleave(f)]
        with autocast(args):
            frames = [mav.sample(image_model, (len(t) * f, 1, mav.BASE, mav.BASE), per_frame(t), per_frame(u),
                                 steps=args.steps, guidance=args.guidance, sampler=args.sampler, generator=g)
                      for t, u in ((text[i:i + chunk], null[i:i + chunk]) for i in range(0, n, chunk))]
        result["baseline"] = score(mav.to_pixels(torch.cat(frames).float()).view(n, f, mav.BASE, mav.BASE).cpu(),
                                   labels)
    result["seconds"] = round(seconds, 1)
    out = args.out or os.path.join("output", f"eval_{'_'.join(stages)}.gif")
    grid = videos[:16]
    mav.write_video(out, mav.video_grid(grid), fps=fps, scale=args.scale)
    with open(os.path.splitext(out)[0] + ".txt", "w") as fh:
        fh.write("\n".join(cache.prompts[i] for i in ids[:16].tolist()) + "\n")
    with open(os.path.splitext(out)[0] + ".json", "w") as fh:
        json.dump(result, fh, indent=2)
    print(json.dumps(result))


def in_chunks(fn, n: int, size: int, *tensors):
    """Run fn on slices of the batch (the first dim of every tensor and Text), then concatenate."""
    outs = []
    for i in range(0, n, size):
        outs.append(fn(*(t[i:i + size] for t in tensors)))
    return torch.cat(outs)


def evaluate(args):
    """PSNR of a stage on held-out clips against the truth, beside its simple baseline."""
    stage = args.eval
    model, meta = load(args, stage)
    cache = mav.TextCache.load_or_build(args.checkpoints, meta["text_encoder"])
    n, dev = args.num_samples, args.device
    g = torch.Generator().manual_seed(args.seed)
    data = mav.MovingMNIST("test")  # held-out digits only
    t0 = time.time()
    if stage == "interp":  # 76 true frames at 5x the rate; every 5th is given, 60 are made
        video, labels = data.sample(n, frames=(args.frames - 1) * mav.INTERP_FACTOR + 1,
                                    stride=1.0 / mav.INTERP_FACTOR, generator=g)
        truth = mav.to_model(mav.area_downsample(video)).to(dev)
        known = truth[:, :, ::mav.INTERP_FACTOR]
        text, null = cache(mav.prompt_ids(labels, g)).to(dev), cache(torch.full((n,), mav.NULL_PROMPT)).to(dev)
        made = in_chunks(lambda k, t, u: mav.interpolate(model, k, t, u, steps=args.interp_steps, guidance=1.0,
                                                         sampler=args.sampler, generator=g),
                         n, 8, known, text, null)
        baseline = mav.linear_blend(known)
        between = torch.arange(truth.shape[2]) % mav.INTERP_FACTOR != 0
        score = lambda x: mav.psnr(mav.to_pixels(x[:, :, between]).cpu(), mav.to_pixels(truth[:, :, between]).cpu())
        names = ("psnr", "psnr_linear_blend")
        extra = {"frames": int(truth.shape[2]), "in_between_frames": int(between.sum()), "steps": args.interp_steps}
    else:  # 64² truth, its 32² area-downsampled version in, 64² out
        video, labels = data.sample(n, frames=args.frames, generator=g)
        truth = mav.to_model(video).to(dev)
        low = mav.to_model(mav.area_downsample(video)).to(dev)
        text, null = cache(mav.prompt_ids(labels, g)).to(dev), cache(torch.full((n,), mav.NULL_PROMPT)).to(dev)
        made = in_chunks(lambda lo, t, u: mav.super_resolve(model, lo, t, u, framewise=args.sr == "framewise",
                                                            steps=args.sr_steps, guidance=1.0,
                                                            sampler=args.sampler, generator=g),
                         n, 4, low, text, null)
        f = low.shape[2]
        bicubic = F.interpolate(rearrange(low, 'b c f h w -> (b f) c h w'), scale_factor=mav.SR_SCALE,
                                mode="bicubic", align_corners=False)
        baseline = rearrange(bicubic, '(b f) c h w -> b c f h w', f=f).clamp(-1, 1)
        score = lambda x: mav.psnr(mav.to_pixels(x).cpu(), mav.to_pixels(truth).cpu())
        names = ("psnr", "psnr_bicubic")
        extra = {"frames": f, "mode": args.sr, "steps": args.sr_steps}
    result = {"eval": stage, "n": n, names[0]: round(score(made).mean().item(), 2),
              names[1]: round(score(baseline).mean().item(), 2), **extra, "preset": meta.get("preset"),
              "trained_steps": meta.get("step"), "seconds": round(time.time() - t0, 1)}
    print(json.dumps(result))


def main(argv=None):
    args = parse_args(argv)
    if args.bench:
        return bench(args)
    if args.eval == "videos":
        return evaluate_videos(args)
    if args.eval:
        return evaluate(args)
    stages = choose_stages(args)
    needed = stages + (["interp"] if args.extend and "interp" not in stages else [])
    models = {s: load(args, s) for s in needed}
    encoders = {meta["text_encoder"] for _, meta in models.values()}
    if len(encoders) > 1:
        mav.die(f"the checkpoints in {args.checkpoints}/ were trained with different text encoders: {sorted(encoders)}")
    for prompt in dict.fromkeys(args.prompt):
        if mav.parse_prompt(prompt) is None:
            print(f"warning: {prompt!r} is not of the form '<digit> and <digit>', the only text the model "
                  f"was trained on; sampling anyway", file=sys.stderr)

    prompts = [p for p in args.prompt for _ in range(args.num_samples)]
    cache = mav.TextCache.load_or_build(args.checkpoints, encoders.pop())
    text = cache.embed(prompts).to(args.device)
    null = cache.embed([""] * len(prompts)).to(args.device)
    g = torch.Generator().manual_seed(args.seed)
    with autocast(args):
        x, fps = cascade(args, models, stages, text, null, g)
    videos = mav.to_pixels(x)[:, 0].float().cpu()  # n f h w
    n = len(videos)

    distinct = list(dict.fromkeys(args.prompt))
    out = args.out or os.path.join("output", (slug(distinct[0]) if len(distinct) == 1 else "grid") + ".gif")
    mav.write_video(out, mav.video_grid(videos, pad=2 if n > 1 else 0), fps=fps, scale=args.scale)
    if n > 1:  # the prompts in grid order, row by row, like the seed's tables
        with open(os.path.splitext(out)[0] + ".txt", "w") as fh:
            fh.write("\n".join(prompts) + "\n")
    print(f"wrote {out} ({n} video{'s' if n > 1 else ''}, {videos.shape[1]} frames at "
          f"{videos.shape[2]}x{videos.shape[3]}, {fps} fps; stages {'+'.join(stages)})")


if __name__ == "__main__":
    main()
