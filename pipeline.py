"""
The cascade as a product: its files, the ranges of what it is asked, and the loader of a checkpoint folder.

mav.py is the method; what a reader of the method can skip lives here:

  1. Checkpoint files   safetensors + JSON, written atomically, read with every check
  2. The text cache     the training prompts' embeddings, kept beside the checkpoints
  3. Recipes, ranges    how each stage is trained; what a recipe or a call may ask: one line for each bad value
  4. Pipeline           mav.Cascade loaded from a folder, its calls checked before any step

    from pipeline import Pipeline
    cascade = Pipeline.load("checkpoints")
    videos, fps = cascade("2 and four", seed=0)   # (1 76 64 64) in [0, 1], 40 fps
"""
from __future__ import annotations

import inspect
import json
import math
import os
import re
import stat
import sys
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

import mav

# =============================================================================
# 1. Checkpoint files: safetensors + JSON
# =============================================================================
# <dir>/<stage>.safetensors holds the EMA weights (what sampling uses) in fp16;
# <dir>/<stage>.json beside it says what they are: the model config, the stage,
# the text encoder, the steps trained and any metrics. Both are written to a
# temporary name and renamed, so a run killed mid-write leaves the previous
# checkpoint intact. The full training state (weights, EMA, optimizer, RNG) for
# --resume is a separate <stage>-train.pt that is never shipped.

