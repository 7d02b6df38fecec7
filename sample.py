"""
Sample Moving MNIST videos from a prompt with the Make-A-Video cascade.

    python sample.py --prompt "2 and four"       # base 16x32² -> interp 76x32² -> SR 76x64² -> output/2_and_four.gif
    python sample.py --prompt "1 and 3" --prompt "6 and two" --num-samples 2   # a grid + grid.txt
    python sample.py --prompt "2 and four" --stages base --out clip.mp4 --scale 4
    python sample.py --prompt "2 and four" --extend 16                         # 32 base frames, then the rest
    python sample.py --prompt "2 and four" --image start.png          # animate a picture (its first frame)
    python sample.py --prompt "2 and four" --between a.png b.png      # the motion from one picture to another
    python sample.py --prompt "2 and four" --variation clip.gif --strength 0.6   # a variation of a video
    python sample.py --stages image --prompt-file docs/image_prompts.txt --out grid.png  # the image model alone

The model knows prompts of the form "<digit> and <digit>", each digit a
numeral or a word ("2 and four", "two and 4"). Other text still samples, with
a warning. evaluate.py scores the cascade, bench.py times it.
"""
import math
import os
import re
import sys

import torch
from tqdm import tqdm

import cli
import mav

CHECKPOINT_OF = {**mav.CASCADE, "image": "image"}  # what --stages names -> checkpoint
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints")

# Upper bounds of a request: beyond them a run takes hours or more memory than a laptop has.
LIMITS = {"steps": 1000, "interp_steps": 1000, "sr_steps": 1000, "frames": 64, "extend": 240, "scale": 16,
          "num_samples": 1024}


def parse_args(argv=None):
    """The request, checked and resolved (prompts, mode, stages, output path) before anything is loaded."""
    p = parser()
    args = p.parse_args(argv)
    check_request(p, args)
    args.device, args.precision, args.precision_why = cli.device_and_precision(args.device, args.precision, p.error)
    return args


def parser():
    p = cli.ArgumentParser(description="Sample Moving MNIST videos from text with the Make-A-Video cascade.",
                           formatter_class=cli.HelpFormatter)
    what = p.add_argument_group("what to make")
    what.add_argument("--prompt", action="append", default=None,
                      help='"<digit> and <digit>", e.g. "2 and four" (repeat for a grid; default "2 and four")')
    what.add_argument("--prompt-file", default=None,
                      help="prompts, one per line or separated by commas, added to --prompt's")
    what.add_argument("--num-samples", type=int, default=1, help="videos per prompt")
    what.add_argument("--seed", type=int, default=0, help="0 <= seed < 2^63; same seed, same file")
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
    cli.add_device_arguments(p.add_argument_group("hardware"))
    return p


