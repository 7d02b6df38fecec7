"""
Digits that stay themselves where they cross: levers on the shipped video model (docs/ABLATIONS.md,
"Beyond the paper").

One row = the shipped GPU video model (checkpoints/video), either as it is, sampled another way, or
continued on a CPU for the same steps, batch and seed with one part added (each new part starts as the
identity, so every fine-tuned row's step 0 is the shipped model); then the judge's figures on 100 prompts
at guidance 3, the switch rate split into momentary and lasting switches, and the row's cost.

    python docs/identity_study.py                                  # every row, seed 0 -> runs/identity/
    python docs/identity_study.py --rows control first_frame --seeds 0 1
    python docs/identity_study.py --rows shipped control --eval-steps 30   # the scoring's steps, checked
    python docs/identity_study.py --table                          # the Markdown table, from the results

A fine-tuned row is `python train.py --stage video --preset base --init checkpoints --out
runs/identity/<row>-s<seed> --steps 400 --recipe lr=2e-4 --seed <seed>` with the row's --model; its score is
`python evaluate.py --stages base --checkpoints <that folder> --num-samples 100 --guidance 3 --steps 10`.
Each figure is one JSON line appended to docs/identity.jsonl as it is made; one already there is not made
again, and a row stopped midway resumes (train.py's resume file).
"""
import argparse
import contextlib
import io
import json
import os
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]
import evaluate  # noqa: E402
import mav  # noqa: E402
import train  # noqa: E402
from ablations import machine, text_cache_files  # noqa: E402

# name -> (fine-tuned?, its --model changes, how it samples); "shipped" is every row's step 0. A "/new" row
# trains only the parts its --model adds: the shipped weights stay as they are.
ROWS = {
    "shipped": (False, [], None),
    "cross_frame_sampling": (False, [], "cross_frame"),  # Text2Video-Zero: no training
    "control": (True, [], None),                         # what continuing on a CPU alone does
    "first_frame": (True, ["first_frame_attention=1"], None),
    "spacetime": (True, ["spacetime_attention=1"], None),
    "first_frame/new": (True, ["first_frame_attention=1"], None),
    "spacetime/new": (True, ["spacetime_attention=1"], None),
}
KEEP = ("adherence", "consistency", "switch_rate", "momentary_switch_rate", "lasting_switch_rate", "motion",
        "motion_lag_ratio", "fd")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds (the prompts stay seed 0's)")
    p.add_argument("--source", default=os.path.join(ROOT, "checkpoints"), help="the shipped video model's folder")
    p.add_argument("--preset", default="base")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "identity"))
    p.add_argument("--results", default=os.path.join(HERE, "identity.jsonl"))
    p.add_argument("--steps", type=int, default=400, help="training steps of every fine-tuned row")
    p.add_argument("--lr", type=float, default=2e-4, help="peak learning rate of every fine-tuned row")
    p.add_argument("--num-samples", type=int, default=100, help="prompts a row is scored on")
    p.add_argument("--eval-steps", type=int, default=10, help="DPM++ steps of the scoring (the cascade's: 30)")
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--table", action="store_true", help="only print the Markdown table of the results")
    return p.parse_args(argv)


def read_results(path) -> list[dict]:
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def train_row(args, row, seed) -> str:
    """The row's checkpoint folder: the shipped model's copy, or a fine-tuned run (resumed if stopped)."""
    tuned, model, _ = ROWS[row]
    folder = os.path.join(args.out, f"{row.replace('/', '-')}-s{seed}" if tuned else "shipped")
    if os.path.exists(os.path.join(folder, "video.json")):
        return folder
    if not tuned:
        os.makedirs(folder, exist_ok=True)
        for name in ["video.safetensors", "video.json"] + text_cache_files(args.source):
            shutil.copy(os.path.join(args.source, name), folder)
        return folder
    if row.endswith("/new"):
        return train_new_parts_only(args, folder, model, seed)
    resume = os.path.exists(os.path.join(folder, "video-train.pt"))
    train.main(["--stage", "video", "--preset", args.preset, "--out", folder, "--steps", str(args.steps),
                "--sample-every", "0", "--save-every", "100", "--seed", str(seed), "--recipe", f"lr={args.lr:g}",
                *(["--resume"] if resume else ["--init", args.source] + (["--model", *model] if model else []))])
    return folder


def train_new_parts_only(args, folder, model, seed) -> str:
    """The run of train_row with every weight the source model had frozen: only the lever's own learn (with
    AdamW as configure_optimizers sets it). Not resumable: a row stopped midway starts again."""
    targs = train.parse_args(["--stage", "video", "--preset", args.preset, "--out", folder, "--steps",
                              str(args.steps), "--sample-every", "0", "--save-every", str(args.steps), "--seed",
                              str(seed), "--recipe", f"lr={args.lr:g}", "--init", args.source, "--overwrite",
                              "--model", *model])
    trainer = train.Trainer(targs, "video", targs.recipe)
    source = set(mav.load_checkpoint(args.source, "video")[0].state_dict())
    for name, p in trainer.model.named_parameters():
        p.requires_grad_(name not in source)
    trainer.optimizer = trainer.model.configure_optimizers(targs.recipe.lr, device_type=trainer.device.type)
    trainer.train()
    trainer.finish()
    return folder