class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or not the one asked for (one-line message)."""


# Each file is written under a temporary name and renamed once whole (commit); a save of several files renames
# them only when all are written, so a full disk or a kill mid-write leaves the previous set as it was.

def write_tensors(tensors: dict, path: str, metadata=None) -> tuple[str, str]:
    tmp = path + ".tmp"
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as any file the user writes (safetensors makes it 0600)
    return tmp, path


def write_json(obj, path: str) -> tuple[str, str]:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2)
    return tmp, path


def write_torch(obj, path: str) -> tuple[str, str]:
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    return tmp, path


def commit(*written: tuple[str, str]):
    """Rename each (temporary, final) pair: the files appear together, each whole."""
    for tmp, path in written:
        os.replace(tmp, path)


def atomic_save_tensors(tensors: dict, path: str, metadata=None):
    commit(write_tensors(tensors, path, metadata))


def atomic_write_json(obj, path: str):
    commit(write_json(obj, path))


def atomic_torch_save(obj, path: str):
    commit(write_torch(obj, path))


def load_weights(model: nn.Module, state: dict):
    """load_state_dict, whose error names the first missing, unexpected or misshapen key (not only the model)."""
    own = model.state_dict()
    for key in own:
        if key not in state:
            raise CheckpointError(f"missing key {key}")
        if state[key].shape != own[key].shape:
            raise CheckpointError(f"{key} is {tuple(state[key].shape)} in the file, "
                                  f"{tuple(own[key].shape)} in the model")
    for key in state:
        if key not in own:
            raise CheckpointError(f"unexpected key {key}")
    model.load_state_dict(state)


def all_finite(tensors, dtype=None) -> bool:
    """Every number finite, also once cast to `dtype` (fp16 overflows past 65504)."""
    return all(bool(t.detach().to(dtype or t.dtype).isfinite().all()) for t in tensors if t.is_floating_point())


def checkpoint_files(folder: str, stage: str, model: nn.Module, meta: dict) -> list[tuple[str, str]]:
    """Write <folder>/<stage>.safetensors (fp16) and <stage>.json under temporary names, for commit()."""
    os.makedirs(folder, exist_ok=True)
    weights = {k: v.detach().to("cpu", torch.float16) for k, v in model.state_dict().items()}
    return [write_tensors(weights, os.path.join(folder, stage + ".safetensors")),
            write_json({"stage": stage, "config": asdict(model.cfg), **meta}, os.path.join(folder, stage + ".json"))]


def save_checkpoint(folder: str, stage: str, model: nn.Module, meta: dict):
    commit(*checkpoint_files(folder, stage, model, meta))


JSON_BYTES = 1 << 20  # a checkpoint's JSON is a few kB: a bigger one (or /dev/zero behind a link) is not one


def regular_file(path: str, limit: int | None = None):
    """Raise CheckpointError unless `path` is a regular file (a FIFO would block the read forever, a device never
    end it) of at most `limit` bytes."""
    if not os.path.isfile(path) or not stat.S_ISREG(os.stat(path).st_mode):
        raise CheckpointError(f"{path} is not a regular file" if os.path.exists(path) else f"no {path}")
    if limit is not None and os.path.getsize(path) > limit:
        raise CheckpointError(f"{path} is {os.path.getsize(path):,} bytes: not a checkpoint's JSON (a few kB)")


def read_json(path: str):
    regular_file(path, JSON_BYTES)
    with open(path) as fh:
        return json.load(fh)


def checkpoint_meta(folder: str, stage: str) -> dict:
    """The JSON beside a checkpoint, or {} if there is none (or it is not a JSON object: load_checkpoint says so)."""
    try:
        meta = read_json(os.path.join(folder, stage + ".json"))
    except (OSError, ValueError, CheckpointError):
        return {}
    return meta if isinstance(meta, dict) else {}


def no_checkpoint(folder: str, stage: str) -> str:
    """The one line for a stage whose files are not in `folder`."""
    return f"no {stage} checkpoint in {folder}/ ({stage}.safetensors + {stage}.json)"


def load_checkpoint(folder: str, stage: str, device="cpu", build=None):
    """-> (UNet in eval mode with fp32 weights, meta). Raises CheckpointError with a one-line reason.
    `build` makes the network from the config in the JSON (default: network(); the judge: its own)."""
    weights, config = os.path.join(folder, stage + ".safetensors"), os.path.join(folder, stage + ".json")
    if not (os.path.exists(weights) and os.path.exists(config)):
        raise CheckpointError(no_checkpoint(folder, stage))
    try:
        regular_file(weights)
        meta = read_json(config)
        if not (isinstance(meta, dict) and isinstance(meta.get("config"), dict)):
            raise CheckpointError(f"{config} is not a checkpoint's JSON (an object with its model's config)")
        if build is None and not isinstance(meta.get("text_encoder"), str):
            raise CheckpointError(f"{config} names no text_encoder (the encoder the network was trained with)")
        packaged = mav.DEFAULT_TEXT_ENCODER
        if build is None and not (meta["text_encoder"] == packaged or os.path.isdir(meta["text_encoder"])):
            raise CheckpointError(f"{config} names the text encoder {meta['text_encoder'][:100]!r}, which is not on "
                                  f"this machine (the packaged {packaged}, or a local folder): refused, not downloaded")
        if build is None:
            check_config(meta["config"])
        state = load_file(weights)
        odd = next((k for k, v in state.items() if v.dtype not in (torch.float16, torch.bfloat16, torch.float32)), None)
        if odd:
            raise CheckpointError(f"{weights}: {odd} is stored as {state[odd].dtype}, not as floating-point weights")
        model = (build or network)(meta["config"])
        load_weights(model, {k: v.float() for k, v in state.items()})
    except CheckpointError:
        raise
    except Exception as e:  # truncated file, bad JSON, wrong keys or shapes ...
        raise CheckpointError(f"cannot read the {stage} checkpoint in {folder}/: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None
    if meta.get("stage") != stage:
        raise CheckpointError(f"{weights} is a {meta.get('stage')!r} checkpoint, not {stage!r}")
    if not all_finite(state.values()):
        raise CheckpointError(f"{weights} holds weights that are not finite: a broken run's, refused")
    return model.to(device).eval(), meta


def load_networks(sources: dict, device="cpu") -> dict:
    """{stage: folder} -> {stage: (network, meta)}: the one loader of a cascade's networks (Pipeline.load's and
    the scripts'), all trained with one text encoder. Raises CheckpointError (one line)."""
    loaded = {stage: load_checkpoint(folder, stage, device) for stage, folder in sources.items()}
    encoders = sorted({meta["text_encoder"] for _, meta in loaded.values()})
    if len(encoders) > 1:
        folders = " and ".join(f"{folder}/" for folder in dict.fromkeys(sources.values()))
        raise CheckpointError(f"the checkpoints in {folders} were trained with different text encoders: {encoders}")
    return loaded


