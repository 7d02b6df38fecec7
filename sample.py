"""
Sample Moving MNIST videos from a prompt with the Make-A-Video cascade.

    python sample.py --prompt "2 and four"       # base 16x32² -> interp 76x32² -> SR 76x64² -> output/2_and_four.gif
    python sample.py --prompt "1 and 3" --prompt "6 and two" --num-samples 2   # a grid + grid.txt
    python sample.py --prompt "2 and four" --stages base --out clip.mp4 --scale 4
    python sample.py --prompt "2 and four" --extend 16                         # 32 base frames, then the rest
    python sample.py --eval                        # judge scores of 100 videos, beside real clips and the image model
    python sample.py --eval interp                 # PSNR on held-out clips vs linear blending
    python sample.py --eval sr                     # PSNR on held-out clips vs bicubic
    python sample.py --prompt "2 and four" --image start.png          # animate a picture (its first frame)
    python sample.py --prompt "2 and four" --between a.png b.png      # the motion from one picture to another
    python sample.py --prompt "2 and four" --variation clip.gif --strength 0.6   # a variation of a video
    python sample.py --stages image --prompt-file docs/image_prompts.txt --out grid.png  # the image model alone

The model knows prompts of the form "<digit> and <digit>", each digit a
numeral or a word ("2 and four", "two and 4"). Other text still samples, with
a warning.
"""
import json
import math
import os
import re
import sys
import time

import torch
import torch.nn.functional as F
from einops import rearrange
from tqdm import tqdm

import mav

CHECKPOINT_OF = {**mav.CASCADE, "image": "image", "judge": "judge"}  # what --stages and --eval name -> checkpoint
EVALS = ["videos", "interp", "sr", "animate", "between", "variation"]
# With --sampler dpm++: the judge's figures of DDIM at 50 / 20 / 10, measured on one GPU (docs/EVALUATION.md).
# The base needs 30: its videos at 20 read as well alone, but 2 points worse after interp and SR.
DEFAULT_STEPS = {"base": 30, "interp": 6, "sr": 3}


# Upper bounds of a request: beyond them a run takes hours or more memory than a laptop has.
LIMITS = {"steps": 1000, "interp_steps": 1000, "sr_steps": 1000, "frames": 64, "extend": 240, "scale": 16,
          "num_samples": 1024}


def parse_args(argv=None):
    """The request, checked and resolved (prompts, mode, stages, output path) before anything is loaded."""
    p = parser()
    args = p.parse_args(argv)
    check_request(p, args)
    args.device, args.precision, args.precision_why = mav.device_and_precision(args.device, args.precision, p.error)
    return args


def parser():
    p = mav.ArgumentParser(description="Sample Moving MNIST videos from text with the Make-A-Video cascade.",
                           formatter_class=mav.HelpFormatter)
    what = p.add_argument_group("what to make")
    what.add_argument("--prompt", action="append", default=None,
                      help='"<digit> and <digit>", e.g. "2 and four" (repeat for a grid; default "2 and four")')
    what.add_argument("--prompt-file", default=None,
                      help="prompts, one per line or separated by commas, added to --prompt's")
    what.add_argument("--num-samples", type=int, default=None,
                      help="videos per prompt (default 1); --eval: clips scored (interp / sr 32, the others 100)")
    what.add_argument("--seed", type=int, default=0, help="0 <= seed < 2^64; same seed, same file")
    what.add_argument("--out", default=None,
                      help="output .gif or .mp4 (.png for --stages image; default output/<prompt>.gif)")
    what.add_argument("--scale", type=int, default=1, help="enlarge the written frames by this factor")
    given = p.add_argument_group("from your pictures (each followed by the rest of the cascade)")
    given.add_argument("--image", default=None, metavar="PICTURE",
                       help="animate a picture (PNG/JPEG/GIF frame, any size): it is the first frame, the masked "
                            "network makes the rest with the prompt")
    given.add_argument("--between", nargs=2, default=None, metavar=("FIRST", "LAST"),
                       help="two pictures: the clip's first and last frames; the frames between are made")
    given.add_argument("--variation", default=None, metavar="VIDEO",
                       help="a video (GIF/MP4, >= 16 frames, >= 32x32; 16 frames evenly spaced over it are used) "
                            "noised to time --strength and denoised with the prompt")
    given.add_argument("--strength", type=float, default=None,
                       help="--variation: 0 < S <= 1, how far from the input (about 0 = the input, 1 = a fresh "
                            "sample; default 0.6)")
    add_cascade_arguments(p.add_argument_group("the cascade"))
    mav.add_device_arguments(p.add_argument_group("hardware"))
    measure = p.add_argument_group("measure instead of sampling")
    measure.add_argument("--eval", nargs="?", const="videos", default=None, choices=EVALS,
                         help="videos (the default): judge scores of the cascade's samples beside real held-out "
                              "clips and the image model frame by frame; interp / sr: PSNR on held-out clips beside "
                              "a simple baseline; animate / between / variation: the three modes above on held-out "
                              "clips, each beside a baseline. Prints one JSON line")
    measure.add_argument("--bench", action="store_true",
                         help="time the cascade for --num-samples prompts (default 16), per stage, and print one "
                              "JSON line")
    return p


