"""
What each part of Make-A-Video buys, measured on a laptop (docs/ABLATIONS.md).

One row = one video stage of the laptop recipe, from the laptop chain's image model (checkpoints/cpu)
or, for `scratch`, from nothing, with one part switched off; every row the same steps and seed; then the
judge's figures on 100 prompts. The rows of the curve (full, scratch) are also scored at snapshots on
fewer prompts: adherence and consistency against CPU-minutes, inflated beside scratch.

    python docs/ablations.py                          # every row, one after another -> runs/ablations/
    python docs/ablations.py --rows full kernel_1     # some of them
    python docs/ablations.py --figures                # docs/ablations.png and the GIF strips, from the results

Each figure is one JSON line appended to docs/ablations.jsonl as it is made; a figure already there is
not made again, and a row stopped midway goes on from its last snapshot (train.py's resume file). A row
is the same as `train.py --stage video --preset cpu --out runs/ablations/<row> --steps <N> --sample-every 0`
with the row's switches, given a copy of the image model in that folder.
"""
import argparse
import contextlib
import io
import itertools
import json
import os
import shutil
import subprocess
import sys

import imageio.v3 as iio
import matplotlib
import numpy as np
from tqdm import tqdm

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
from study import machine  # noqa: E402  (and the repository on the import path)
import cli  # noqa: E402
import evaluate  # noqa: E402
import mav  # noqa: E402
import pipeline  # noqa: E402
import sample  # noqa: E402
import train  # noqa: E402
import train_setup  # noqa: E402

ROWS = {  # name -> (its --recipe changes, its --model changes): one part switched off
    "full": ([], []),
    "scratch": (["scratch=1"], []),
    "kernel_1": ([], ["temporal_kernel=1"]),
    "no_temporal_attention": ([], ["temporal_attention=0"]),
    "no_temporal_conv": ([], ["temporal_kernel=0"]),
    "no_stride_embedding": ([], ["stride_embedding=0"]),
    "no_joint_images": (["joint_images=0"], []),
}
CURVE = ("full", "scratch")  # also scored at snapshots: the curve; full's step 0 is the image model frame by frame
STRIP_PROMPTS = ["2 and four", "seven and 3"]
KEEP = ("adherence", "consistency", "switch_rate", "motion", "motion_lag_ratio", "fd")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--source", default=os.path.join(ROOT, "checkpoints", "cpu"), help="the image model's folder")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "ablations"))
    p.add_argument("--results", default=os.path.join(HERE, "ablations.jsonl"))
    p.add_argument("--steps", type=int, default=400, help="video-stage steps of every row")
    p.add_argument("--snapshots", type=int, default=4, help="points of each curve row (evenly spaced steps)")
    p.add_argument("--num-samples", type=int, default=100, help="prompts a row is scored on")
    p.add_argument("--curve-samples", type=int, default=16, help="prompts a curve point is scored on")
    p.add_argument("--eval-steps", type=int, default=10, help="DPM++ steps of the scoring (the cascade's: 30)")
    p.add_argument("--guidance", type=float, nargs="+", default=[7.0],
                   help="weights each row is scored at (7: the one the recipe records)")
    p.add_argument("--figures", action="store_true", help="only draw the plot and the strips from the results")
    p.add_argument("--figures-out", default=HERE)
    return p.parse_args(argv)


def read_results(path) -> list[dict]:
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def prepare(args, row) -> str:
    """The row's folder, holding what its stage starts from: the image model (inflated rows) and the text cache."""
    folder = os.path.join(args.out, row)
    os.makedirs(folder, exist_ok=True)
    names = text_cache_files(args.source)
    if row != "scratch":
        names += ["image.safetensors", "image.json"]
    for name in names:
        if not os.path.exists(os.path.join(folder, name)):
            shutil.copy(os.path.join(args.source, name), folder)
    return folder


def text_cache_files(folder) -> list[str]:
    """The text encoder's cached embeddings (mav.TextCache) in `folder`: every checkpoint folder needs them."""
    return [n for n in os.listdir(folder) if n.startswith("text-")]