# The sizes a config may hold, field -> (low, high): wider than any preset by far, yet a network that a laptop
# can build. Checked by arithmetic before anything is built: a JSON's res_blocks 100000 is refused, not built.
CONFIG_SIZES = {"channels": (1, 1024), "res_blocks": (1, 16), "head_dim": (1, 1024), "text_dim": (1, 4096),
                "in_channels": (1, 16), "cond_channels": (0, 16), "out_channels": (1, 16)}
MAX_PARAMS = 200_000_000  # ~25x the base preset's video model


def check_config(config: dict):
    """Raise CheckpointError (one line) for a config whose sizes are out of CONFIG_SIZES or whose network would
    hold more than MAX_PARAMS weights (estimated: two 3x3 convolutions per ResBlock, down and up)."""
    channels = config.get("channels")
    if not (isinstance(channels, (list, tuple)) and 1 <= len(channels) <= 6):
        raise CheckpointError(f"config channels={channels!r}: a list of 1 to 6 widths")
    for name, (low, high) in CONFIG_SIZES.items():
        for value in (channels if name == "channels" else [config.get(name, getattr(mav.UNetConfig, name))]):
            if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
                raise CheckpointError(f"config {name}={value!r} is outside {low} .. {high}")
    levels = config.get("attn_levels", ())
    if not (isinstance(levels, (list, tuple)) and all(isinstance(k, int) and 0 <= k < len(channels) for k in levels)):
        raise CheckpointError(f"config attn_levels={levels!r}: levels of the {len(channels)} the network has")
    params = sum(2 * 2 * 9 * c * c * config.get("res_blocks", 1) for c in channels)
    if params > MAX_PARAMS:
        raise CheckpointError(f"config channels={list(channels)} res_blocks={config.get('res_blocks')}: about "
                              f"{params / 1e6:,.0f}M weights, over {MAX_PARAMS / 1e6:,.0f}M")


def network(config: dict) -> mav.UNet:
    """The UNet a checkpoint's config describes; an interp network of the paper's 2 conditioning channels is the
    GPU-trained one that makes whole frames, read through WholeFrameInterp. Configs written from 27 Nov to 7 Dec
    also say `residual` (true for interp and SR, false for the rest): what it said is what every network is today."""
    cfg = mav.UNetConfig(**{k: v for k, v in config.items() if k != "residual"})
    return (WholeFrameInterp if cfg.cond_channels == 2 else mav.UNet)(cfg)


class WholeFrameInterp(mav.UNet):
    """The GPU-trained interpolation network (checkpoints/interp), which makes whole frames x from 2 conditioning
    channels (the known frames, the mask), sampled as §7 samples today's: the difference d = x − guess. It reads
    z_x = z_d + α_t·guess and answers v̂_d = v̂_x + σ_t·guess (from z = α·x + σ·ε and v = α·ε − σ·x, as
    mav.ImageExpert does), the guess being the third conditioning channel, which it never saw. A CPU retrain in
    today's form read as well by PSNR but animated worse (docs/EVALUATION.md, "Interp and SR in today's form")."""

    def forward(self, z, logsnr, text: mav.Text, stride=None, cond=None, aug=None):
        alpha, sigma = (mav._bcast(s, z) for s in mav.alpha_sigma(logsnr))
        guess = cond[:, 2:3]
        return super().forward(z + alpha * guess, logsnr, text, stride, cond[:, :2]) + sigma * guess


# =============================================================================
# 2. The text cache: the training prompts' embeddings, beside the checkpoints
# =============================================================================
# Encoding 200 prompts takes the text encoder (seconds, and transformers); the cache makes it once per folder.

def text_cache_path(folder: str, encoder_name: str) -> str:
    return os.path.join(folder, "text-" + re.sub(r"[^A-Za-z0-9._-]+", "_", encoder_name) + ".safetensors")