def add_cascade_arguments(cascade):
    cascade.add_argument("--stages", default=None,
                         help="comma-separated subset of base,interp,sr (default: every stage with a checkpoint); "
                              "or image: single frames from the image model (a PNG)")
    cascade.add_argument("--steps", type=int, default=DEFAULT_STEPS["base"], help="diffusion steps of the base model")
    cascade.add_argument("--interp-steps", type=int, default=DEFAULT_STEPS["interp"],
                         help="diffusion steps of frame interpolation")
    cascade.add_argument("--sr-steps", type=int, default=DEFAULT_STEPS["sr"],
                         help="diffusion steps of super-resolution")
    cascade.add_argument("--sampler", default="dpm++", choices=["dpm++", "ddim", "ancestral"],
                         help="dpm++: DPM-Solver++(2M), second order; ddim: first order, needs more steps for the "
                              "same videos (50 for the default 30); ancestral: stochastic")
    cascade.add_argument("--guidance", type=float, default=None,
                         help="classifier-free guidance weight of the base model (1 = none); interp and SR run "
                              "unguided (default: the weight the checkpoint records, the laptop chain's 7; "
                              f"else {mav.GUIDANCE:g})")
    cascade.add_argument("--frames", type=int, default=mav.FRAMES, help="frames the base model generates")
    cascade.add_argument("--extend", type=int, default=0, help="continue the base clip by N frames (needs interp)")
    cascade.add_argument("--sr", default="spacetime", choices=["spacetime", "framewise"],
                         help="space-time SR, or frame by frame from one shared noise (the paper's SR_h)")
    cascade.add_argument("--checkpoints", default="checkpoints",
                         help="folder with video/interp/sr checkpoints (the shipped ones, or a train.py --out)")
    cascade.add_argument("--text-encoder", default=None, help="must match the checkpoints' (default: theirs)")


