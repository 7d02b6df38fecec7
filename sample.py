"""
Sample a video from a prompt with the trained Make-A-Video model.

    python sample.py --prompt "2 and four"                 # -> output/2_and_four.gif
    python sample.py --prompt "1 and 3" --prompt "6 and two" --num-samples 2   # a grid + grid.txt
    python sample.py --prompt "2 and four" --out clip.mp4 --scale 4

The model knows prompts of the form "<digit> and <digit>", each digit a
numeral or a word ("2 and four", "two and 4"). Other text still samples, with
a warning.
"""
import os
import re

import torch
from tqdm import tqdm

import mav

BASE_FPS = 8  # frames per second of a written base-rate clip


def parse_args(argv=None):
    p = mav.ArgumentParser(description="Sample Moving MNIST videos from text with Make-A-Video.",
                           formatter_class=mav.argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--prompt", action="append", default=None,
                   help='"<digit> and <digit>", e.g. "2 and four" (repeat for a grid; default "2 and four")')
    p.add_argument("--num-samples", type=int, default=1, help="videos per prompt")
    p.add_argument("--seed", type=int, default=0, help="same seed, same file")
    p.add_argument("--steps", type=int, default=50, help="diffusion steps")
    p.add_argument("--sampler", default="ddim", choices=["ddim", "ancestral"])
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance weight (1 = none)")
    p.add_argument("--frames", type=int, default=16, help="frames to generate")
    p.add_argument("--checkpoints", default="checkpoints", help="folder with video.safetensors/.json")
    p.add_argument("--text-encoder", default=None, help="must match the checkpoint's (default: the checkpoint's)")
    p.add_argument("--out", default=None, help="output .gif or .mp4 (default output/<prompt>.gif)")
    p.add_argument("--scale", type=int, default=1, help="enlarge the written frames by this factor")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    args = p.parse_args(argv)
    args.prompt = args.prompt or ["2 and four"]
    for name in ("num_samples", "steps", "frames", "scale"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.guidance < 0:
        p.error("--guidance must be >= 0")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available here")
    return args


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "empty"


def main(argv=None):
    args = parse_args(argv)
    try:
        model, meta = mav.load_checkpoint(args.checkpoints, "video", args.device, text_encoder=args.text_encoder)
    except mav.CheckpointError as e:
        if not os.path.exists(os.path.join(args.checkpoints, "video.json")):
            mav.die(f"{e}; train it with: python train.py --stage image && python train.py --stage video")
        mav.die(str(e))
    for prompt in dict.fromkeys(args.prompt):
        if mav.parse_prompt(prompt) is None:
            print(f"warning: {prompt!r} is not of the form '<digit> and <digit>', the only text the model "
                  f"was trained on; sampling anyway", file=mav.sys.stderr)

    prompts = [p for p in args.prompt for _ in range(args.num_samples)]
    cache = mav.TextCache.load_or_build(args.checkpoints, meta["text_encoder"])
    text = cache.embed(prompts).to(args.device)
    null = cache.embed([""] * len(prompts)).to(args.device)
    fps = torch.ones(len(prompts), device=args.device)
    shape = (len(prompts), 1, args.frames, mav.BASE, mav.BASE)
    bar = lambda steps: tqdm(steps, desc=f"video {args.frames}x{mav.BASE}²", dynamic_ncols=True)
    x = mav.sample(model, shape, text, null, steps=args.steps, sampler=args.sampler, guidance=args.guidance,
                   fps=fps, generator=torch.Generator().manual_seed(args.seed), progress=bar)
    videos = mav.to_pixels(x)[:, 0].float().cpu()  # n f h w

    distinct = list(dict.fromkeys(args.prompt))
    out = args.out or os.path.join("output", (slug(distinct[0]) if len(distinct) == 1 else "grid") + ".gif")
    mav.write_video(out, mav.video_grid(videos, pad=2 if len(videos) > 1 else 0), fps=BASE_FPS, scale=args.scale)
    if len(videos) > 1:  # the prompts in grid order, row by row, like the seed's tables
        with open(os.path.splitext(out)[0] + ".txt", "w") as fh:
            fh.write("\n".join(prompts) + "\n")
    print(f"wrote {out} ({len(videos)} video{'s' if len(videos) > 1 else ''}, {args.frames} frames "
          f"at {mav.BASE}x{mav.BASE})")


if __name__ == "__main__":
    main()
