"""
The pictures of the README's laptop section, from a finished chain (train.py --stage all):

    python docs/laptop_figures.py runs/cpu     # -> docs/laptop_loss.png, docs/laptop_vs_gpu.gif
    python docs/laptop_figures.py runs/cpu --out output --steps 2 1 1   # a quick look, written elsewhere

laptop_loss.png: each stage's training loss against the minutes it trained (the logs, smoothed).
laptop_vs_gpu.gif: the same 8 prompts and seed through the whole cascade, the chain's checkpoints on
top, the shipped (GPU-trained) ones below, every 2nd of the 76 frames.
"""
import argparse
import os

import imageio.v3 as iio
import matplotlib
import numpy as np
from PIL import Image, ImageSequence

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
import study  # noqa: E402,F401  (the repository on the import path)
import cli  # noqa: E402
import pipeline  # noqa: E402
import sample  # noqa: E402

PROMPTS = ["2 and four", "one and 7", "3 and 3", "five and nine", "6 and two", "8 and 1", "zero and 5", "4 and 9"]


def read_log(path):
    """-> (minutes, loss) of a train.py log's loss lines."""
    minutes, loss = [], []
    for line in open(path):
        words = line.split()
        if len(words) > 3 and words[2] == "loss":
            loss.append(float(words[3]))
            minutes.append(float(words[words.index("elapsed") + 1]) / 60)
    return np.array(minutes), np.array(loss)


def loss_curves(folder, out):
    fig, axes = plt.subplots(1, 4, figsize=(14, 3))
    for ax, stage in zip(axes, ["image", "video", "interp", "sr"]):
        minutes, loss = read_log(os.path.join(folder, f"{stage}.log"))
        k = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(minutes, loss, color="0.8", linewidth=0.8)
        ax.plot(minutes[k - 1:], smooth, color="C0")
        ax.set_title(stage)
        ax.set_xlabel("minutes")
        ax.set_ylim(0, np.percentile(loss, 99))
        gamma = pipeline.checkpoint_meta(folder, stage).get("recipe", {}).get("min_snr", pipeline.RECIPES[stage].min_snr)
        guess = {"interp": "the blend", "sr": "bicubic"}.get(stage)  # interp and SR make the difference to it
        ax.set_ylabel(f"Min-SNR-{gamma:g} weighted v-MSE" if gamma else
                      f"v-MSE, difference to {guess}" if guess else "v-MSE")
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def side_by_side(folder, out, other=cli.SHIPPED, extra=(), prompts=PROMPTS):
    rows = []
    for name, checkpoints in (("laptop", folder), ("gpu", other)):
        path = os.path.join("output", f"compare_{name}.gif")
        argv = ["--checkpoints", checkpoints, "--seed", "0", "--out", path, *extra]
        sample.main(argv + [arg for prompt in prompts for arg in ("--prompt", prompt)])
        with Image.open(path) as gif:  # grayscale frames (n h w); PIL, as imageio fails on some palettes
            rows.append(np.stack([np.asarray(frame.convert("L")) for frame in ImageSequence.Iterator(gif)]))
    frames = np.concatenate(rows, axis=1)[::2]  # laptop above, GPU below; every 2nd frame
    iio.imwrite(out, frames, duration=50, loop=0)


def main(argv=None):
    p = argparse.ArgumentParser(description="The README's laptop pictures, from a finished chain.")
    p.add_argument("chain", nargs="?", default="runs/cpu")
    p.add_argument("--out", default=HERE, help="folder of the PNG and the GIF")
    p.add_argument("--other", default=cli.SHIPPED, help="the checkpoints shown below the chain's")
    p.add_argument("--steps", nargs="+", default=[], help="sample.py --steps for both")
    p.add_argument("--prompts", type=int, default=len(PROMPTS), help="how many of the 8 prompts")
    args = p.parse_args(argv)
    loss_curves(args.chain, os.path.join(args.out, "laptop_loss.png"))
    side_by_side(args.chain, os.path.join(args.out, "laptop_vs_gpu.gif"), args.other,
                 ["--steps", *args.steps] if args.steps else [], PROMPTS[:args.prompts])


if __name__ == "__main__":
    main()
