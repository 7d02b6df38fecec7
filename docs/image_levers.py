"""Which training levers make the laptop chain's image stage learn its prompts sooner (docs/TRAINING.md).

Trains the `cpu` image UNet for --steps steps of 32 frames from seed 0, every 250 steps measures the
"text gain" (how much of the v-MSE on 256 held-out frames the right prompt saves over a wrong one, at
four noise levels: the model's use of the text, which rises long before the judge can read a digit),
then samples 128 seeded prompts (DPM-Solver++, 20 steps, w = 3) and prints the share the judge reads
as the prompt's pair, for the raw and the EMA weights. One JSON line per check, the last one the result.

    python docs/image_levers.py --name plain --steps 1500
    python docs/image_levers.py --name cooldown --steps 1500 --cooldown 0.3
    python docs/image_levers.py --name min-snr --steps 1500 --cooldown 0.3 --min-snr 5
    python docs/image_levers.py --name min-snr-floor --steps 1500 --cooldown 0.3 --min-snr 5 --snr-floor 1

The loss is mav.diffusion_loss's, written out per example so that Min-SNR-γ's weight can be applied
to each: min(SNR, γ) / (SNR + 1) for v-prediction (Hang et al. 2023), or with --snr-floor F
clamp(SNR, F, γ) / (SNR + 1), which keeps the plain v-MSE's weight where the noise dominates.
"""
import argparse
import copy
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mav  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--name", required=True)
p.add_argument("--steps", type=int, default=1500)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--min-snr", type=float, default=0, help="γ of Min-SNR-γ (0: plain v-MSE)")
p.add_argument("--snr-floor", type=float, default=0, help="with --min-snr: the x̂ weight's floor (0: none)")
p.add_argument("--cooldown", type=float, default=0, help="share of the steps at the end with lr falling to 0")
p.add_argument("--ema", type=float, default=0.999)
p.add_argument("--every", type=int, default=250)
p.add_argument("--preset", default="cpu")
p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
p.add_argument("--checkpoints", default="checkpoints", help="folder of the judge and the text cache")
a = p.parse_args()

torch.manual_seed(0)
data, held = mav.MovingMNIST("train"), mav.MovingMNIST("test")
cache = mav.TextCache.load_or_build(a.checkpoints)
model = mav.UNet(mav.stage_config("image", a.preset))
opt = model.configure_optimizers(a.lr)
ema = copy.deepcopy(model).requires_grad_(False)
judge = mav.load_checkpoint(a.checkpoints, "judge")[0]
g = torch.Generator().manual_seed(123)
held_video, held_labels = held.sample(256, frames=1, generator=g)
held_x = mav.to_model(mav.area_downsample(held_video))[:, :, 0]
right = mav.prompt_ids(held_labels, g)
wrong = mav.prompt_ids(torch.randint(10, (256, 2), generator=g), g)
held_eps = torch.randn(held_x.shape, generator=g)
LOGSNRS = [-6.0, -3.0, 0.0, 3.0]


def autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16")


def loss_fn(x, text):
    t = torch.rand(x.shape[0])
    logsnr = mav.logsnr_schedule(t)
    alpha, sigma = (s.view(-1, 1, 1, 1) for s in mav.alpha_sigma(logsnr))
    eps = torch.randn_like(x)
    v = model(mav.add_noise(x, eps, logsnr), logsnr, text)
    err = ((v.float() - mav.v_target(x, eps, alpha, sigma)) ** 2).mean((1, 2, 3))
    if a.min_snr:
        snr = logsnr.exp()
        err = err * snr.clamp(min=a.snr_floor, max=a.min_snr) / (snr + 1)
    return err.mean()


@torch.no_grad()
def text_gain(net) -> dict:
    """logSNR -> % of the held-out v-MSE that the right prompt saves over a wrong one."""
    out = {}
    for value in LOGSNRS:
        logsnr = torch.full((256,), value)
        alpha, sigma = (s.view(-1, 1, 1, 1) for s in mav.alpha_sigma(logsnr))
        z, target = mav.add_noise(held_x, held_eps, logsnr), mav.v_target(held_x, held_eps, alpha, sigma)
        with autocast():
            good = ((net(z, logsnr, cache(right)).float() - target) ** 2).mean().item()
            bad = ((net(z, logsnr, cache(wrong)).float() - target) ** 2).mean().item()
        out[value] = round((bad - good) / bad * 100, 2)
    return out


def adherence(net, n=128) -> float:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(10, (n, 2), generator=g)
    ids = mav.prompt_ids(labels, g)
    with autocast():
        x = mav.sample(net, (n, 1, 32, 32), cache(ids), cache(torch.full((n,), mav.NULL_PROMPT)), steps=20,
                       sampler="dpm++", generator=g)
    frames = mav.to_pixels(x.float())[:, 0][:, None]  # n 1 h w: one-frame videos
    return round(mav.score_videos(judge, frames, labels)[0]["adherence"], 4)


t0, last = time.time(), None
for step in range(a.steps):
    lr = a.lr * min(1.0, (step + 1) / 100)
    if a.cooldown and step / a.steps > 1 - a.cooldown:
        lr *= (1 - step / a.steps) / a.cooldown
    for group in opt.param_groups:
        group["lr"] = lr
    video, labels = data.sample(a.batch, frames=1)
    x = mav.to_model(mav.area_downsample(video))[:, :, 0]
    ids = mav.prompt_ids(labels)
    ids = torch.where(torch.rand(a.batch) < mav.P_UNCOND, mav.NULL_PROMPT, ids)
    with autocast():
        loss = loss_fn(x, cache(ids))
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    decay = min(a.ema, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)
    if (step + 1) % a.every == 0:
        last = dict(step=step + 1, sec=round(time.time() - t0), gain_raw=text_gain(model), gain_ema=text_gain(ema))
        print(json.dumps(last), flush=True)
print(json.dumps(dict(name=a.name, args=vars(a), train_s=round(time.time() - t0), adh_raw=adherence(model),
                      adh_ema=adherence(ema), last=last)), flush=True)