def evaluate_row(args, folder, sampling) -> dict:
    """evaluate.py's figures of the video model in `folder` (--stages base), sampled as the row says."""
    argv = ["--stages", "base", "--checkpoints", folder, "--num-samples", str(args.num_samples),
            "--guidance", f"{args.guidance:g}", "--steps", str(args.eval_steps),
            "--out", os.path.join(folder, f"eval_{args.num_samples}_w{args.guidance:g}_{args.eval_steps}.gif")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), (cross_frame_self_attention() if sampling == "cross_frame"
                                           else contextlib.nullcontext()):
        evaluate.main(argv)
    return json.loads(out.getvalue().strip().splitlines()[-1])


@contextlib.contextmanager
def cross_frame_self_attention():
    """Text2Video-Zero's cross-frame attention, at sampling only: every frame's spatial self-attention
    reads frame 0's keys and values beside its own (the weights unchanged)."""
    original = mav.Pseudo3DAttention.forward

    def self_attn_with_first_frame(attn, frames):
        def forward(x):
            h = attn.norm(x)
            first = h.unflatten(0, (-1, frames))[:, :1].expand(-1, frames, -1, -1).flatten(0, 1)
            return mav.Attention.forward(attn, x, context=torch.cat([h, first], dim=1))
        return forward

    def forward(self, x, text, text_mask, frames=None):
        if frames is None:
            return original(self, x, text, text_mask, frames)
        plain = self.self_attn.forward
        self.self_attn.forward = self_attn_with_first_frame(self.self_attn, frames)
        try:
            return original(self, x, text, text_mask, frames)
        finally:
            self.self_attn.forward = plain

    mav.Pseudo3DAttention.forward = forward
    try:
        yield
    finally:
        mav.Pseudo3DAttention.forward = original


def run_row(args, row, seed, done):
    tuned, _, sampling = ROWS[row]
    key = (row, seed if tuned else 0, args.steps if tuned else 0, args.num_samples, args.guidance, args.eval_steps)
    if key in done:
        return
    folder = train_row(args, row, seed)
    meta = mav.checkpoint_meta(folder, "video")
    result = evaluate_row(args, folder, sampling)
    line = dict(row=row, seed=key[1], run_steps=key[2], n=args.num_samples, guidance=args.guidance,
                eval_steps=args.eval_steps, lr=args.lr if tuned else None,
                train_minutes=round(meta["train_seconds"] / 60, 2) if tuned else 0.0,
                step_s=round(meta["train_seconds"] / args.steps, 2) if tuned else None,
                sample_s_per_video=round(result["seconds"] / args.num_samples, 3),
                **{k: result[k] for k in KEEP}, real={k: result["ceiling"][k] for k in KEEP}, machine=machine())
    with open(args.results, "a") as fh:
        fh.write(json.dumps(line) + "\n")
    done.add(key)
    print(json.dumps(line), flush=True)


def table(args):
    print("| row | seed | eval steps | train min | s/step | s/video | adherence | consistency | switch "
          "(momentary + lasting) | lag ratio | FD |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results = read_results(args.results)
    for r in sorted(results, key=lambda r: (r["eval_steps"], list(ROWS).index(r["row"]), r["seed"])):
        print(f"| {r['row']} | {r['seed']} | {r['eval_steps']} | {r['train_minutes']:.1f} | {r['step_s'] or ''} | "
              f"{r['sample_s_per_video']:.2f} | {r['adherence']:.2f} | {r['consistency']:.3f} | "
              f"{r['switch_rate']:.3f} ({r['momentary_switch_rate']:.3f} + {r['lasting_switch_rate']:.3f}) | "
              f"{r['motion_lag_ratio']:.3f} | {r['fd']:.1f} |")
    if results:
        real = results[-1]["real"]
        print(f"| real held-out clips | | | | | | {real['adherence']:.2f} | {real['consistency']:.3f} | "
              f"{real['switch_rate']:.3f} ({real['momentary_switch_rate']:.3f} + {real['lasting_switch_rate']:.3f})"
              f" | {real['motion_lag_ratio']:.3f} | {real['fd']:.1f} |")


def main(argv=None):
    args = parse_args(argv)
    if args.table:
        return table(args)
    done = {(r["row"], r["seed"], r["run_steps"], r["n"], r["guidance"], r["eval_steps"])
            for r in read_results(args.results)}
    for seed in args.seeds:
        for row in args.rows:
            if seed == args.seeds[0] or ROWS[row][0]:  # a row without training has no seed of its own
                run_row(args, row, seed, done)


if __name__ == "__main__":
    main()