def read_prompt_file(p, path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            prompts = [q.strip() for line in fh for q in line.split(",") if q.strip()]
    except OSError as e:
        p.error(f"--prompt-file: cannot read {path} ({e.strerror})")
    except ValueError:
        p.error(f"--prompt-file: {path} is not UTF-8 text")
    if not prompts:
        p.error(f"--prompt-file: no prompts in {path}")
    return prompts


def check_request(p, args):
    """Every flag checked, and the request resolved, before anything is loaded: bad input is one line."""
    args.prompt = (args.prompt or []) + (read_prompt_file(p, args.prompt_file) if args.prompt_file else [])
    args.prompt = args.prompt or ["2 and four"]
    args.num_samples = args.num_samples if args.num_samples is not None else \
        (16 if args.bench else {None: 1, "videos": 100, "interp": 32, "sr": 32}.get(args.eval, 100))
    modes = [flag for flag in ("image", "between", "variation") if getattr(args, flag)]
    if len(modes) > 1:
        p.error(f"--{modes[0]} and --{modes[1]} are different modes: choose one")
    args.mode = modes[0] if modes else None  # from your pictures: image, between or variation
    if modes and (args.eval or args.bench):
        p.error(f"--{modes[0]} makes videos from your files; it does not combine with --eval or --bench")
    for path in [args.image, args.variation, *(args.between or [])]:
        if path and os.path.isdir(path):
            p.error(f"{path} is a folder; give a picture or video file")
    if args.strength is not None and not args.variation:
        p.error("--strength applies to --variation")
    args.strength = 0.6 if args.strength is None else args.strength
    if not 0 < args.strength <= 1:
        p.error(f"--strength must be in (0, 1], got {args.strength:g}")
    for name, limit in LIMITS.items():
        value, flag = getattr(args, name), "--" + name.replace("_", "-")
        if value < (0 if name == "extend" else 1):
            p.error(f"{flag} must be {'>= 0' if name == 'extend' else 'positive'}")
        if value > limit:
            p.error(f"{flag} {value} is over its limit of {limit} (hours of compute or too much memory)")
    if len(args.prompt) * args.num_samples > LIMITS["num_samples"]:
        p.error(f"{len(args.prompt)} prompts x {args.num_samples} samples is over the limit of "
                f"{LIMITS['num_samples']} videos")
    if args.guidance is not None and not (math.isfinite(args.guidance) and args.guidance >= 0):
        p.error("--guidance must be a number >= 0")
    if not 0 <= args.seed < 2 ** 64:
        p.error("--seed must be in 0 .. 2^64 - 1")
    check_stages(p, args)
    if args.guidance is None:  # the weight its trainer chose (train.py records it), else the common default
        stage = "image" if args.stages == ["image"] else "video"
        args.guidance = mav.checkpoint_meta(args.checkpoints, stage).get("guidance", mav.GUIDANCE)
        if type(args.guidance) not in (int, float) or not (math.isfinite(args.guidance) and args.guidance >= 0):
            p.error(f"{args.checkpoints}/{stage}.json records guidance {args.guidance!r}: not a number >= 0")
    check_out(p, args)


def check_stages(p, args):
    if args.stages is None:
        return
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in args.stages if s not in mav.CASCADE and s != "image"]
    if unknown or not args.stages:
        p.error(f"--stages: unknown stage {unknown[0] if unknown else '(none)'!r}; choose from base,interp,sr "
                f"(or image alone)")
    if "image" in args.stages and (len(args.stages) > 1 or args.mode or args.eval or args.bench or args.extend):
        p.error("--stages image samples single frames from the image model; it does not combine with "
                "other stages, --image/--between/--variation, --extend, --eval or --bench")
    if "image" not in args.stages and "base" not in args.stages and args.mode not in ("image", "between") \
            and args.eval in (None, "videos"):
        p.error(f"--stages {','.join(args.stages)}: the cascade starts from the base model's clip; add base "
                f"(e.g. --stages base,{args.stages[0]})")


def check_out(p, args):
    """The output file, chosen and checked for writing now, not after minutes of sampling."""
    if args.bench or (args.eval and args.eval != "videos"):
        return
    image = args.stages == ["image"]
    if args.out is None:
        distinct = list(dict.fromkeys(args.prompt))
        if args.eval:  # evaluate_videos names it after the stages it finds
            return
        name = slug(distinct[0]) if len(distinct) == 1 else "grid"
        args.out = os.path.join("output", name + (".png" if image else ".gif"))
    try:
        mav.check_output_path(args.out, mav.IMAGE_EXTS if image else mav.VIDEO_EXTS)
    except mav.InputError as e:
        p.error(str(e))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:60] or "empty"


SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints")


def load(args, stage: str):
    """The checkpoint of a cascade stage, or a one-line error that says how to make it. The judge is
    the shipped one where the folder has none of its own (a train.py run's folder, say)."""
    name = CHECKPOINT_OF[stage]
    folder = args.checkpoints
    if stage == "judge" and not os.path.exists(os.path.join(folder, "judge.json")):
        folder = SHIPPED
    try:
        return mav.load_checkpoint(folder, name, args.device,
                                   text_encoder=None if stage == "judge" else args.text_encoder)
    except mav.CheckpointError as e:
        if not os.path.exists(os.path.join(args.checkpoints, name + ".json")):
            how = "--stage image && python train.py --stage video" if stage == "base" else f"--stage {name}"
            mav.die(f"{e}; train it with: python train.py {how}")
        mav.die(str(e))


def choose_stages(args) -> list[str]:
    if args.stages is not None:
        stages = [s for s in mav.CASCADE if s in args.stages]  # always in cascade order
    else:
        stages = ["base"] + [s for s in ("interp", "sr")
                             if os.path.exists(os.path.join(args.checkpoints, mav.CASCADE[s] + ".json"))]
    masked = ["--extend"] * bool(args.extend) + [f"--{args.mode}"] * (args.mode in ("image", "between"))
    if masked and not os.path.exists(os.path.join(args.checkpoints, "interp.json")):
        mav.die(f"{masked[0]} makes frames with the masked interpolation network: no interp checkpoint in "
                f"{args.checkpoints}/; train it with: python train.py --stage interp")
    return stages