def snapshot_steps(args, row) -> list[int]:
    k = args.snapshots if row in CURVE else 1
    return ([0] if row == "full" else []) + [args.steps * i // k for i in range(1, k + 1)]


def row_flags(row, resume: bool = False) -> list[str]:
    """The row's train.py (and bench.py) flags; a resumed run takes its network from its resume file."""
    recipe, model = ROWS[row]
    return (["--recipe", *recipe] if recipe else []) + (["--resume"] if resume else
                                                         ["--model", *model] if model else [])


def train_argv(args, row, folder, resume: bool) -> list[str]:
    return ["--stage", "video", "--preset", args.preset, "--out", folder, "--steps", str(args.steps),
            "--sample-every", "0", "--save-every", str(args.steps), *row_flags(row, resume)]


def train_row(args, row, folder) -> dict[int, str]:
    """Train the row's video stage, keeping a copy of the checkpoint at each snapshot: -> {step: folder}."""
    snaps = {s: os.path.join(folder, f"step-{s}") for s in snapshot_steps(args, row)}
    if all(os.path.exists(os.path.join(d, "video.json")) for d in snaps.values()):
        return snaps
    resume = os.path.exists(os.path.join(folder, "video-train.pt"))
    targs = train_setup.parse_args(train_argv(args, row, folder, resume))
    trainer = train.Trainer(targs, "video", targs.recipe, resume=targs.resume)
    bar = tqdm(total=args.steps, initial=trainer.step, desc=row, dynamic_ncols=True)
    for stop, snap in snaps.items():
        if os.path.exists(os.path.join(snap, "video.json")):
            continue
        while trainer.step < stop:
            trainer.train_step()
            bar.update(1)
        trainer.save()  # the EMA checkpoint and the resume file, as train.py's loop saves them
        os.makedirs(snap, exist_ok=True)
        for name in ["video.safetensors", "video.json"] + text_cache_files(folder):
            shutil.copy(os.path.join(folder, name), snap)
    bar.close()
    return snaps


def score(args, snap, n, guidance) -> dict:
    """evaluate.py on the video model alone in `snap` (no image model there: no frame-by-frame baseline), in this
    process, its prints kept off the terminal."""
    argv = ["--stages", "video", "--checkpoints", snap, "--num-samples", str(n), "--guidance", str(guidance),
            "--steps", str(args.eval_steps), "--out", f"{snap}-eval_{n}_w{guidance:g}.gif"]  # beside its folder
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        evaluate.main(argv)
    return json.loads(out.getvalue().strip().splitlines()[-1])


def step_seconds(args, stage: str) -> float:
    """Seconds of one training step of `stage` on this machine (bench.py: fresh weights, the same arithmetic
    as a trained model's). Run on a quiet machine: it is the clock of the curve."""
    cmd = [sys.executable, os.path.join(ROOT, "bench.py"), "train", "--stage", stage, "--preset", args.preset,
           "--steps", "10"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])["step_s"]


def costs(args) -> dict:
    """The clock of the curve, from the results, measured (and appended) where it is not there yet: a video
    step of the full network (scratch's is the same arithmetic), and the image stage the inflated rows
    start from, in this machine's minutes (its steps times an image step here)."""
    known = {r["row"]: r for r in read_results(args.results) if "step_s" in r}
    for row, stage in (("image stage", "image"), ("video step", "video")):
        if row not in known:
            line = dict(row=row, step_s=step_seconds(args, stage), machine=machine())
            if stage == "image":
                line["steps"] = pipeline.checkpoint_meta(args.source, "image")["step"]
                line["minutes"] = round(line["steps"] * line["step_s"] / 60, 1)
            with open(args.results, "a") as fh:
                fh.write(json.dumps(line) + "\n")
            known[row] = line
    return known


def run_row(args, row, done):
    """Train the row (or go on with it), then score what is not in the results yet, a JSON line each."""
    snaps = train_row(args, row, prepare(args, row))
    todo = [(step, args.curve_samples) for step in snaps if row in CURVE]
    todo += [(args.steps, args.num_samples)] + ([(0, args.num_samples)] if row == "full" else [])
    for step, n in todo:
        for w in args.guidance:
            if (row, args.steps, step, n, w) in done:
                continue
            meta, result = pipeline.checkpoint_meta(snaps[step], "video"), score(args, snaps[step], n, w)
            line = dict(row=row, run_steps=args.steps, step=step, n=n, guidance=w, eval_steps=args.eval_steps,
                        train_minutes=round(meta["train_seconds"] / 60, 2), **{k: result[k] for k in KEEP},
                        real={k: result["ceiling"][k] for k in KEEP}, machine=machine())
            with open(args.results, "a") as fh:
                fh.write(json.dumps(line) + "\n")
            done.add((row, args.steps, step, n, w))
            print(json.dumps(line), flush=True)


