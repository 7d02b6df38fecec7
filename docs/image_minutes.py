"""The laptop chain's image stage alone for a number of minutes, with its recipe or the `cpu` preset changed,
then how often its frames show the prompt's pair (docs/TRAINING.md, "What buys the most per CPU-minute").

Trains as `train.py --stage all` trains its image stage (train.CHAIN["image"], the chain's cool-down and
EMA), into runs/image-minutes/NAME, from seed 0; then samples 128 seeded prompts x 4 frames with independent
noise (DDIM 30 steps, w = 3, bf16 where the CPU has it) and prints one JSON line: the judge's frame accuracy,
the share of frames it reads as the prompt's pair (what a video model's consistency follows).

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python docs/image_minutes.py recipe 14
    ... python docs/image_minutes.py wide 14 "channels=(32,64,128)"
    ... python docs/image_minutes.py b64 14 batch_size=64 warmup=50
    python docs/image_minutes.py --score runs/image-minutes/b64    # score a finished run again
"""
import ast
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mav  # noqa: E402
import train  # noqa: E402


def train_image(name: str, minutes: float, changes: dict) -> str:
    for key in ("channels", "head_dim", "attn_levels", "res_blocks"):  # the model: the `cpu` preset's
        if key in changes:
            mav.PRESETS["cpu"][key] = changes.pop(key)
    train.CHAIN = {"image": {**train.CHAIN["image"], **changes}}
    out = os.path.join("runs", "image-minutes", name)
    print("recipe", train.CHAIN["image"], "preset", mav.PRESETS["cpu"], flush=True)
    train.main(["--stage", "all", "--preset", "cpu", "--time-limit", str(minutes), "--out", out,
                "--sample-every", "0"])
    return out


@torch.no_grad()
def frame_accuracy(folder: str, prompts: int = 128, frames: int = 4) -> dict:
    model, meta = mav.load_checkpoint(folder, "image")
    judge, _ = mav.load_checkpoint(os.path.join(os.path.dirname(train.__file__), "checkpoints"), "judge")
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(10, (prompts, 2), generator=g)
    cache = mav.TextCache.load_or_build(folder, meta["text_encoder"])
    text, null = cache(mav.prompt_ids(labels, g)), cache(torch.full((prompts,), mav.NULL_PROMPT))
    each = lambda t: t[torch.arange(len(t)).repeat_interleave(frames)]  # noqa: E731
    device = torch.device("cpu")
    with mav.autocast(device, mav.choose_precision(device)[0]):
        made = [mav.sample(model, (len(t) * frames, 1, mav.BASE, mav.BASE), each(t), each(u), steps=30,
                           guidance=3.0, generator=g)
                for t, u in ((text[i:i + 16], null[i:i + 16]) for i in range(0, prompts, 16))]
    made = mav.to_pixels(torch.cat(made).float()).view(prompts, frames, mav.BASE, mav.BASE)
    real, _ = mav.MovingMNIST("test").sample(prompts, frames=frames, generator=torch.Generator().manual_seed(2))
    _, real_features = judge.read(mav.area_downsample(real)[:, 0].reshape(-1, 1, mav.BASE, mav.BASE))
    score = mav.score_videos(judge, made, labels, real_features)[0]
    return {"folder": folder, "step": meta.get("step"), "prompts": prompts, "frames": frames,
            **{k: score[k] for k in ("frame_accuracy", "adherence", "fd")}}


if __name__ == "__main__":
    if sys.argv[1] == "--score":  # a finished run (the table's were scored apart, in bf16 on the bf16 CPU)
        print(json.dumps(frame_accuracy(sys.argv[2])))
    else:
        name, minutes = sys.argv[1], float(sys.argv[2])
        changes = {k: ast.literal_eval(v) for k, v in (a.split("=", 1) for a in sys.argv[3:])}
        print(json.dumps(frame_accuracy(train_image(name, minutes, changes))))
