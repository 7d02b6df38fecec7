"""How well each model of a checkpoint folder predicts the clean frame from deep noise (docs/TRAINING.md,
"What each lever bought").

For the image and the video model of each folder: the x̂-MSE on the same 32 held-out 16-frame clips
with their prompts (the image model sees each clip's first frame), at log-SNR -20 (pure noise), -10,
-5 and -2. A model trained on the plain v-MSE predicts the mean frame from pure noise (the MSE of the
mean frame is printed beside); one trained with Min-SNR weights those inputs by ~0 and never learns it.

    python docs/noise_probe.py runs/cpu checkpoints/cpu checkpoints
"""
import argparse

import torch

import study  # noqa: E402,F401  (the repository on the import path)
import evaluate  # noqa: E402
import mav  # noqa: E402
import pipeline  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("folders", nargs="+")
    p.add_argument("--clips", type=int, default=32)
    args = p.parse_args(argv)
    LOGSNRS = (-20.0, -10.0, -5.0, -2.0)
    g = torch.Generator().manual_seed(1)
    clips, _, labels = evaluate.held_out_clips("video", args.clips, g)
    inputs = {"image": clips[:, :, 0], "video": clips}
    ids = mav.prompt_ids(labels, g)
    noise = {stage: [torch.randn(x.shape, generator=g) for _ in LOGSNRS] for stage, x in inputs.items()}
    print(f"mean frame: x̂-MSE {((inputs['image'] - inputs['image'].mean(0)) ** 2).mean().item():.3f}")

    for folder in args.folders:
        for stage, x in inputs.items():
            model, meta = pipeline.load_checkpoint(folder, stage)
            text = pipeline.load_text_cache(folder, meta["text_encoder"], write=False)(ids)
            row = []
            for value, eps in zip(LOGSNRS, noise[stage]):
                logsnr = torch.full((len(x),), value)
                alpha, sigma = (s.view(-1, *[1] * (x.ndim - 1)) for s in mav.alpha_sigma(logsnr))
                z = mav.add_noise(x, eps, logsnr)
                extra = dict(stride=torch.ones(len(x))) if stage == "video" else {}
                with torch.no_grad():
                    x0 = mav.v_to_x0(z, model.eval()(z, logsnr, text, **extra).float(), alpha, sigma)
                row.append(f"{value:g}: {((x0 - x) ** 2).mean().item():.3f}")
            print(f"{folder} {stage}: x̂-MSE at log-SNR " + ", ".join(row), flush=True)


if __name__ == "__main__":
    main()
