"""
Your own video model from a shipped image model: the fastest way on a CPU (docs/ABLATIONS.md, "Your own
video model").

One row = the video stage trained from a shipped image model, inflated (train.py --stage video, the
row's --preset and --recipe), with its checkpoint kept at a few step budgets; each budget scored by
evaluate.py on 100 seeded prompts, the default sampler (DPM++, the image model as each frame's expert),
the guidance the checkpoint records, in two seeds:

    python evaluate.py --stages video --checkpoints <row>/step-<N> --num-samples 100 --steps 10 --seed <seed>

Rows: the GPU image model (checkpoints/, base preset) or the laptop one (checkpoints/cpu, cpu preset),
every weight trained or only the temporal layers (temporal_only=1: the spatial layers stay the image
model's). A row's minutes are its steps at the speed of the fastest tenth of its own log (a quiet machine's).

    python docs/video_study.py                                  # every row, seeds 0 and 1
    python docs/video_study.py --rows gpu-temporal --seeds 0
    python docs/video_study.py --image-expert gpu-temporal:1000:0   # that budget sampled as the paper samples
    python docs/video_study.py --rows shipped --seeds 0 --baseline  # and the image model frame by frame
    python docs/video_study.py --table                          # the Markdown table, and docs/video_study.png

Each figure is one JSON line appended to docs/video_study.jsonl as it is made; one already there is not
made again, and a row stopped midway goes on from its last snapshot (train.py's resume file).
"""
import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import time

from tqdm import tqdm

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
from study import machine  # noqa: E402  (and the repository on the import path)
import evaluate  # noqa: E402
import mav  # noqa: E402
import train  # noqa: E402
import train_setup  # noqa: E402

SHIPPED, LAPTOP = os.path.join(ROOT, "checkpoints"), os.path.join(ROOT, "checkpoints", "cpu")
TEMPORAL = ["temporal_only=1", "joint_images=0"]
ROWS = {  # name -> (the image model's folder, preset, --recipe, snapshot steps: the last is the run's --steps)
    "shipped": (SHIPPED, "base", None, [2230]),       # the reference: the shipped video model (an H200's 4 min)
    "laptop chain": (LAPTOP, "cpu", None, [2044]),    # and the laptop chain's, every weight from its image model
    "gpu-temporal": (SHIPPED, "base", [*TEMPORAL, "guidance=3"], [250, 500, 1000]),
    "gpu-temporal-1800": (SHIPPED, "base", [*TEMPORAL, "guidance=3"], [1800]),  # the longest run under an hour
    "gpu-all": (SHIPPED, "base", ["guidance=3"], [250]),
    "laptop-temporal": (LAPTOP, "cpu", TEMPORAL, [500, 1000]),
}
KEEP = ("adherence", "consistency", "switch_rate", "momentary_switch_rate", "lasting_switch_rate", "jump_rate",
        "vanish_rate", "motion_lag_ratio", "fd")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="evaluation seeds: prompts and noise")
    p.add_argument("--num-samples", type=int, default=100)
    p.add_argument("--eval-steps", type=int, default=10, help="DPM++ steps of the scoring")
    p.add_argument("--image-expert", nargs="+", default=[], metavar="ROW:STEP:BETA", type=row_step_beta,
                   help="score these budgets also at another β (evaluate.py's --image-expert; 0: as the paper)")
    p.add_argument("--baseline", action="store_true", help="also score the row's image model frame by frame")
    p.add_argument("--source", default=None, help="train from this folder's image model instead of the row's")
    p.add_argument("--preset", default=None, help="and at this preset (the tests: tiny)")
    p.add_argument("--snapshots", type=int, nargs="+", default=None, help="instead of the row's step budgets")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "video_study"))
    p.add_argument("--results", default=os.path.join(HERE, "video_study.jsonl"))
    p.add_argument("--table", action="store_true", help="only print the table and draw docs/video_study.png")
    return p.parse_args(argv)


def row_step_beta(text: str) -> tuple[str, int, float]:
    """--image-expert's ROW:STEP:BETA -> (row, step, β)."""
    try:
        row, step, beta = text.rsplit(":", 2)
        return row, int(step), float(beta)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not ROW:STEP:BETA, e.g. gpu-temporal:1000:0") from None


def read_results(path) -> list[dict]:
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def key(line: dict) -> tuple:
    return line["row"], line["step"], line["seed"], line["image_expert"], line["n"], line["eval_steps"]


def append(path, line: dict):
    with open(path, "a") as fh:
        fh.write(json.dumps(line) + "\n")