def add_cascade_arguments(cascade, stages_help="comma-separated subset of base,interp,sr (default: every stage "
                                               "with a checkpoint); or image: single frames from the image model"):
    """The cascade's flags, the same in sample.py, evaluate.py and bench.py (which make no video from pictures:
    their mode is None)."""
    cascade.set_defaults(mode=None)
    cascade.add_argument("--checkpoints", default="checkpoints",
                         help="folder with the stages' checkpoints (the shipped ones, or a train.py --out)")
    cascade.add_argument("--stages", default=None, help=stages_help)
    cascade.add_argument("--steps", type=int, nargs="+", default=None, metavar="N",
                         help="diffusion steps of the base model, then (optional) of interpolation and of "
                              "super-resolution (default " + " ".join(map(str, mav.STEPS.values())) + ")")
    cascade.add_argument("--sampler", default=mav.SAMPLER, choices=list(mav.SAMPLERS),
                         help="dpm++: DPM-Solver++(2M), second order; ddim: first order, needs more steps for the "
                              "same videos; ancestral: stochastic")
    cascade.add_argument("--guidance", type=float, default=None,
                         help="classifier-free guidance weight of the base model (1 = none); interp and SR run "
                              "unguided (default: the weight the checkpoint records, the laptop chain's 7; "
                              f"else {mav.GUIDANCE:g})")
    cascade.add_argument("--frames", type=int, default=mav.FRAMES, help="frames the base model generates")
    cascade.add_argument("--extend", type=int, default=0, help="continue the base clip by N frames (needs interp)")
    cascade.add_argument("--sr", default="spacetime", choices=["spacetime", "framewise"],
                         help="space-time SR, or frame by frame from one shared noise (the paper's SR_h)")


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
    modes = [flag for flag in ("image", "between", "variation") if getattr(args, flag)]
    if len(modes) > 1:
        p.error(f"--{modes[0]} and --{modes[1]} are different modes: choose one")
    args.mode = modes[0] if modes else None  # from your pictures: image, between or variation
    for path in [args.image, args.variation, *(args.between or [])]:
        if path and os.path.isdir(path):
            p.error(f"{path} is a folder; give a picture or video file")
    if args.strength is not None and not args.variation:
        p.error("--strength applies to --variation")
    args.strength = 0.6 if args.strength is None else args.strength
    if not 0 < args.strength <= 1:
        p.error(f"--strength must be in (0, 1], got {args.strength:g}")
    check_cascade(p, args)
    if len(args.prompt) * args.num_samples > LIMITS["num_samples"]:
        p.error(f"{len(args.prompt)} prompts x {args.num_samples} samples is over the limit of "
                f"{LIMITS['num_samples']} videos")
    check_out(p, args)


def check_cascade(p, args, needs_base: bool = True):
    """The cascade's flags (steps, limits, seed, stages, guidance), checked and resolved."""
    steps = args.steps or []
    if len(steps) > 3:
        p.error("--steps takes at most 3 numbers: base, interpolation, super-resolution")
    args.steps, args.interp_steps, args.sr_steps = [*steps, *list(mav.STEPS.values())[len(steps):]]
    for name, limit in LIMITS.items():
        value, flag = getattr(args, name, 1), "--steps" if name.endswith("steps") else "--" + name.replace("_", "-")
        if value < (0 if name == "extend" else 1):
            p.error(f"{flag} must be {'>= 0' if name == 'extend' else 'positive'}")
        if value > limit:
            p.error(f"{flag} {value} is over its limit of {limit} (hours of compute or too much memory)")
    if args.guidance is not None and not guidance_in_range(args.guidance):
        p.error(f"--guidance must be a number in {GUIDANCE_RANGE}, got {args.guidance:g}")
    cli.check_seed(args.seed, p.error)
    check_stages(p, args, needs_base)
    if args.guidance is None:  # the weight its trainer chose (train.py records it), else the common default
        stage = "image" if args.stages == ["image"] else "video"
        args.guidance = mav.checkpoint_meta(args.checkpoints, stage).get("guidance", mav.GUIDANCE)
        if not guidance_in_range(args.guidance):
            p.error(f"{args.checkpoints}/{stage}.json records guidance {args.guidance!r}: not a number in "
                    f"{GUIDANCE_RANGE}")


GUIDANCE_RANGE = "{:g} .. {:g}".format(*mav.RECIPE_RANGES["guidance"][:2])


def guidance_in_range(w) -> bool:
    low, high, _ = mav.RECIPE_RANGES["guidance"]  # the one range: what a recipe may record
    return type(w) in (int, float) and math.isfinite(w) and low <= w <= high


def check_stages(p, args, needs_base: bool):
    if args.stages is None:
        return
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in args.stages if s not in mav.CASCADE and s != "image"]
    if unknown or not args.stages:
        p.error(f"--stages: unknown stage {unknown[0] if unknown else '(none)'!r}; choose from base,interp,sr "
                f"(or image alone)")
    if "image" in args.stages and (len(args.stages) > 1 or args.mode or args.extend):
        p.error("--stages image samples single frames from the image model; it does not combine with "
                "other stages, --image/--between/--variation or --extend")
    if needs_base and "image" not in args.stages and "base" not in args.stages \
            and args.mode not in ("image", "between"):
        p.error(f"--stages {','.join(args.stages)}: the cascade starts from the base model's clip; add base "
                f"(e.g. --stages base,{args.stages[0]})")


