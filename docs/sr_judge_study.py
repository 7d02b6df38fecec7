"""SR's effect on what the judge reads: held-out clips (16 frames at 32²) through SR with each sampler and
step count, read back at 32² by the judge (docs/EVALUATION.md, "Old and new sampling defaults"). bf16 where the CPU has
it; the shipped checkpoints, 48 clips: ~10 min on 2 cores.

    python docs/sr_judge_study.py                      # checkpoints/, 48 clips, DDIM 10 and DPM-Solver++ 3
    python docs/sr_judge_study.py --n 16 ddim:10 dpm++:2 dpm++:3
"""
import argparse
import json
import time

import torch

import study  # noqa: E402,F401  (the repository on the import path)
import cli  # noqa: E402
import evaluate  # noqa: E402
import judge  # noqa: E402
import mav  # noqa: E402
import pipeline  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="*", default=["ddim:10", "dpm++:3"], help="sampler:steps")
    p.add_argument("--n", type=int, default=48, help="held-out clips")
    p.add_argument("--checkpoints", default=cli.SHIPPED)
    args = p.parse_args(argv)
    n = args.n
    model, meta = pipeline.load_checkpoint(args.checkpoints, "sr")
    reader = evaluate.load_judge(args.checkpoints)
    cache = pipeline.load_text_cache(args.checkpoints, meta["text_encoder"], write=False)
    g = torch.Generator().manual_seed(11)
    _, low, labels = evaluate.held_out_clips("sr", n, g)
    text, null = cache(mav.prompt_ids(labels, g)), cache(torch.full((n,), mav.NULL_PROMPT))
    KEYS = ("adherence", "consistency", "switch_rate")

    def scores(frames):  # n f 32 32 in [0, 1] -> the judge's figures
        return {k: v for k, v in judge.score_videos(reader, frames, labels)[0].items() if k in KEYS}

    def read(x64):  # n 1 f 64 64 in [-1, 1], read at 32² as the cascade's output is
        return scores(mav.area_downsample(mav.to_pixels(x64.float()).clamp(0, 1))[:, 0])

    print(json.dumps({"sr": "none (the 32² input)", **scores(mav.to_pixels(low)[:, 0])}), flush=True)
    for run in args.runs:
        sampler, steps = run.split(":")
        t0 = time.time()
        with cli.autocast("cpu", cli.choose_precision(torch.device("cpu"))[0]):
            x = torch.cat([mav.super_resolve(model, low[i:i + 16], text[i:i + 16], null[i:i + 16], steps=int(steps),
                                             sampler=sampler, generator=torch.Generator().manual_seed(7 + i))
                           for i in range(0, n, 16)])
        print(json.dumps({"sr": f"{sampler} {steps}", **read(x), "seconds": round(time.time() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