def load_text_cache(folder: str, encoder_name: str = mav.DEFAULT_TEXT_ENCODER, write: bool = True) -> mav.TextCache:
    """The cache in `folder`; where it is missing or unreadable, the encoder's embeddings, written there
    for the next time only with `write` (training's own folder; sampling never changes what it reads)."""
    path = text_cache_path(folder, encoder_name)
    if os.path.exists(path) or os.path.exists(path + ".json"):
        try:
            regular_file(path)
            t = load_file(path)
            meta = read_json(path + ".json")
            text = mav.Text(t["tokens"].float(), t["mask"].bool(), t["pooled"].float())
            if meta["prompts"] != mav.all_prompts() or {len(text.tokens), len(text.mask), len(text.pooled)} != \
                    {len(meta["prompts"])} or not all_finite(text):
                raise ValueError("its rows are not the training prompts' embeddings, all finite")
            return mav.TextCache(meta["prompts"], text, meta["encoder"])
        except Exception as e:  # truncated, half of the pair, rows amiss: it is derived data, make it again
            print(f"warning: cannot read the text-embedding cache {path} ({type(e).__name__}); "
                  + ("rebuilding it" if write else "embedding the prompts in memory"), file=sys.stderr)
    prompts = mav.all_prompts()
    text = mav.TextEncoder(encoder_name)(prompts)
    if write:
        os.makedirs(folder, exist_ok=True)
        atomic_save_tensors({"tokens": text.tokens.half(), "mask": text.mask.to(torch.uint8),
                             "pooled": text.pooled.half()}, path)
        atomic_write_json({"encoder": encoder_name, "prompts": prompts}, path + ".json")
    stored = mav.Text(text.tokens.half().float(), text.mask, text.pooled.half().float())  # as the file holds it
    return mav.TextCache(prompts, stored, encoder_name)


# =============================================================================
# 3. Recipes, and the ranges of a recipe and of a cascade call
# =============================================================================
# How each stage is trained: one row per network (mav.STAGES says what it is), read by train.py for a single
# run (`--stage video`, any field changed with `--recipe field=value`) and row by row for the whole chain
# (`--stage all`, each stage its recipe's steps: the same checkpoints on a fast CPU and a slow one, only
# sooner or later). The judge that scores them (evaluate.py) is trained by the same loop, so it has a row too.
# The rows are the laptop chain's, chosen for the `cpu` preset on a 2-core CPU without native bf16; what each
# choice bought is in docs/TRAINING.md, with the GPU commands that made the shipped checkpoints.

@dataclass(frozen=True)
class Recipe:
    batch: int                  # examples per step: single frames (image, judge) or clips
    frames: int                 # frames per example (1: single frames)
    lr: float                   # peak learning rate, reached by a linear warm-up
    warmup: int                 # warm-up steps
    cooldown: float             # the last share of the run over which the lr falls linearly to 0
    min_snr: float              # Min-SNR-γ loss weight (diffusion_loss); 0: the plain v-MSE
    ema_decay: float            # decay of the EMA of the weights: what is saved and sampled
    joint_images: int = 0       # video: single frames with their prompts added to every step (joint training)
    guidance: float = 1.0       # the guidance weight it is sampled at, recorded in its checkpoint (1: unguided)
    scratch: bool = False       # video: fresh weights, no image model inflated (the ablation of §3.3's claim)
    temporal_only: bool = False # video: only the temporal layers learn; the image model's spatial layers stay frozen
    steps: int = 5000           # optimizer steps of a run (train.py --steps changes it)


RECIPES = {
    # image and video at guidance 7: at 3, a laptop's video model names the pair as often but lets its
    # digits switch more. Interp and SR weight their loss plainly: their one-step samplers start at
    # t = RESIDUAL_START (SNR 0.1), where Min-SNR's weight is 0.1. The steps make the laptop chain (train.py
    # --stage all): about two hours on a 2-core CPU (docs/TRAINING.md).
    "image": Recipe(batch=32, frames=1, lr=1e-3, warmup=100, cooldown=0.3, min_snr=5.0, ema_decay=0.99,
                    guidance=7.0, steps=17400),
    "video": Recipe(batch=4, frames=16, lr=5e-4, warmup=50, cooldown=0.3, min_snr=5.0, ema_decay=0.99,
                    joint_images=16, guidance=7.0, steps=2000),
    "interp": Recipe(batch=4, frames=16, lr=1e-3, warmup=20, cooldown=0.3, min_snr=0.0, ema_decay=0.99, steps=1700),
    "sr": Recipe(batch=2, frames=8, lr=1e-3, warmup=20, cooldown=0.3, min_snr=0.0, ema_decay=0.99, steps=1600),
    "judge": Recipe(batch=256, frames=1, lr=2e-4, warmup=200, cooldown=0.0, min_snr=0.0, ema_decay=0.999, steps=3000),
}