def check_out(p, args):
    """The output file, chosen and checked for writing now, not after minutes of sampling."""
    image = args.stages == ["image"]
    if args.out is None:
        distinct = list(dict.fromkeys(args.prompt))
        name = slug(distinct[0]) if len(distinct) == 1 else "grid"
        args.out = os.path.join("output", name + (".png" if image else ".gif"))
    try:
        cli.check_output_path(args.out, cli.IMAGE_EXTS if image else cli.VIDEO_EXTS)
    except cli.InputError as e:
        p.error(str(e))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:60] or "empty"


# --- the models, and the cascade -------------------------------------------------------------

def load(args, stage: str):
    """The checkpoint of a cascade stage, or a one-line error that says how to make it."""
    name = CHECKPOINT_OF[stage]
    try:
        return mav.load_checkpoint(args.checkpoints, name, args.device)
    except mav.CheckpointError as e:
        if not os.path.exists(os.path.join(args.checkpoints, name + ".json")):
            how = "--stage image && python train.py --stage video" if stage == "base" else f"--stage {name}"
            cli.die(f"{e}; train it with: python train.py {how}")
        cli.die(str(e))


def choose_stages(args) -> list[str]:
    if args.stages is not None:
        stages = [s for s in mav.CASCADE if s in args.stages]  # always in cascade order
    else:
        stages = ["base"] + [s for s in ("interp", "sr")
                             if os.path.exists(os.path.join(args.checkpoints, mav.CASCADE[s] + ".json"))]
    mode = args.mode
    masked = ["--extend"] * bool(args.extend) + [f"--{mode}"] * (mode in ("image", "between"))
    if masked and not os.path.exists(os.path.join(args.checkpoints, "interp.json")):
        cli.die(f"{masked[0]} makes frames with the masked interpolation network: no interp checkpoint in "
                f"{args.checkpoints}/; train it with: python train.py --stage interp")
    return stages


def load_models(args, stages) -> dict:
    """The checkpoints a run loads: its stages, plus the masked network for --extend / --image / --between
    (which then makes the base clip, so the base video model is not needed). One text encoder for all."""
    animated = args.mode in ("image", "between")
    names = [s for s in stages if not (s == "base" and animated)]
    if (args.extend or animated) and "interp" not in names:
        names.append("interp")
    models = {s: load(args, s) for s in names}
    encoders = {meta["text_encoder"] for _, meta in models.values()}
    if len(encoders) > 1:
        cli.die(f"the checkpoints in {args.checkpoints}/ were trained with different text encoders: "
                f"{sorted(encoders)}")
    return models


def text_cache(args, models) -> mav.TextCache:
    encoder = next(iter(models.values()))[1]["text_encoder"]
    return mav.TextCache.load_or_build(args.checkpoints, encoder, write=False)  # never writes in what it reads


def progress(desc):
    return lambda steps: tqdm(steps, desc=desc, dynamic_ncols=True, leave=False)


