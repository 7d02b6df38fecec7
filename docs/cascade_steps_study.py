"""Interpolation and SR steps, and where their samplers start, against the judge: the whole cascade on seeded
prompts, the base clips made once and shared, then interp + SR for each row, scored as `python evaluate.py` scores the cascade (at the base
rate and the full rate, beside real clips). Each prompt runs alone (batch 1 is the fastest shape on a 2-core CPU)
with noise of its own, so every step count sees the same base clips and the same noise: the rows differ only in
their steps. docs/EVALUATION.md has the table; one JSON line per row in --results.

    python docs/cascade_steps_study.py                  # 32 prompts; the old defaults and the new
    python docs/cascade_steps_study.py --n 100 6:3:1.0 1:1:0.8 2:2:0.8

A row is interp_steps:sr_steps:start, start the t at which both samplers begin (mav.RESIDUAL_START, 0.8, by
default; 0.95 for the residual networks from 27 Nov to 7 Dec; 1.0: from pure noise, as before 29 Nov).

A row already in --results is skipped; the base clips are kept in --base-cache, so a stopped study goes on where
it stopped. On a 2-core AVX2 CPU in fp32 a prompt's base clip takes about 23 s, an interp step 2.3 s, an SR step
12 s.
"""
import argparse
import json
import os
import time
from types import SimpleNamespace

import torch
from tqdm import tqdm

import study  # noqa: E402,F401  (the repository on the import path)
import cli  # noqa: E402
import evaluate  # noqa: E402
import mav  # noqa: E402
import pipeline  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rows", nargs="*", default=["6:3:1.0", f"1:1:{mav.RESIDUAL_START}"], help="interp_steps:sr_steps:start")
    p.add_argument("--n", type=int, default=32, help="seeded prompts (evaluate.py's, seed 0)")
    p.add_argument("--checkpoints", default=cli.SHIPPED)
    p.add_argument("--results", default="docs/cascade_steps.jsonl")
    p.add_argument("--base-cache", default="runs/cascade_steps/base.pt")
    return p.parse_args()


def prompts(cache, n: int):
    """evaluate.py's first n seeded prompts (labels, then ids, from seed 0) and as many empty ones."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(10, (n, 2), generator=g)
    return (labels, *evaluate.seeded_text(cache, labels, g, "cpu"))


def base_clips(args, model, text, null) -> torch.Tensor:
    """(n 1 16 32 32): the video model's clip of each prompt, at the default steps and guidance."""
    if os.path.exists(args.base_cache):
        clips = torch.load(args.base_cache)
        if len(clips) == len(text):
            return clips
    guidance = pipeline.checkpoint_meta(args.checkpoints, "video").get("guidance", mav.GUIDANCE)  # as sample.py's
    clips = torch.cat([mav.sample(model, (1, 1, 16, mav.BASE, mav.BASE), text[i:i + 1], null[i:i + 1],
                                  guidance=guidance, stride=torch.ones(1), generator=torch.Generator().manual_seed(i))
                       for i in tqdm(range(len(text)), desc="base clips")])
    os.makedirs(os.path.dirname(args.base_cache) or ".", exist_ok=True)
    torch.save(clips, args.base_cache)
    return clips


def cascade_rest(models, clips, text, null, interp_steps: int, sr_steps: int, start: float) -> torch.Tensor:
    """interp then SR of every clip -> (n 76 64 64) in [0, 1]."""
    out = []
    for i in tqdm(range(len(clips)), desc=f"interp {interp_steps}, sr {sr_steps}"):
        g = torch.Generator().manual_seed(1000 + i)
        x = mav.interpolate(models["interp"], clips[i:i + 1], text[i:i + 1], null[i:i + 1], steps=interp_steps,
                            start=start, generator=g)
        x = mav.super_resolve(models["sr"], x, text[i:i + 1], null[i:i + 1], steps=sr_steps, start=start, generator=g)
        out.append(mav.to_pixels(x.float())[:, 0])
    return torch.cat(out)


def main():
    args = parse_args()
    done = set()
    if os.path.exists(args.results):
        with open(args.results) as fh:
            done = {(r["n"], r["interp_steps"], r["sr_steps"], r["start"]) for r in map(json.loads, fh)}
    loaded = {s: pipeline.load_checkpoint(args.checkpoints, s) for s in mav.CASCADE}
    models = {s: model for s, (model, _) in loaded.items()}
    cache = pipeline.load_text_cache(args.checkpoints, loaded["video"][1]["text_encoder"], write=False)
    judge = evaluate.load_judge(args.checkpoints)
    labels, text, null = prompts(cache, args.n)
    precision = cli.choose_precision(torch.device("cpu"))[0]
    with torch.no_grad(), cli.autocast("cpu", precision):
        clips = base_clips(args, models["video"], text, null)
        for row in args.rows:
            interp_steps, sr_steps, start = row.split(":")
            interp_steps, sr_steps, start = int(interp_steps), int(sr_steps), float(start)
            if (args.n, interp_steps, sr_steps, start) in done:
                continue
            t0 = time.time()
            videos = cascade_rest(models, clips, text, null, interp_steps, sr_steps, start)
            seconds = time.time() - t0
            figures, _ = evaluate.judge_figures(SimpleNamespace(seed=0), judge, videos, labels, interp=True)
            result = {"n": args.n, "interp_steps": interp_steps, "sr_steps": sr_steps, "start": start,
                      "precision": precision,
                      **figures, "seconds": round(seconds, 1)}
            with open(args.results, "a") as fh:
                fh.write(json.dumps(result) + "\n")
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
