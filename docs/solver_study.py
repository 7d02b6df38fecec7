"""How close each sampler and step count comes to a reference from the same noise (docs/EVALUATION.md).

    python docs/solver_study.py video 4 ddim:50 dpm++:100 ddim:20 dpm++:10 dpm++:15 dpm++:20      # fp32
    python docs/solver_study.py interp 4 dpm++:40 ddim:20 ddim:8 dpm++:5 dpm++:8 --precision bf16
    python docs/solver_study.py sr 4 dpm++:40 ddim:10 ddim:20 dpm++:3 dpm++:4 dpm++:6 --precision bf16

The first two sampler:steps runs are the references (RMS distance in [0, 1] pixels to each is printed);
video samples N seeded prompts with guidance 3, interp and sr work on N held-out clips and also print
PSNR against the true frames. One JSON line per run.
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
    p.add_argument("stage", choices=list(mav.CASCADE))
    p.add_argument("n", type=int)
    p.add_argument("runs", nargs="+", help="sampler:steps, e.g. ddim:50 dpm++:20")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--checkpoints", default="checkpoints")
    args = p.parse_args(argv)
    n, stage = args.n, args.stage
    model, meta = pipeline.load_checkpoint(args.checkpoints, stage)
    cache = pipeline.load_text_cache(args.checkpoints, meta["text_encoder"], write=False)
    g = torch.Generator().manual_seed(1)
    if stage == "video":
        labels = torch.randint(10, (n, 2), generator=g)
        truth = None
    else:  # interp: 76 true frames at 5x the rate, every 5th given; sr: the 64² truth, its 32² version in
        truth, low, labels = evaluate.held_out_clips(stage, n, g)
        made = torch.arange(76) % mav.INTERP_FACTOR != 0 if stage == "interp" else slice(None)
    text, null = cache(mav.prompt_ids(labels, g)), cache(torch.full((n,), mav.NULL_PROMPT))

    def run(sampler, steps):
        kw = dict(steps=steps, sampler=sampler, generator=torch.Generator().manual_seed(7))
        with cli.autocast("cpu", args.precision):
            if stage == "video":
                x = mav.sample(model, (n, 1, 16, mav.BASE, mav.BASE), text, null, guidance=3.0,
                               stride=torch.ones(n), **kw)
            elif stage == "interp":
                x = mav.interpolate(model, low, text, null, **kw)
            else:
                x = mav.super_resolve(model, low, text, null, **kw)
        return mav.to_pixels(x.float())

    references = {}
    for name in args.runs:
        sampler, steps = name.split(":")
        t0 = time.time()
        x = run(sampler, int(steps))
        row = {"stage": stage, "sampler": sampler, "steps": int(steps), "precision": args.precision, "n": n,
               "seconds": round(time.time() - t0, 1)}
        if len(references) < 2:
            references[name] = x
        row.update({f"rms_to_{k}": round(((x - r) ** 2).mean().sqrt().item(), 4) for k, r in references.items()})
        if truth is not None:
            row["psnr_truth"] = round(evaluate.psnr(x[:, :, made], mav.to_pixels(truth)[:, :, made]).mean().item(), 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
