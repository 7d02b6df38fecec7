"""
Sample Moving MNIST videos from a prompt with the Make-A-Video cascade.

    python sample.py --prompt "2 and four"       # video 16x32² -> interp 76x32² -> SR 76x64² -> output/2_and_four.gif
    python sample.py --prompt "1 and 3" --prompt "6 and two" --num-samples 2   # a grid + grid.txt
    python sample.py --prompt "2 and four" --stages video --out clip.mp4 --scale 4
    python sample.py --prompt "2 and four" --extend 16                         # 32 video frames, then the rest
    python sample.py --prompt "2 and four" --image start.png          # animate a picture (its first frame)
    python sample.py --prompt "2 and four" --between a.png b.png      # the motion from one picture to another
    python sample.py --prompt "2 and four" --variation clip.gif                # a variation of a video
    python sample.py --stages image --prompt-file docs/image_prompts.txt --out grid.png  # the image model alone

The model knows prompts of the form "<digit> and <digit>", each digit a
numeral or a word ("2 and four", "two and 4"). Other text still samples, with
a warning. evaluate.py scores the cascade, bench.py times it.
"""
import os
import re
import sys

import torch

import cli
import mav
import pipeline

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
                            f"sample; default {mav.STRENGTH:g}: the prompt's digits, the input's layout and motion)")
    cli.add_cascade_arguments(p.add_argument_group("the cascade"))
    cli.add_device_arguments(p.add_argument_group("hardware"))
    return p


PROMPT_FILE_BYTES = 1 << 20  # 1 MiB: tens of thousands of prompts, far past --num-samples' limit


def read_prompt_file(p, path: str) -> list[str]:
    try:
        if not cli.check_regular(path, "--prompt-file"):
            p.error(f"--prompt-file: no such file {path}")
        if os.path.getsize(path) > PROMPT_FILE_BYTES:
            p.error(f"--prompt-file: {path} is over {PROMPT_FILE_BYTES >> 20} MiB: not a list of prompts")
        with open(path, encoding="utf-8") as fh:
            prompts = [q.strip() for line in fh for q in line.split(",") if q.strip()]
    except cli.InputError as e:
        p.error(str(e))
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
    args.strength = mav.STRENGTH if args.strength is None else args.strength
    try:
        pipeline.check_call(strength=args.strength)
    except ValueError as e:
        p.error(f"--strength: {e}")
    cli.check_cascade(p, args)
    if len(args.prompt) * args.num_samples > cli.LIMITS["num_samples"]:
        p.error(f"{len(args.prompt)} prompts x {args.num_samples} samples is over the limit of "
                f"{cli.LIMITS['num_samples']} videos")
    check_out(p, args)


def check_out(p, args):
    """The output file, chosen and checked for writing now, not after minutes of sampling."""
    image = args.stages == ["image"]
    if args.out is None:
        distinct = list(dict.fromkeys(args.prompt))
        name = slug(distinct[0]) if len(distinct) == 1 else "grid"
        args.out = os.path.join("output", name + (".png" if image else ".gif"))
    try:
        grid = len(args.prompt) * args.num_samples > 1  # its prompts go beside it, in a .txt
        cli.check_output_path(args.out, cli.IMAGE_EXTS if image else cli.VIDEO_EXTS, sides=(".txt",) * grid,
                              reading=(args.checkpoints, cli.SHIPPED))
    except cli.InputError as e:
        p.error(str(e))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:60] or "empty"


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
    repeated for the n videos -> Cascade.generate's first (and last), or video; or None."""
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


# --- the request ----------------------------------------------------------------------------

def write(args, frames: torch.Tensor, prompts: list[str], fps: float, what: str, cols=None):
    """frames (n f h w) in [0, 1] -> args.out (a grid if n > 1, with its prompts beside it) and one line."""
    n = len(frames)
    cli.write_video(args.out, cli.video_grid(frames, pad=2 if n > 1 else 0, cols=cols), fps=fps, scale=args.scale)
    if n > 1:  # the prompts in grid order, row by row
        cli.write_text(os.path.splitext(args.out)[0] + ".txt", "\n".join(prompts) + "\n")
    print(f"wrote {args.out} ({what})")


_PROMPT = re.compile(r"^\s*(\w+)\s+and\s+(\w+)\s*$", re.IGNORECASE | re.ASCII)  # ASCII: "２" is no "2" here


def parse_prompt(text: str) -> tuple[int, int] | None:
    """The digits a prompt names in the training prompts' form: '2 and four', ' Two  AND 4 ' -> (2, 4);
    anything else -> None (sampled anyway, with a warning)."""
    m = _PROMPT.match(text)
    if not m:
        return None
    digits = []
    for token in m.groups():
        token = token.lower()
        if token in "0123456789" and len(token) == 1:
            digits.append(int(token))
        elif token in mav.WORDS:
            digits.append(mav.WORDS.index(token))
        else:
            return None
    return digits[0], digits[1]


def run(args):
    """The request, after parse_args: an image grid, or videos through the cascade."""
    stages = ["image"] if args.stages == ["image"] else cli.choose_stages(args)
    models = cli.load_models(args, stages) if stages != ["image"] else cli.load_networks(args, ["image"])
    for prompt in dict.fromkeys(args.prompt):
        if parse_prompt(prompt) is None:
            print(f"warning: {prompt!r} is not of the form '<digit> and <digit>', the only text the model "
                  f"was trained on; sampling anyway", file=sys.stderr)
    prompts = [p for p in args.prompt for _ in range(args.num_samples)]
    given = read_pictures(args, len(prompts)) or {}
    cache = cli.text_cache(args, models)
    text, null = cache.embed(prompts).to(args.device), cache.embed([""] * len(prompts)).to(args.device)
    g = torch.Generator().manual_seed(args.seed)
    with cli.autocast(args.device, args.precision):
        if stages == ["image"]:  # one frame per prompt from the text-to-image model
            x = mav.sample(models["image"][0], (len(prompts), 1, mav.BASE, mav.BASE), text, null, steps=args.steps,
                           guidance=args.guidance, sampler=args.sampler, generator=g,
                           progress=cli.progress(f"image {len(prompts)}x{mav.BASE}²"))
            images = mav.to_pixels(x.float()).cpu()  # n 1 h w: one-frame videos
            s = "s" * (len(images) > 1)
            cols = 8 if len(images) % 8 == 0 and len(images) >= 16 else None
            return write(args, images, prompts, 1, f"{len(images)} image{s} at {mav.BASE}x{mav.BASE}; image model",
                         cols)
        run = cli.cascade(args, models, stages)
        x, fps = run.generate(text, null, g, **cli.cascade_options(args), **given)
    videos = mav.to_pixels(x)[:, 0].float().cpu()  # n f h w
    how = {"image": " from --image", "between": " from --between",
           "variation": f" (variation, strength {args.strength:g})"}.get(args.mode, "")
    beta = run.effective_image_expert(args.image_expert)
    expert = f" (image model as expert, β {beta:g})" if beta else ""
    write(args, videos, prompts, fps, f"{len(videos)} video{'s' if len(videos) > 1 else ''}{how}, {videos.shape[1]} "
          f"frames at {videos.shape[2]}x{videos.shape[3]}, {fps} fps; stages {'+'.join(stages)}{expert}")


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