def row_setup(args, row) -> tuple:
    """(the image model's folder, preset, --recipe, snapshot steps) of the row, as the command changes them."""
    source, preset, recipe, steps = ROWS[row]
    return args.source or source, args.preset or preset, recipe, args.snapshots or steps


def prepare(args, row) -> str:
    """The row's folder, holding what the video stage starts from: the image model and the text cache."""
    source = row_setup(args, row)[0]
    folder = os.path.join(args.out, row)
    os.makedirs(folder, exist_ok=True)
    for name in shared_files(source):
        if not os.path.exists(os.path.join(folder, name)):
            shutil.copy(os.path.join(source, name), folder)
    return folder


def shared_files(folder) -> list[str]:
    """The image model and the text cache: a snapshot keeps them beside its video model (the expert)."""
    return ["image.safetensors", "image.json"] + [n for n in os.listdir(folder) if n.startswith("text-")]


def train_row(args, row) -> dict[int, str]:
    """Train the row's video stage, keeping a copy of the checkpoint folder at each snapshot: -> {step: folder}."""
    source, preset, recipe, steps = row_setup(args, row)
    if recipe is None:  # a shipped video model, scored as it is
        return {steps[0]: source}
    folder = prepare(args, row)
    snaps = {s: os.path.join(folder, f"step-{s}") for s in steps}
    if all(os.path.exists(os.path.join(d, "video.json")) for d in snaps.values()):
        return snaps
    resume = ["--resume"] if os.path.exists(os.path.join(folder, "video-train.pt")) else []
    targs = train_setup.parse_args(["--stage", "video", "--preset", preset, "--out", folder, "--recipe", *recipe,
                              "--steps", str(steps[-1]), "--sample-every", "0", "--save-every", str(steps[-1]),
                              *resume])
    trainer = train.Trainer(targs, "video", targs.recipe, resume=targs.resume)
    bar = tqdm(total=steps[-1], initial=trainer.step, desc=row, dynamic_ncols=True)
    per_step, t_log = trainer.recipe.batch * trainer.recipe.frames + trainer.recipe.joint_images, time.time()
    for stop, snap in snaps.items():
        if os.path.exists(os.path.join(snap, "video.json")):
            continue
        while trainer.step < stop:
            loss = trainer.train_step()
            bar.update(1)
            if trainer.step % targs.log_every == 0:  # the log's samples/s: the clock of step_minutes
                train.read_loss(trainer, loss, targs.log_every * per_step / (time.time() - t_log), bar)
                t_log = time.time()
        trainer.save()  # the EMA checkpoint and the resume file, as train.py's loop saves them
        os.makedirs(snap, exist_ok=True)
        for name in ["video.safetensors", "video.json"] + shared_files(folder):
            shutil.copy(os.path.join(folder, name), snap)
    bar.close()
    return snaps


def step_minutes(folder: str, steps: int) -> float:
    """Minutes of `steps` at the speed of the fastest tenth of the run's own log lines (its quiet stretches: a run
    slowed for a while by another job reads as it would have alone)."""
    log = os.path.join(folder, "video.log")
    rates = [float(line.split("samples/s ")[1].split()[0]) for line in open(log) if "samples/s" in line] \
        if os.path.exists(log) else []
    meta = json.load(open(os.path.join(folder, "video.json")))
    if not rates:  # a run shorter than one log line: its own clock
        return round(steps * meta["train_seconds"] / meta["step"] / 60, 3)
    per_step = meta["recipe"]["batch"] * meta["recipe"]["frames"] + meta["recipe"]["joint_images"]
    quiet = sorted(rates)[int(0.9 * (len(rates) - 1))]
    return round(steps * per_step / quiet / 60, 1)


def evaluated(argv, baseline: bool) -> dict:
    """evaluate.py's figures, in this process; the frame-by-frame baseline only where asked for."""
    out, kept = io.StringIO(), evaluate.image_model_baseline
    if not baseline:
        evaluate.image_model_baseline = lambda *a, **k: None
    try:
        with contextlib.redirect_stdout(out):
            evaluate.main(argv)
    finally:
        evaluate.image_model_baseline = kept
    return json.loads(out.getvalue().strip().splitlines()[-1])