def needed_models(args, stages) -> list[str]:
    """The checkpoints a run loads: its stages, plus the masked network for --extend / --image / --between
    (which then makes the base clip, so the base video model is not needed)."""
    animated = args.mode in ("image", "between")
    names = [s for s in stages if not (s == "base" and animated)]
    if (args.extend or animated) and "interp" not in names:
        names.append("interp")
    return names


def progress(desc):
    return lambda steps: tqdm(steps, desc=desc, dynamic_ncols=True, leave=False)


def autocast(args):
    return mav.autocast(torch.device(args.device), args.precision)


def cascade(args, models, stages, text, null, g, quiet=False, timings=None, given=None):
    """base -> (extend) -> interp -> sr for the prompts of `text`. -> (x (n 1 f h w) in [-1, 1], fps).
    `timings`, if given, receives each stage's wall time in seconds. `given` replaces the base model's
    sample from noise: {"first": (n 1 h w)[, "last": ...]} animates with the masked network (--image,
    --between), {"video": (n 1 f h w)} is a video to vary (--variation, at args.strength)."""
    n = len(text)
    common = dict(sampler=args.sampler, generator=g)
    bar = (lambda desc: None) if quiet else progress
    clock = [time.perf_counter()]

    def done(stage):
        if timings is not None:
            mav.synchronize(torch.device(args.device))
            timings[stage] = round(time.perf_counter() - clock[0], 2)
            clock[0] = time.perf_counter()

    base_sampling = dict(steps=args.steps, guidance=args.guidance, progress=bar(f"base {args.frames}x{mav.BASE}²"),
                         **common)
    if given and "first" in given:  # the masked network, first (and last) frame known
        x = mav.animate(models["interp"][0], given["first"], text, null, frames=args.frames, last=given.get("last"),
                        **base_sampling)
    else:  # from noise, or (SDEdit) from the given video noised to t = strength
        init = given["video"] if given else None
        x = mav.sample(models["base"][0], (n, 1, args.frames, mav.BASE, mav.BASE), text, null,
                       stride=torch.ones(n, device=args.device), init=init, strength=args.strength, **base_sampling)
    done("base")
    fps = mav.BASE_FPS
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


def read_pictures(args, n: int) -> dict | None:
    """The files of --image / --between / --variation, made like the training frames (32², [-1, 1]) and
    repeated for the n videos -> `given` for cascade(), or None. Unusable files: one line, exit 2."""
    if args.mode is None:
        return None
    to_batch = lambda frames: mav.to_model(frames).to(args.device).expand(n, *frames.shape)
    try:
        if args.variation:
            frames = mav.read_frames(args.variation)
            if len(frames) < args.frames:
                mav.die(f"{args.variation} has {len(frames)} frame{'s' * (len(frames) != 1)}; --variation needs "
                        f"at least {args.frames}")
            if min(frames.shape[-2:]) < mav.BASE:
                mav.die(f"{args.variation} is {frames.shape[-1]}x{frames.shape[-2]}; --variation needs at least "
                        f"{mav.BASE}x{mav.BASE}")
            frames = frames[torch.linspace(0, len(frames) - 1, args.frames).round().long()]  # evenly spaced
            pictures = {"video": frames}
        else:
            paths = [args.image] if args.image else args.between
            pictures = dict(zip(["first", "last"], (mav.read_frames(path)[:1] for path in paths)))
    except mav.InputError as e:
        mav.die(str(e))
    for name, frames in pictures.items():
        why = mav.unlike_training_frames(frames)
        if why:
            what = "the video" if name == "video" else f"the {name} picture"
            print(f"warning: {what} does not look like the training data ({why}); running anyway", file=sys.stderr)
    fitted = {name: mav.fit_frames(frames) for name, frames in pictures.items()}  # f 32 32
    if "video" in fitted:
        return {"video": to_batch(fitted["video"][None])}                         # n 1 f 32 32
    return {name: to_batch(frames) for name, frames in fitted.items()}              # n 1 32 32