def cascade(args, models, stages, text, null, g, quiet=False, given=None, done=None):
    """base -> (extend) -> interp -> sr for the prompts of `text`. -> (x (n 1 f h w) in [-1, 1], fps).
    `given` replaces the base model's sample from noise: {"first": (n 1 h w)[, "last": ...]} animates with
    the masked network (--image, --between), {"video": (n 1 f h w)} is a video to vary (--variation, at
    args.strength). `done(stage)`, if given, is called as each stage ends (bench.py times them)."""
    n = len(text)
    common = dict(sampler=args.sampler, generator=g)
    bar = (lambda desc: None) if quiet else progress
    done = done or (lambda stage: None)
    base = dict(steps=args.steps, guidance=args.guidance, progress=bar(f"base {args.frames}x{mav.BASE}²"), **common)
    if given and "first" in given:  # the masked network, first (and last) frame known
        x = mav.animate(models["interp"][0], given["first"], text, null, frames=args.frames, last=given.get("last"),
                        **base)
    else:  # from noise, or (SDEdit) from the given video noised to t = strength
        x = mav.sample(models["base"][0], (n, 1, args.frames, mav.BASE, mav.BASE), text, null,
                       stride=torch.ones(n, device=args.device), init=given["video"] if given else None,
                       strength=args.strength if given else 1.0, **base)
    done("base")
    fps = mav.BASE_FPS
    if args.extend:
        x = mav.extend(models["interp"][0], x, args.extend, text, null, steps=args.interp_steps,
                       progress=bar(f"extend +{args.extend}"), **common)
        done("extend")
    if "interp" in stages:
        x = mav.interpolate(models["interp"][0], x, text, null, steps=args.interp_steps,
                            progress=bar(f"interp {x.shape[2]}->{(x.shape[2] - 1) * mav.INTERP_FACTOR + 1}"),
                            **common)
        fps *= mav.INTERP_FACTOR
        done("interp")
    if "sr" in stages:
        x = mav.super_resolve(models["sr"][0], x, text, null, framewise=args.sr == "framewise", steps=args.sr_steps,
                              progress=bar(f"sr {mav.BASE}²->{mav.SR_SCALE * mav.BASE}² ({args.sr})"), **common)
        done("sr")
    return x.float(), fps


# --- from your pictures ---------------------------------------------------------------------

def read_given(args) -> dict:
    """The files of --image / --between / --variation as frames (f h w) in [0, 1]; unusable ones: one line."""
    try:
        if not args.variation:
            paths = [args.image] if args.image else args.between
            return dict(zip(["first", "last"], (cli.read_frames(path)[:1] for path in paths)))
        frames = cli.read_frames(args.variation)
    except cli.InputError as e:
        cli.die(str(e))
    if len(frames) < args.frames:
        cli.die(f"{args.variation} has {len(frames)} frame{'s' * (len(frames) != 1)}; --variation needs "
                f"at least {args.frames}")
    if min(frames.shape[-2:]) < mav.BASE:
        cli.die(f"{args.variation} is {frames.shape[-1]}x{frames.shape[-2]}; --variation needs at least "
                f"{mav.BASE}x{mav.BASE}")
    return {"video": frames[torch.linspace(0, len(frames) - 1, args.frames).round().long()]}  # evenly spaced


def read_pictures(args, n: int) -> dict | None:
    """The files of --image / --between / --variation, made like the training frames (32², [-1, 1]) and
    repeated for the n videos -> `given` for cascade(), or None."""
    if args.mode is None:
        return None
    pictures = read_given(args)
    for name, frames in pictures.items():
        why = cli.unlike_training_frames(frames)
        if why:
            what = "the video" if name == "video" else f"the {name} picture"
            print(f"warning: {what} does not look like the training data ({why}); running anyway", file=sys.stderr)
    to_batch = lambda frames: mav.to_model(frames).to(args.device).expand(n, *frames.shape)
    fitted = {name: cli.fit_frames(frames) for name, frames in pictures.items()}      # f 32 32
    if "video" in fitted:
        return {"video": to_batch(fitted["video"][None])}                         # n 1 f 32 32
    return {name: to_batch(frames) for name, frames in fitted.items()}              # n 1 32 32


PREVIEW_PROMPTS = ["2 and four", "one and 7", "3 and 3", "five and nine"]


