"""
Every mode at its defaults, and the main command in half the time (docs/ABLATIONS.md, "Every mode with the
image expert"; issue 50).

One row = one `python evaluate.py` run, named and kept as a JSON line in docs/modes_study.jsonl (with the
argv that made it, the machine and the wall time). The rows, each on the same 100 prompts or held-out
clips per seed, seeds 0 and 1:

    cascade-30 / cascade-10   the whole cascade (video + interp + SR, read at the base rate), the video model at 30 or 10 steps
    animate-b0 / animate      a clip from its first frame: the masked network alone (as the paper) / with the
                              image model as each made frame's expert (β 0.75, t <= 0.5; mav.py §10)
    between-b0 / between      the same from its first and last frames, with PSNR to the true middle frames
    variation-b0 / variation  a clip with another prompt at strength 0.4 / 0.6 / 0.8 / 1
    animate-t1 / between-t1   as animate / between, the masked network's sampler started from pure noise (t = 1,
                              mav.PICTURE_START) instead of its guess noised to t = 0.8 (the rows above: where the
                              picture modes started before, the whole-frame network's start then)

    python docs/modes_study.py                          # every row, seeds 0 and 1
    python docs/modes_study.py --rows animate animate-b0 --seeds 0
    python docs/modes_study.py --steps 10               # the modes' video-model steps (cascade rows name their own)
    python docs/modes_study.py --table                  # the Markdown tables of docs/ABLATIONS.md

A row already in the results (same name, seed and steps) is not made again.
"""
import argparse
import contextlib
import io
import json
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
from study import machine  # noqa: E402  (and the repository on the import path)
import evaluate  # noqa: E402
import mav  # noqa: E402

ROWS = {  # name -> evaluate.py's arguments (besides --seed, --num-samples 100)
    "cascade-30": ["videos", "--steps", "30"],
    "cascade-10": ["videos", "--steps", "10"],
    "animate-b0": ["animate", "--image-expert", "0"],
    "animate": ["animate"],
    "between-b0": ["between", "--image-expert", "0"],
    "between": ["between"],
    "variation-b0": ["variation", "--image-expert", "0"],
    "variation": ["variation"],
    "animate-t1": ["animate"],
    "between-t1": ["between"],
}
START_T = {"animate-b0": 0.8, "animate": 0.8, "between-b0": 0.8, "between": 0.8,  # from the guess, as before
           "animate-t1": 1.0, "between-t1": 1.0}  # where the picture modes' sampler starts: mav.PICTURE_START


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--steps", type=int, default=None, help="the modes' video-model steps (default: evaluate.py's)")
    p.add_argument("--num-samples", type=int, default=100)
    p.add_argument("--table", action="store_true", help="print the results as Markdown tables, run nothing")
    p.add_argument("--checkpoints", default=None, help="the folder evaluated (default: evaluate.py's, the shipped one)")
    p.add_argument("--results", default=os.path.join(HERE, "modes_study.jsonl"))
    return p.parse_args(argv)


def run_row(argv: list[str], start_t: float | None = None) -> dict:
    """evaluate.py's JSON line for `argv`, its own prints kept off the terminal; `start_t`, where given, is
    where the picture modes' sampler starts for this row (mav.PICTURE_START)."""
    out, kept = io.StringIO(), mav.PICTURE_START
    try:
        mav.PICTURE_START = kept if start_t is None else start_t
        with contextlib.redirect_stdout(out):
            evaluate.main(argv)
    finally:
        mav.PICTURE_START = kept
    return json.loads(out.getvalue().strip().splitlines()[-1])


LABELS = {"b0": "the masked network alone, from its guess at t = 0.8 (the old default)",
          "": "with the image expert (β 0.75, t ≤ 0.5), from its guess at t = 0.8",
          "t1": "**with the image expert, from pure noise (the new default)**"}


def seeds(rows, f) -> str:
    """A table's cell: f of each row, seed 0 / seed 1."""
    return " / ".join(f(r) for r in sorted(rows, key=lambda r: r["seed"]))