def sample_images(args, text, null, g, prompts):
    """--stages image: one frame per prompt from the text-to-image model -> a PNG grid (and its prompt list)."""
    model = load(args, "image")[0]
    with autocast(args):
        x = mav.sample(model, (len(prompts), 1, mav.BASE, mav.BASE), text, null, steps=args.steps,
                       guidance=args.guidance, sampler=args.sampler, generator=g,
                       progress=progress(f"image {len(prompts)}x{mav.BASE}²"))
    images = mav.to_pixels(x.float()).cpu()  # n 1 h w: one-frame videos
    out = args.out
    cols = 8 if len(images) % 8 == 0 and len(images) >= 16 else None
    mav.write_video(out, mav.video_grid(images, pad=2 if len(images) > 1 else 0, cols=cols), fps=1,
                    scale=args.scale)
    if len(images) > 1:
        with open(os.path.splitext(out)[0] + ".txt", "w") as fh:
            fh.write("\n".join(prompts) + "\n")
    print(f"wrote {out} ({len(images)} image{'s' * (len(images) > 1)} at {mav.BASE}x{mav.BASE}; image model)")


def main(argv=None):
    args = parse_args(argv)
    print(f"device: {args.device}, precision: {args.precision} ({args.precision_why})")
    try:
        return run(args)
    except KeyboardInterrupt:  # Ctrl-C: no traceback, and no half-written file (write_video renames at the end)
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def run(args):
    """The request, after parse_args: a measurement, an image grid, or videos through the cascade."""
    if args.bench:
        return bench(args)
    if args.eval == "videos":
        return evaluate_videos(args)
    if args.eval in ("animate", "between", "variation"):
        return evaluate_modes(args)
    if args.eval:
        return evaluate(args)
    stages = ["image"] if args.stages == ["image"] else choose_stages(args)
    models = {s: load(args, s) for s in needed_models(args, stages)}
    encoders = {meta["text_encoder"] for _, meta in models.values()}
    if len(encoders) > 1:
        mav.die(f"the checkpoints in {args.checkpoints}/ were trained with different text encoders: {sorted(encoders)}")
    for prompt in dict.fromkeys(args.prompt):
        if mav.parse_prompt(prompt) is None:
            print(f"warning: {prompt!r} is not of the form '<digit> and <digit>', the only text the model "
                  f"was trained on; sampling anyway", file=sys.stderr)

    prompts = [p for p in args.prompt for _ in range(args.num_samples)]
    given = read_pictures(args, len(prompts))
    cache = mav.TextCache.load_or_build(args.checkpoints, encoders.pop())
    text = cache.embed(prompts).to(args.device)
    null = cache.embed([""] * len(prompts)).to(args.device)
    g = torch.Generator().manual_seed(args.seed)
    if stages == ["image"]:
        return sample_images(args, text, null, g, prompts)
    with autocast(args):
        x, fps = cascade(args, models, stages, text, null, g, given=given)
    videos = mav.to_pixels(x)[:, 0].float().cpu()  # n f h w
    n = len(videos)
    out = args.out
    mav.write_video(out, mav.video_grid(videos, pad=2 if n > 1 else 0), fps=fps, scale=args.scale)
    if n > 1:  # the prompts in grid order, row by row
        with open(os.path.splitext(out)[0] + ".txt", "w") as fh:
            fh.write("\n".join(prompts) + "\n")
    how = {"image": " from --image", "between": " from --between",
           "variation": f" (variation, strength {args.strength:g})"}.get(args.mode, "")
    print(f"wrote {out} ({n} video{'s' if n > 1 else ''}{how}, {videos.shape[1]} frames at "
          f"{videos.shape[2]}x{videos.shape[3]}, {fps} fps; stages {'+'.join(stages)})")



# --- measuring: --bench and --eval --------------------------------------------------------------
# A harness around the cascade above, kept apart from it: the same models and cascade(), timed
# (--bench) or scored on seeded prompts and held-out clips beside a ceiling and a baseline (--eval).

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
        if torch.device(args.device).type != "cpu":  # first-call costs (cuDNN autotuning...) are not timed
            cascade(args, models, stages, text[:1], null[:1], g, quiet=True)
        x, _ = cascade(args, models, stages, text, null, g, timings=timings)
    total = sum(timings.values())
    device = mav.device_name(torch.device(args.device))
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