def score(args, row, step, snap, seed, beta: float | None) -> list[dict]:
    """evaluate.py's figures of the snapshot -> its line; with --baseline, also the line of its image model drawn
    frame by frame (row "<row> image model", step 0)."""
    name = f"{os.path.basename(snap)}-s{seed}{'' if beta is None else f'-b{beta:g}'}.gif"
    gif = os.path.join(args.out, "evals", f"{row}-{name}")  # not in the folder it reads
    argv = ["--stages", "video", "--checkpoints", snap, "--num-samples", str(args.num_samples), "--steps",
            str(args.eval_steps), "--seed", str(seed), "--out", gif]
    argv += [] if beta is None else ["--image-expert", str(beta)]
    figures = evaluated(argv, args.baseline)
    shipped = row_setup(args, row)[2] is None
    line = lambda name, step, what, minutes, beta: dict(
        row=name, step=step, seed=seed, image_expert=beta, n=args.num_samples, eval_steps=args.eval_steps,
        guidance=figures["guidance"], train_minutes=minutes, sample_s_per_video=round(figures["seconds"] /
                                                                                      args.num_samples, 3),
        **{k: what[k] for k in KEEP}, real={k: figures["ceiling"][k] for k in KEEP}, machine=machine())
    lines = [line(row, step, figures, None if shipped else step_minutes(os.path.join(args.out, row), step),
                  figures["image_expert"])]
    if args.baseline:
        lines.append(line(f"{row} image model", 0, figures["baseline"], None, 0.0))
    return lines


def main(argv=None):
    args = parse_args(argv)
    if args.table:
        return print(table(read_results(args.results), args.results))
    done = {key(line) for line in read_results(args.results)}
    for row in args.rows:
        snaps = train_row(args, row)
        jobs = [(step, seed, None) for step in snaps for seed in args.seeds]
        jobs += [(step, seed, beta) for name, step, beta in args.image_expert if name == row and step in snaps
                 for seed in args.seeds]
        for step, seed, beta in jobs:
            if (row, step, seed, mav.IMAGE_EXPERT if beta is None else beta, args.num_samples,
                    args.eval_steps) in done:
                continue
            for line in score(args, row, step, snaps[step], seed, beta):
                append(args.results, line)
                print(table([line], args.results, header=False))


def table(lines: list[dict], results: str, header: bool = True) -> str:
    head = ["| row | steps | train min | seed | β | s/video | adherence | consistency | switch | jump | vanish | "
            "lag ratio | FD |", "|" + "---|" * 13] if header else []
    minutes = lambda line: "—" if line["train_minutes"] is None else f"{line['train_minutes']:.1f}"
    order = lambda line: (next((i for i, row in enumerate(ROWS) if line["row"].startswith(row)), len(ROWS)),
                          line["row"], -line["image_expert"], line["step"], line["seed"])
    rows = [f"| {line['row']} | {line['step'] or '—'} | {minutes(line)} | {line['seed']} | "
            f"{line['image_expert']:g} | {line['sample_s_per_video']:.2f} | {fmt(line)}"
            for line in (sorted(lines, key=order) if header else lines)]
    reals = {line["seed"]: line["real"] for line in lines} if header else {}
    rows += [f"| real held-out clips | | | {seed} | | | {fmt(real)}" for seed, real in sorted(reals.items())]
    if header:
        figure(lines, os.path.join(os.path.dirname(results), "video_study.png"))
    return "\n".join(head + rows)


def fmt(f: dict) -> str:
    return (f"{f['adherence']:.2f} | {f['consistency']:.3f} | {f['switch_rate']:.3f} | {f['jump_rate']:.3f} | "
            f"{f['vanish_rate']:.3f} | {f['motion_lag_ratio']:.3f} | {f['fd']:.1f} |")


def figure(lines: list[dict], path: str):
    """Switch rate and jump rate against training minutes, the mean of the seeds scored, at the default β: a line per
    trained row, a dashed level per reference (the shipped model, the laptop chain's)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    mean = lambda points, name: statistics.mean(p[name] for p in points)
    default = lambda line: line["image_expert"] == mav.IMAGE_EXPERT
    for row in dict.fromkeys(line["row"] for line in lines if default(line)):
        points = {}
        for line in lines:
            if line["row"] == row and default(line):
                points.setdefault(line["train_minutes"], []).append(line)
        xs = sorted(x for x in points if x is not None)
        for ax, name in zip(axes, ("switch_rate", "jump_rate")):
            if xs:
                ax.plot(xs, [mean(points[x], name) for x in xs], "o-", label=row)
            elif None in points:
                ax.axhline(mean(points[None], name), ls="--", lw=1, color="grey" if "chain" in row else "black",
                           label=row)
    for ax, name in zip(axes, ("switch rate", "jump rate")):
        ax.set_xlabel("training minutes (2-core CPU, bf16)")
        ax.set_ylabel(f"{name}, mean of the seeds scored")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