def scored(results, row, n, guidance, eval_steps) -> list[dict]:
    """The row's figures at these settings, run by run (a row may be trained for more than one length of run)."""
    return sorted((r for r in results if r["row"] == row and r.get("n") == n and r.get("guidance") == guidance
                   and r.get("eval_steps") == eval_steps), key=lambda r: (r["run_steps"], r["step"]))


def draw(args):
    """docs/ablations.png: adherence and consistency against CPU-minutes (steps times a step's seconds here),
    inflated beside scratch, the inflated line also shifted by the image stage's minutes; the table's rows
    in Markdown; docs/ablations.gif: each row's video for the same prompts."""
    cost, results, w = costs(args), read_results(args.results), args.guidance[0]
    os.makedirs(args.figures_out, exist_ok=True)
    image_minutes = cost["image stage"]["minutes"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, figure in zip(axes, ("adherence", "consistency")):
        runs = [(row, run, list(points)) for row in CURVE for run, points in
                itertools.groupby(scored(results, row, args.curve_samples, w, args.eval_steps),
                                  key=lambda r: r["run_steps"])]
        for (row, run, points), color in zip(runs, ("C0", "C3", "C1", "C2", "C4")):
            x = np.array([r["step"] for r in points]) * cost["video step"]["step_s"] / 60
            y = [r[figure] for r in points]
            ax.plot(x, y, "o-", color=color, label=("inflated" if row == "full" else "from scratch")
                    + f", a {run:,}-step run: video-stage minutes")
            if row == "full":
                ax.plot(x + image_minutes, y, "o--", color=color, alpha=0.5,
                        label=f"inflated, counting the image stage's {image_minutes:.0f} min")
        ax.set_xlabel("CPU-minutes of training (this machine)")
        ax.set_ylabel(f"{figure} ({args.curve_samples} prompts, w = {w:g})")
        ax.set_ylim(0, 1.02)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.figures_out, "ablations.png"), dpi=80)
    table(args, results, w)
    strips(args)


def table(args, results, w):
    """The table of docs/ABLATIONS.md, in Markdown: each row's figures on --num-samples prompts, and its
    minutes (the wall time of its training here, on a quiet machine)."""
    print("| row | steps | minutes | adherence | consistency | switch rate | motion lag ratio | FD |")
    print("|---|---|---|---|---|---|---|---|")
    for row in ROWS:
        for r in scored(results, row, args.num_samples, w, args.eval_steps):
            name = "image model frame by frame (full, step 0)" if row == "full" and r["step"] == 0 else row
            print(f"| {name} | {r['step']:,} | {r['train_minutes']:.1f} | {r['adherence']:.2f} | "
                  f"{r['consistency']:.3f} | {r['switch_rate']:.3f} | {r['motion_lag_ratio']:.3f} | {r['fd']:.1f} |")
    real = scored(results, "full", args.num_samples, w, args.eval_steps)[-1]["real"]
    print(f"| real held-out clips | | | {real['adherence']:.2f} | {real['consistency']:.3f} | "
          f"{real['switch_rate']:.3f} | {real['motion_lag_ratio']:.3f} | {real['fd']:.1f} |")


def strips(args):
    """The same prompts and seed through each row's final video model, one strip per row, in ROWS's order."""
    rows = []
    for row in ROWS:
        snap = os.path.join(args.out, row, f"step-{args.steps}")
        if not os.path.exists(os.path.join(snap, "video.json")):
            continue
        out = f"{snap}-strip.gif"  # beside the folder it reads
        with contextlib.redirect_stdout(io.StringIO()):  # sample.py, in this process
            prompts = [a for p in STRIP_PROMPTS for a in ("--prompt", p)]
            sample.main(["--stages", "video", "--checkpoints", snap, *prompts, "--seed", "0", "--out", out,
                         "--scale", "2"])
        strip = iio.imread(out)
        rows.append(strip[..., 0] if strip.ndim == 4 else strip)  # the GIF's gray, read back as RGB
    frames = np.concatenate(rows, axis=1)  # f h w: the rows' strips one below the other
    cli.write_video(os.path.join(args.figures_out, "ablations.gif"), frames, fps=mav.BASE_FPS)


def main(argv=None):
    args = parse_args(argv)
    if args.figures:
        return draw(args)
    done = {(r["row"], r["run_steps"], r["step"], r["n"], r["guidance"]) for r in read_results(args.results)
            if r.get("eval_steps") == args.eval_steps}
    for row in args.rows:
        run_row(args, row, done)


if __name__ == "__main__":
    main()