def cascade_table(results: list[dict]):
    """The whole cascade's rows (read at the base rate; the 76 frames' switch rate beside), as Markdown."""
    print("Each cell: seed 0 / seed 1.\n\n| video steps | adherence | consistency | switch rate | jump rate | motion "
          "| lag ratio | FD | switch rate at 76 frames | wall (s) |\n|---|---|---|---|---|---|---|---|---|---|")
    for steps in sorted({r["steps"] for r in results if r["row"].startswith("cascade")}, reverse=True):
        rows = [r for r in results if r["row"].startswith("cascade") and r["steps"] == steps]
        figures = [seeds(rows, lambda r, k=k: f"{r[k]:.{2 if k == 'adherence' else 3}f}")
                   for k in ("adherence", "consistency", "switch_rate", "jump_rate", "motion", "motion_lag_ratio")]
        figures += [seeds(rows, lambda r: f"{r['fd']:.1f}"),
                    seeds(rows, lambda r: f"{r['full_rate']['switch_rate']:.3f}"),
                    seeds(rows, lambda r: f"{r['wall_s']:.0f}")]
        print(f"| {steps} | {' | '.join(figures)} |")
    print()


def table(results: list[dict]):
    """The whole cascade's rows, the picture modes' (seed 0 / seed 1 in each cell), then the variation rows, as
    Markdown."""
    cascade_table(results)
    cell = seeds
    print("Each cell: seed 0 / seed 1.\n\n| mode | sampler | adherence | consistency | switch rate | jump rate | "
          "motion | lag ratio | PSNR middle (cross-fade) |\n|---|---|---|---|---|---|---|---|---|")
    for mode in ("animate", "between"):
        for kind, label in LABELS.items():
            rows = [r for r in results if r["row"] == "-".join(filter(None, [mode, kind]))]
            if not rows:
                continue
            made = lambda r: r["animated" if mode == "animate" else "made"]
            figures = [cell(rows, lambda r, k=k: f"{made(r)[k]:.{2 if k == 'adherence' else 3}f}")
                       for k in ("adherence", "consistency", "switch_rate", "jump_rate", "motion", "motion_lag_ratio")]
            psnr = cell(rows, lambda r: f"{r['psnr']} ({r['psnr_linear_blend']})") if mode == "between" else ""
            print(f"| {mode} | {label} | {' | '.join(figures)} | {psnr} |")
        real = [r for r in results if r.get("eval") == mode and r["seed"] in (0, 1)]
        if real:
            first = {r["seed"]: r for r in real}
            figures = [cell(first.values(), lambda r, k=k: f"{r['real'][k]:.{2 if k == 'adherence' else 3}f}")
                       for k in ("adherence", "consistency", "switch_rate", "jump_rate", "motion", "motion_lag_ratio")]
            print(f"| {mode} | real held-out clips | {' | '.join(figures)} | |")
    print("\n| sampler | strength | new digits (adherence) | own digits | PSNR to the input | switch rate |"
          "\n|---|---|---|---|---|---|")
    for r in (r for r in results if r.get("eval") == "variation"):
        for v in r["rows"]:
            if v["strength"]:
                print(f"| β {r['image_expert']:g}, seed {r['seed']} | {v['strength']:g} | "
                      f"{v['adherence_new_prompt']:.2f} | {v['adherence_own_digits']:.2f} | {v['psnr_to_input']} | "
                      f"{v['switch_rate']:.3f} |")


def main(argv=None):
    args = parse_args(argv)
    if args.table:
        with open(args.results) as fh:
            return table([json.loads(line) for line in fh])
    done = set()
    if os.path.exists(args.results):
        with open(args.results) as fh:
            done = {(r["row"], r["seed"], r["argv"]) for r in map(json.loads, fh)}
    for seed in args.seeds:
        for row in args.rows:
            steps = [] if row.startswith("cascade") or args.steps is None else ["--steps", str(args.steps)]
            argv = [*ROWS[row], *steps, "--seed", str(seed), "--num-samples", str(args.num_samples),
                    *(["--checkpoints", args.checkpoints] if args.checkpoints else [])]
            if row.startswith("cascade"):
                argv += ["--out", f"runs/modes_study/{row}-{seed}.gif"]
            if (row, seed, " ".join(argv)) in done:
                continue
            os.makedirs("runs/modes_study", exist_ok=True)
            t0 = time.time()
            result = run_row(argv, START_T.get(row))
            line = {"row": row, "seed": seed, "argv": " ".join(argv), "start_t": START_T.get(row), "machine": machine(),
                    "wall_s": round(time.time() - t0, 1), **result}
            with open(args.results, "a") as fh:
                fh.write(json.dumps(line) + "\n")
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