# The range of every recipe number: what a real run can use. Sizes beyond these are refused here; sizes
# within them that the machine cannot hold are refused by train.py's memory estimate, before any work.
RECIPE_RANGES = {
    "batch": (1, 65536, "examples per step: more than any machine's memory holds at 32²"),
    "frames": (1, 256, "frames per clip: temporal attention grows with frames², and the data has no longer clips"),
    "lr": (1e-8, 1.0, "AdamW moves each weight by about lr a step: above 1 a single step is rubbish, "
                      "below 1e-8 nothing moves"),
    "warmup": (0, 1_000_000, "steps of the linear warm-up (longer than the run: the lr never reaches its peak)"),
    "cooldown": (0, 0.99, "the share of the run the lr falls over"),
    "min_snr": (0, 10_000, "Min-SNR-γ; 0 is off, and past ~1e4 it weights like the plain loss"),
    "ema_decay": (0, 0.99999, "the EMA's decay: 1 would never move from the first weights"),
    "joint_images": (0, 65536, "single frames added to every video step"),
    "guidance": (0, 100, "the guidance weight: past ~100 the guided v saturates every pixel"),
    "scratch": (0, 1, "a switch"),
    "temporal_only": (0, 1, "a switch"),
    "steps": (1, 10_000_000, "optimizer steps: ten million is months on any machine"),
}


