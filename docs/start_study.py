"""Where the interp and SR networks' one step should start (BENCHMARKS.md, "45 s on a real AVX2 CPU").

Their sampler starts from their guess (the known frames blended, the low-res video upsampled), a difference of
zero, noised to t = start (mav.RESIDUAL_START by default). This takes one step from each start (and, for
reference, more steps from pure noise) and prints PSNR against the true frames of held-out clips, one JSON line
per run. (The figures in BENCHMARKS.md are of the whole-frame networks shipped before 7 Dec.)

    python docs/start_study.py sr 16 1.0:3 1.0:1 0.8:1 0.9:1 0.95:1
    python docs/start_study.py interp 8 1.0:6 1.0:2 0.85:1 0.95:1
"""
import argparse
import json
import time

import torch

import study  # noqa: E402,F401  (the repository on the import path)
import cli  # noqa: E402
import evaluate  # noqa: E402
import mav  # noqa: E402
import pipeline  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("stage", choices=["interp", "sr"])
    p.add_argument("n", type=int, help="held-out clips")
    p.add_argument("runs", nargs="+", help="start:steps, e.g. 0.8:1")
    p.add_argument("--checkpoints", default=cli.SHIPPED)
    args = p.parse_args(argv)
    model, meta = pipeline.load_checkpoint(args.checkpoints, args.stage)
    cache = pipeline.load_text_cache(args.checkpoints, meta["text_encoder"], write=False)
    g = torch.Generator().manual_seed(0)
    truth, low, labels = evaluate.held_out_clips(args.stage, args.n, g)  # interp: every 5th of 76; sr: 32² of 64²
    scored = torch.arange(truth.shape[2]) % mav.INTERP_FACTOR != 0 if args.stage == "interp" else slice(None)
    text, null = cache(mav.prompt_ids(labels, g)), cache(torch.full((args.n,), mav.NULL_PROMPT))

    def psnr(x):
        return round(evaluate.psnr(mav.to_pixels(x[:, :, scored]), mav.to_pixels(truth[:, :, scored])).mean().item(), 2)

    def made(steps: int, start: float):
        if args.stage == "interp":
            return mav.interpolate(model, low, text, null, steps=steps, start=start,
                                   generator=torch.Generator().manual_seed(3))
        return torch.cat([mav.super_resolve(model, low[i:i + 4], text[i:i + 4], null[i:i + 4], steps=steps,
                                            start=start, generator=torch.Generator().manual_seed(7 + i))
                          for i in range(0, args.n, 4)])

    for run in args.runs:
        start, steps = run.split(":")
        start = float(start)
        t0 = time.time()
        x = made(round(int(steps) / start), start)  # the sampler takes round(start · steps) of them
        print(json.dumps({"stage": args.stage, "start": start, "steps": int(steps), "psnr": psnr(x),
                          "seconds": round(time.time() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
