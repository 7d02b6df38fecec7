"""
The main command's frames, one row per video model: where the two digits cross, does each stay itself?

Each row is `python sample.py --prompt "2 and four" --seed 0 --image-expert <β>` through the whole cascade
of --cascade (its image model the expert), with its video model (video.safetensors + .json) taken from the
row's folder; the PNG shows every --every-th of its 76 frames from --first, left to right, the rows one
below the other. docs/crossing.png, in the README's results: the paper's sampler above, the image model as
expert below, every 2nd of the last 20 frames, where the 2 and the 4 cross:

    python docs/crossing_frames.py --videos checkpoints checkpoints --image-expert 0 0.75 --first 56 --every 2 \
        --out docs/crossing.png
"""
import argparse
import os
import shutil
import tempfile

import imageio.v3 as iio
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
import study  # noqa: E402,F401  (the repository on the import path)
import cli  # noqa: E402
import mav  # noqa: E402
import sample  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", nargs="+", required=True, help="folders holding a video model, one row each")
    p.add_argument("--cascade", default=os.path.join(ROOT, "checkpoints"), help="the interp and SR networks")
    p.add_argument("--image-expert", type=float, nargs="+", default=[mav.IMAGE_EXPERT], metavar="BETA",
                   help="sample.py's --image-expert, one per row (or one for all): 0 samples as the paper")
    p.add_argument("--prompt", default="2 and four")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=mav.STEPS["video"], help="the video model's steps")
    p.add_argument("--first", type=int, default=0, help="the first frame shown")
    p.add_argument("--every", type=int, default=5, help="show every n-th frame from there")
    p.add_argument("--out", default=os.path.join(HERE, "crossing.png"))
    return p.parse_args(argv)


def frames_of(args, video_folder, beta, scratch) -> np.ndarray:
    """The main command's frames (f h w, uint8) with the video model of `video_folder`, the image model's
    share β (mav.py §10)."""
    folder = os.path.join(scratch, str(len(os.listdir(scratch))))
    shutil.copytree(args.cascade, folder, ignore=shutil.ignore_patterns("cpu", "*.log", "*-train.pt", "samples"))
    for name in ("video.safetensors", "video.json"):
        shutil.copy(os.path.join(video_folder, name), folder)
    out = folder + ".gif"  # beside the folder it reads, never in it
    sample.main(["--prompt", args.prompt, "--seed", str(args.seed), "--steps", str(args.steps), "--checkpoints", folder,
                 "--out", out, "--image-expert", f"{beta:g}"])
    video = iio.imread(out, index=None)
    return video[..., 0] if video.ndim == 4 else video


def main(argv=None):
    args = parse_args(argv)
    betas = args.image_expert * len(args.videos) if len(args.image_expert) == 1 else args.image_expert
    if len(betas) != len(args.videos):
        cli.die(f"--image-expert takes one β for all rows or one per row ({len(args.videos)})")
    with tempfile.TemporaryDirectory() as scratch:
        rows = [frames_of(args, folder, beta, scratch)[args.first::args.every]
                for folder, beta in zip(args.videos, betas)]
    pad = lambda f: np.pad(f, 1, constant_values=128)  # a grey line between frames and rows
    strip = np.concatenate([np.concatenate([pad(f) for f in row], axis=1) for row in rows], axis=0)
    cli.write_video(args.out, strip[None], fps=1)
    print(f"wrote {args.out}: {len(rows)} rows of {len(rows[0])} frames")


if __name__ == "__main__":
    main()