@torch.no_grad()
def preview(model, cache, stage, guidance, path, device):
    """train.py's grid of 4 samples of a stage's model at mav's default sampler and steps, so progress can be
    seen as well as read. interp and sr work on real held-out clips, to show what they add."""
    kw = dict(guidance=guidance, generator=torch.Generator().manual_seed(0))
    n, frames = len(PREVIEW_PROMPTS), mav.FRAMES
    if stage in ("image", "video"):
        text, null = cache.embed(PREVIEW_PROMPTS).to(device), cache.embed([""] * n).to(device)
        shape = (n, 1, mav.BASE, mav.BASE) if stage == "image" else (n, 1, frames, mav.BASE, mav.BASE)
        stride = None if stage == "image" else torch.ones(n, device=device)
        x = mav.sample(model, shape, text, null, stride=stride, **kw)
        videos = x[:, :, None] if stage == "image" else x
    else:
        video, labels = mav.MovingMNIST("test", device).sample(n, frames=frames,
                                                               generator=torch.Generator(device).manual_seed(0))
        text = cache(mav.prompt_ids(labels)).to(device)
        null = cache(torch.full((n,), mav.NULL_PROMPT, device=device)).to(device)
        low = mav.to_model(mav.area_downsample(video))
        grow = mav.interpolate if stage == "interp" else mav.super_resolve
        videos = grow(model, low, text, null, **kw)
    videos = mav.to_pixels(videos)[:, 0].float().cpu()
    cli.write_video(path, cli.video_grid(videos), fps=mav.BASE_FPS * (mav.INTERP_FACTOR if stage == "interp" else 1),
                    scale=2)


# --- the request ----------------------------------------------------------------------------

def write(args, frames: torch.Tensor, prompts: list[str], fps: float, what: str, cols=None):
    """frames (n f h w) in [0, 1] -> args.out (a grid if n > 1, with its prompts beside it) and one line."""
    n = len(frames)
    cli.write_video(args.out, cli.video_grid(frames, pad=2 if n > 1 else 0, cols=cols), fps=fps, scale=args.scale)
    if n > 1:  # the prompts in grid order, row by row
        with open(os.path.splitext(args.out)[0] + ".txt", "w") as fh:
            fh.write("\n".join(prompts) + "\n")
    print(f"wrote {args.out} ({what})")


def run(args):
    """The request, after parse_args: an image grid, or videos through the cascade."""
    stages = ["image"] if args.stages == ["image"] else choose_stages(args)
    models = load_models(args, stages) if stages != ["image"] else {"image": load(args, "image")}
    for prompt in dict.fromkeys(args.prompt):
        if mav.parse_prompt(prompt) is None:
            print(f"warning: {prompt!r} is not of the form '<digit> and <digit>', the only text the model "
                  f"was trained on; sampling anyway", file=sys.stderr)
    prompts = [p for p in args.prompt for _ in range(args.num_samples)]
    given = read_pictures(args, len(prompts))
    cache = text_cache(args, models)
    text, null = cache.embed(prompts).to(args.device), cache.embed([""] * len(prompts)).to(args.device)
    g = torch.Generator().manual_seed(args.seed)
    with cli.autocast(args.device, args.precision):
        if stages == ["image"]:  # one frame per prompt from the text-to-image model
            x = mav.sample(models["image"][0], (len(prompts), 1, mav.BASE, mav.BASE), text, null, steps=args.steps,
                           guidance=args.guidance, sampler=args.sampler, generator=g,
                           progress=progress(f"image {len(prompts)}x{mav.BASE}²"))
            images = mav.to_pixels(x.float()).cpu()  # n 1 h w: one-frame videos
            s = "s" * (len(images) > 1)
            cols = 8 if len(images) % 8 == 0 and len(images) >= 16 else None
            return write(args, images, prompts, 1, f"{len(images)} image{s} at {mav.BASE}x{mav.BASE}; image model",
                         cols)
        x, fps = cascade(args, models, stages, text, null, g, given=given)
    videos = mav.to_pixels(x)[:, 0].float().cpu()  # n f h w
    how = {"image": " from --image", "between": " from --between",
           "variation": f" (variation, strength {args.strength:g})"}.get(args.mode, "")
    write(args, videos, prompts, fps, f"{len(videos)} video{'s' if len(videos) > 1 else ''}{how}, {videos.shape[1]} "
          f"frames at {videos.shape[2]}x{videos.shape[3]}, {fps} fps; stages {'+'.join(stages)}")


def main(argv=None):
    args = parse_args(argv)
    print(f"device: {args.device}, precision: {args.precision} ({args.precision_why})")
    try:
        return run(args)
    except KeyboardInterrupt:  # Ctrl-C: no traceback, and no half-written file (write_video renames at the end)
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
