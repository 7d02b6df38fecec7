"""
Digits that stay themselves where they cross: the image model as the video model's per-frame expert at
sampling (mav.py §10), measured on both testbeds (docs/ABLATIONS.md, "Beyond the paper").

One row = a video model sampled with the image model's share β of v̂ at the steps t <= t_e (β = 0: the
video model alone, as the paper samples), scored by evaluate.py on 100 seeded prompts:

    python evaluate.py --stages video --checkpoints <testbed> --num-samples 100 --guidance <w> --steps 10 \\
        --seed <seed> --image-expert <β>          (t_e: mav.IMAGE_EXPERT_UNTIL, set by this script)

Testbeds: "shipped" (checkpoints/, the GPU-trained models, guidance 3) and "laptop" (checkpoints/cpu, the
laptop chain, guidance 7). The prompts and the starting noise are the evaluation seed's, the same for every
row; the image model sampled frame by frame (evaluate.py's baseline) is not a row here and is skipped.

    python docs/identity_study.py                                   # every row, seeds 0 and 1
    python docs/identity_study.py --rows shipped "β 0.75, t ≤ 0.5" --seeds 0 --eval-steps 30
    python docs/identity_study.py --table                           # the Markdown table of the results

Each figure is one JSON line appended to docs/identity.jsonl as it is made; one already there is not made
again. (The lines of the fine-tuned levers, made at commit 4aecd4b, are in the same file.)
"""
import argparse
import contextlib
import io
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
from study import machine  # noqa: E402  (and the repository on the import path)
import evaluate  # noqa: E402
import mav  # noqa: E402

TESTBEDS = {"shipped": ("checkpoints", 3.0), "laptop": (os.path.join("checkpoints", "cpu"), 7.0)}
# row -> (β, t_e): the image model's share of v̂, and the steps (t <= t_e) that mix it in; "shipped" is the
# video model alone (β = 0), as the paper samples. The first screen (seed 0) chose what ships (mav.py §10).
GRID = [(0.5, 1.0), (0.5, 0.7), (0.5, 0.5), (0.5, 0.3), (0.75, 0.5), (0.75, 0.3), (1.0, 0.5), (1.0, 0.3)]
ROWS = {"shipped": (0.0, 0.0), **{f"β {beta:g}, t ≤ {until:g}": (beta, until) for beta, until in GRID}}
KEEP = ("adherence", "consistency", "switch_rate", "momentary_switch_rate", "lasting_switch_rate", "motion",
        "motion_lag_ratio", "fd")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--testbeds", nargs="+", default=["shipped"], choices=list(TESTBEDS))
    p.add_argument("--checkpoints", default=None, help="score this folder's models instead of the testbed's")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="evaluation seeds: prompts and noise")
    p.add_argument("--num-samples", type=int, default=100, help="prompts a row is scored on")
    p.add_argument("--eval-steps", type=int, default=10, help="DPM++ steps of the scoring (the cascade's: 30)")
    p.add_argument("--results", default=os.path.join(HERE, "identity.jsonl"))
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "identity"), help="each row's GIF of 16 videos")
    p.add_argument("--table", action="store_true", help="only print the Markdown table of the results")
    return p.parse_args(argv)


def read_results(path) -> list[dict]:
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def key(line: dict) -> tuple:
    """What makes two lines the same measurement (the older lines, without a testbed, are the shipped one's)."""
    return (line.get("testbed", "shipped"), line["row"], line["seed"], line["n"], line["eval_steps"])


def evaluate_row(args, testbed, row, seed) -> dict:
    """evaluate.py's figures of the testbed's video model, sampled as the row says."""
    folder, guidance = TESTBEDS[testbed]
    beta, mav.IMAGE_EXPERT_UNTIL = ROWS[row]  # t_e, read by mav.Cascade as it builds its expert
    name = f"{testbed}-b{beta:g}-t{mav.IMAGE_EXPERT_UNTIL:g}-s{seed}-{args.eval_steps}.gif"
    gif = os.path.join(args.out, name)
    folder = args.checkpoints or os.path.join(ROOT, folder)
    argv = ["--stages", "video", "--checkpoints", folder, "--num-samples", str(args.num_samples),
            "--guidance", f"{guidance:g}", "--steps", str(args.eval_steps), "--seed", str(seed),
            "--image-expert", f"{beta:g}", "--out", gif]
    out = io.StringIO()
    baseline, evaluate.image_model_baseline = evaluate.image_model_baseline, lambda *a, **k: None  # not a row
    try:
        with contextlib.redirect_stdout(out):
            evaluate.main(argv)
    finally:
        evaluate.image_model_baseline = baseline
    return json.loads(out.getvalue().strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    if args.table:
        return print(table(read_results(args.results)))
    done = {key(line) for line in read_results(args.results)}
    for testbed in args.testbeds:
        for seed in args.seeds:
            for row in args.rows:
                line = {"testbed": testbed, "row": row, "seed": seed, "n": args.num_samples,
                        "eval_steps": args.eval_steps}
                if key(line) in done:
                    continue
                figures = evaluate_row(args, testbed, row, seed)
                beta, until = ROWS[row]
                line.update(beta=beta, until=until, guidance=figures["guidance"], run_steps=0,
                            sample_s_per_video=round(figures["seconds"] / args.num_samples, 3),
                            **{k: figures[k] for k in KEEP}, real={k: figures["ceiling"][k] for k in KEEP},
                            machine=machine())
                with open(args.results, "a") as fh:
                    fh.write(json.dumps(line) + "\n")
                print(table([line], header=False))


def table(lines: list[dict], header: bool = True) -> str:
    """One Markdown row per line (the fine-tuned levers' too, without β), by testbed, seed and scoring steps;
    then the real clips of each testbed and seed."""
    head = ["| testbed | row | β | t_e | seed | eval steps | train min | s/video | adherence | consistency | "
            "switch (momentary + lasting) | lag ratio |", "|" + "---|" * 12] if header else []
    lines = sorted(lines, key=lambda line: key(line)[:1] + key(line)[2:])  # stable: in the order made
    opt = lambda v: "" if v is None else f"{v:g}"
    rows = [f"| {key(line)[0]} | {line['row']} | {opt(line.get('beta'))} | {opt(line.get('until'))} | "
            f"{line['seed']} | {line['eval_steps']} | {line.get('train_minutes') or 0:.1f} | "
            f"{line['sample_s_per_video']:.2f} | {fmt(line)}" for line in lines]
    reals = {(key(line)[0], line["seed"]): line["real"] for line in lines if "real" in line} if header else {}
    rows += [f"| {testbed} | real held-out clips | | | {seed} | | | | {fmt(real)}"
             for (testbed, seed), real in reals.items()]
    return "\n".join(head + rows)


def fmt(f: dict) -> str:
    return (f"{f['adherence']:.2f} | {f['consistency']:.3f} | {f['switch_rate']:.3f} "
            f"({f['momentary_switch_rate']:.3f} + {f['lasting_switch_rate']:.3f}) | {f['motion_lag_ratio']:.3f} |")


if __name__ == "__main__":
    main()