def evaluate_modes(args):
    """--eval animate | between | variation on real held-out clips (base rate, 32²), each beside a baseline:
      animate    the first frame of a clip + its prompt -> judge scores and motion (mean |frame t+1 - frame t|),
                 beside the real clips and the first frame held still
      between    its first and last frames -> PSNR of the made middle frames against the true ones,
                 beside a linear cross-fade of the two ends
      variation  the clip with a prompt naming other digits, at strength 0.4 / 0.6 / 0.8 / 1 -> adherence to
                 the new prompt, to the clip's own digits, and PSNR to the input: the trade-off, row by row"""
    mode = args.eval
    model, meta = load(args, "base" if mode == "variation" else "interp")
    judge = load(args, "judge")[0]
    cache = mav.TextCache.load_or_build(args.checkpoints, meta["text_encoder"])
    n, dev, f = args.num_samples, args.device, args.frames
    g = torch.Generator().manual_seed(args.seed)
    video, labels = mav.MovingMNIST("test").sample(n, frames=f, generator=g)  # held-out digits only
    real = mav.to_model(mav.area_downsample(video)).to(dev)                  # n 1 f 32 32
    null = cache(torch.full((n,), mav.NULL_PROMPT)).to(dev)
    pixels = lambda x: mav.to_pixels(x.float())[:, 0].cpu()                 # n f h w in [0, 1]
    fp32 = lambda: torch.autocast(torch.device(dev).type, enabled=False)  # the judge reads as in --eval videos

    def score(x, lab):
        with fp32():
            return mav.score_videos(judge, pixels(x), lab)[0]
    psnr = lambda x, y: round(mav.psnr(pixels(x), pixels(y)).mean().item(), 2)
    kw = dict(steps=args.steps, guidance=args.guidance, sampler=args.sampler, generator=g)
    t0 = time.time()
    result = {"eval": mode, "n": n, "frames": f, "steps": args.steps, "guidance": args.guidance}
    with autocast(args):
        if mode == "animate":
            text = cache(mav.prompt_ids(labels, g)).to(dev)
            made = in_chunks(lambda first, t, u: mav.animate(model, first, t, u, frames=f, **kw),
                             n, 16, real[:, :, 0], text, null)
            result.update(animated=score(made, labels), real=score(real, labels),
                          still=score(real[:, :, :1].expand_as(real), labels))
        elif mode == "between":
            text = cache(mav.prompt_ids(labels, g)).to(dev)
            made = in_chunks(lambda first, last, t, u: mav.animate(model, first, t, u, frames=f, last=last, **kw),
                             n, 16, real[:, :, 0], real[:, :, -1], text, null)
            w = torch.linspace(0, 1, f, device=dev).view(1, 1, f, 1, 1)
            blend = real[:, :, :1] * (1 - w) + real[:, :, -1:] * w
            middle = slice(1, f - 1)
            per_frame = lambda x: [psnr(x[:, :, i:i + 1], real[:, :, i:i + 1]) for i in range(1, f - 1)]
            result.update(psnr=psnr(made[:, :, middle], real[:, :, middle]),
                          psnr_linear_blend=psnr(blend[:, :, middle], real[:, :, middle]),
                          psnr_per_frame=per_frame(made), psnr_linear_blend_per_frame=per_frame(blend),
                          made=score(made, labels), real=score(real, labels))
        elif mode == "variation":
            result["rows"] = variation_rows(model, cache, real, labels, null, score, psnr, g, **kw)
    result.update(preset=meta.get("preset"), trained_steps=meta.get("step"), seconds=round(time.time() - t0, 1))
    print(json.dumps(result))


def variation_rows(model, cache, real, labels, null, score, psnr, g, **kw) -> list[dict]:
    """--eval variation: each clip with a prompt naming another pair of digits than its own (so following
    the prompt means changing the clip), at strength 0 (the input) / 0.4 / 0.6 / 0.8 / 1 (a fresh sample)."""
    n = len(real)
    shift = torch.randint(1, len(mav.PAIRS), (n,), generator=g)
    other = torch.tensor(mav.PAIRS)[(mav.pair_index(labels) + shift) % len(mav.PAIRS)]
    text = cache(mav.prompt_ids(other, g)).to(real.device)
    stride = torch.ones(n, device=real.device)
    rows = [{"strength": 0.0, "adherence_new_prompt": score(real, other)["adherence"],
             "adherence_own_digits": score(real, labels)["adherence"], "psnr_to_input": None}]
    for strength in (0.4, 0.6, 0.8, 1.0):
        made = in_chunks(lambda x, t, u, r: mav.sample(model, x.shape, t, u, init=x, strength=strength,
                                                       stride=r, **kw), n, 16, real, text, null, stride)
        new, own = score(made, other), score(made, labels)
        rows.append({"strength": strength, "adherence_new_prompt": new["adherence"],
                     "adherence_own_digits": own["adherence"], "psnr_to_input": psnr(made, real),
                     "switch_rate": new["switch_rate"], "motion": new["motion"]})
    return rows

if __name__ == "__main__":
    main()