def check_recipe(recipe: Recipe, stage: str):
    """Raise ValueError (one line) where `recipe` cannot train `stage`: a field outside its range
    (RECIPE_RANGES), or one that does nothing for the stage."""
    for name, (low, high, why) in RECIPE_RANGES.items():
        value = getattr(recipe, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
            raise ValueError(f"{name}={value!r} is outside {low:g} .. {high:g} ({why})")
    clips = stage in mav.STAGES and mav.STAGES[stage].unet.get("temporal", False)
    if clips != (recipe.frames > 1):
        raise ValueError(f"frames={recipe.frames}: the {stage} stage trains on "
                         + ("clips of 2 frames or more" if clips else "single frames (frames=1)"))
    if stage == "interp" and (recipe.frames - 1) % mav.INTERP_FACTOR:
        raise ValueError(f"frames for interp must be 1 + a multiple of {mav.INTERP_FACTOR} (e.g. 16)")
    if stage != "video" and (recipe.joint_images or recipe.scratch or recipe.temporal_only):
        raise ValueError("joint_images, scratch and temporal_only apply to the video stage")
    if recipe.temporal_only and (recipe.joint_images or recipe.scratch):
        raise ValueError("temporal_only trains the temporal layers of an inflated image model: no joint images "
                         "(they pass only through the frozen spatial layers) and not from scratch")


# What a call may ask for, keyword -> (type, low, high, why): beyond these a run takes hours or the number
# means nothing. The scripts' flags are checked by the same table (cli.py).
CALL_RANGES = {
    "steps": (int, 1, 1000, "diffusion steps of the video model"),
    "interp_steps": (int, 1, 1000, "diffusion steps of interpolation"),
    "sr_steps": (int, 1, 1000, "diffusion steps of super-resolution"),
    "frames": (int, 1, 64, "frames the video model draws: temporal attention grows with frames²"),
    "extend_frames": (int, 0, 240, "frames added after the video model's clip"),
    "guidance": (float, 0, 100, "the guidance weight: past ~100 the guided v saturates every pixel"),
    "image_expert": (float, 0, 1, "β, the image model's share of v̂"),
    "strength": (float, 1e-6, 1, "how far from the given video: about 0 = the video, 1 = a fresh sample"),
    "seed": (int, 0, 2 ** 63 - 1, "a torch.Generator seed"),
}


def check_call(**kw):
    """Raise TypeError or ValueError, in one line naming the keyword, its value and its range, for a value of
    CALL_RANGES that a call cannot use (a NaN, a float for a count, a count out of range)."""
    for name, value in kw.items():
        kind, low, high, why = CALL_RANGES[name]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (kind is int and not isinstance(value, int)):
            raise TypeError(f"{name}={value!r}: must be {'an int' if kind is int else 'a number'} ({why})")
        if not (math.isfinite(value) and low <= value <= high):
            bound = "2^63 - 1" if high == 2 ** 63 - 1 else f"{high:g}"
            raise ValueError(f"{name}={value!r} is outside {low:g} .. {bound} ({why})")


# =============================================================================
# 4. Pipeline: a checkpoint folder's cascade, every call checked
# =============================================================================
class Pipeline(mav.Cascade):
    """mav.Cascade, loaded from a checkpoint folder, whose calls are checked before any step: a value out of
    CALL_RANGES, a picture of the wrong shape or a stage it does not hold is a TypeError or ValueError in one
    line naming the keyword, its value and its range."""

    @classmethod
    def load(cls, folder: str = "checkpoints", device="cpu", stages=None) -> "Pipeline":
        """Every stage with a checkpoint in `folder` (video always), or those named; the image model, where there
        is one (mav.py §10); the guidance weight the video model's trainer recorded. Raises CheckpointError (one
        line) for what cannot be read."""
        has = lambda name: os.path.exists(os.path.join(folder, name + ".json"))
        held = [s for s in mav.CASCADE if s == "video" or has(s)]
        has_image = os.path.exists(os.path.join(folder, "image.json"))
        expert = ["image"] if has_image and "video" in (stages or held) else []  # the video model's expert, mav.py §10
        names = [*(stages or held), *(["interp"] if "interp" in held else []), *expert]
        loaded = load_networks(dict.fromkeys(names, folder), device)
        models = {stage: model for stage, (model, _) in loaded.items()}
        metas = {stage: meta for stage, (_, meta) in loaded.items()}
        guidance = metas.get("video", {}).get("guidance", mav.GUIDANCE)
        encoder = next(iter(metas.values()))["text_encoder"]
        return cls(models, load_text_cache(folder, encoder, write=False), stages or held, guidance)

    @torch.no_grad()
    def __call__(self, prompts, seed: int = 0, **kw) -> tuple[torch.Tensor, float]:
        """mav.Cascade.__call__, after the prompts and the seed are checked."""
        listed = [prompts] if isinstance(prompts, str) else prompts
        if not (isinstance(listed, (list, tuple)) and listed and all(isinstance(p, str) for p in listed)):
            raise TypeError(f"prompts={prompts!r}: must be a prompt or a non-empty list of them (strings)")
        if "generator" not in kw:
            check_call(seed=seed)
        return super().__call__(prompts, seed, **kw)

    def generate(self, text: mav.Text, null: mav.Text, generator=None, **kw):
        """mav.Cascade.generate, after every keyword (given or default) and picture is checked."""
        a = inspect.signature(mav.Cascade.generate).bind(self, text, null, generator, **kw)
        a.apply_defaults()
        a = a.arguments  # every keyword, given or default
        check_call(**{k: a[k] for k in ("steps", "interp_steps", "sr_steps", "frames", "extend_frames",
                                        "image_expert", "strength")},
                   **({} if a["guidance"] is None else {"guidance": a["guidance"]}))
        self.check_inputs(len(text), a["frames"], a["first"], a["last"], a["video"], a["extend_frames"])
        return super().generate(text, null, generator, **kw)

    def check_inputs(self, n: int, frames: int, first, last, video, extend_frames: int):
        """The networks a call needs are held, and its pictures have the shapes it needs (ValueError, one line)."""
        need = ["interp"] * (first is not None or bool(extend_frames)) + ["video"] * (first is None)
        missing = [stage for stage in need if stage not in self.models]
        if missing:
            raise ValueError(f"this cascade holds no {missing[0]} network (it holds {', '.join(self.models)}): "
                             f"load it with {missing[0]!r} among its stages")
        if last is not None and first is None:
            raise ValueError("last= needs first= (the motion between two pictures)")
        shapes = {"first": (first, (n, 1, mav.BASE, mav.BASE)), "last": (last, (n, 1, mav.BASE, mav.BASE)),
                  "video": (video, (n, 1, frames, mav.BASE, mav.BASE))}
        for name, (x, shape) in shapes.items():
            if x is not None and (not torch.is_tensor(x) or tuple(x.shape) != shape):
                got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
                raise ValueError(f"{name}: a tensor of shape {shape} in [-1, 1] (n 1 {'frames ' * (name == 'video')}"
                                 f"h w), got {got}")
