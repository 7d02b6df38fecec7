"""
Train one stage of the Make-A-Video cascade on Moving MNIST.

    python train.py --stage image                 # text-to-image on single frames
    python train.py --stage video                 # inflate the image model, train on 16-frame clips
    python train.py --stage video --unlabeled     # the paper's claim: clips without any text
    python train.py --stage interp                # masked frame interpolation, from the video model
    python train.py --stage sr                    # video super-resolution 32² -> 64²
    python train.py --stage judge                 # the digit judge that scores samples (sample.py --eval)
    python train.py --stage all --preset cpu --time-limit 120   # image -> video -> interp -> sr on a laptop

Every stage writes <out>/<stage>.safetensors + .json (EMA weights, what
sampling uses), <out>/<stage>-train.pt (the full state, for --resume),
<out>/<stage>.log (the loss) and sample grids under <out>/samples/.
"""
import copy
import json
import math
import os
import resource
import signal
import sys
import time
from dataclasses import asdict

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import mav

TRAINABLE = [*mav.STAGES, "judge"]  # the cascade's networks (mav.STAGES), and the judge that scores them
DEFAULT_BATCH = {**{name: stage.batch for name, stage in mav.STAGES.items()}, "judge": 256}

# The whole method in one command (--stage all): the cascade's stages in order, each a normal run into
# the same --out with its share of --time-limit and its own batch, clip length and learning rate.
# Chosen for a 2-core CPU without native bf16 (README, "No GPU? Train it on a laptop").
# Half the minutes go to the image stage: a video model keeps its digits about as well as its image
# model's frames show the prompt's pair, and on 2 cores that stage is short of steps (docs/TRAINING.md).
CHAIN = {
    "image": dict(share=0.50, batch_size=32, frames=16, lr=1e-3, warmup=100, min_snr=5.0),
    "video": dict(share=0.20, batch_size=4, frames=16, lr=5e-4, warmup=50, min_snr=5.0),  # + 4 x 4 joint images
    "interp": dict(share=0.15, batch_size=4, frames=16, lr=1e-3, warmup=20, min_snr=None),
    "sr": dict(share=0.15, batch_size=2, frames=8, lr=1e-3, warmup=20, min_snr=None),
}
# The chain's models are sampled with stronger classifier-free guidance than the GPU-trained ones: at
# w = 3 a laptop's video model names the prompt's pair as often but lets its digits switch more (w = 7:
# consistency 0.79 -> 0.86, switch rate 0.28 -> 0.18, frames further from real ones: FD 136 -> 172; on
# 100 prompts of another seed than the evaluation's, docs/TRAINING.md). Its image and video checkpoints
# record it, and sample.py samples them at it unless told otherwise.
CHAIN_GUIDANCE = 7.0
# Every stage of the chain ends with its learning rate falling linearly to 0 over the last COOLDOWN of
# its time and keeps a short EMA, mostly of that cool-down; the image and video stages weight their loss
# by Min-SNR-5 (mav.diffusion_loss). Measured on the image stage, 1,500 steps: the judge reads the
# prompt's pair on 11% of samples with neither, 17% with the cool-down, 20% with both (docs/TRAINING.md).
# Interpolation and SR keep the plain v-MSE: their few-step samplers draw the picture mostly from the
# first step's x̂, made from the conditioning alone at (nearly) pure noise, where Min-SNR's weight is ~0.
COOLDOWN = 0.3
CHAIN_EMA_DECAY = 0.99
CHAIN_ONLY_RECIPE = ("batch_size", "frames", "lr", "warmup", "ema_decay", "joint_images", "init", "unlabeled",
                     "eval_every")


def parse_args(argv=None):
    """The command, checked (one line and exit 2 for bad input, before anything is built), defaults filled."""
    p = parser()
    args = p.parse_args(argv)
    check_args(p, args)
    args.device, args.precision, args.precision_why = mav.device_and_precision(args.device, args.precision, p.error)
    args.out = args.out or os.path.join("runs", args.preset)
    if args.stage == "all":
        check_chain_out(p, args)
    elif not args.bench:
        check_out(p, args)
    return args


def parser():
    p = mav.ArgumentParser(description="Train one stage of Make-A-Video on Moving MNIST.",
                           formatter_class=mav.HelpFormatter)
    what = p.add_argument_group("what to train")
    what.add_argument("--stage", required=True, choices=TRAINABLE + ["all"],
                      help="which network to train; all = image, video, interp and sr in turn, into one --out, "
                           "sharing --time-limit (the laptop recipe)")
    what.add_argument("--preset", default=None, choices=list(mav.PRESETS),
                      help="model size: tiny (tests), cpu (the laptop chain), small, base (GPU); default small, "
                           "cpu for --stage all")
    what.add_argument("--steps", type=int, default=None,
                      help="total optimizer steps (resume continues up to it); default 5000; --stage all: per "
                           "stage, default no limit but the time")
    what.add_argument("--batch-size", type=int, default=None,
                      help=f"images or clips per step (default {DEFAULT_BATCH})")
    what.add_argument("--frames", type=int, default=None,
                      help="frames per training clip (video, interp, sr; default 16)")
    what.add_argument("--joint-images", type=int, default=None,
                      help="video stage: single frames with their prompts added to each step, so the text "
                           "control learned by the image model is kept (default 4 x batch; 0 = off)")
    what.add_argument("--time-limit", type=float, default=None,
                      help="stop (and save) after this many minutes, even before --steps; --stage all: "
                           "minutes of training for the whole chain (default 120, or the resumed chain's)")
    what.add_argument("--lr", type=float, default=None, help="peak learning rate (default 2e-4)")
    what.add_argument("--warmup", type=int, default=None, help="linear learning-rate warm-up steps (default 200)")
    what.add_argument("--ema-decay", type=float, default=None,
                      help="EMA decay of the weights that are saved (default 0.999)")
    what.add_argument("--seed", type=int, default=0)
    what.add_argument("--text-encoder", default=None,
                      help=f"Hugging Face text encoder (image default {mav.DEFAULT_TEXT_ENCODER}; "
                           "video: the image checkpoint's)")
    what.add_argument("--freeze-spatial", action="store_true", help="video stage: train only the temporal layers")
    what.add_argument("--unlabeled", action="store_true",
                      help="video stage: no text ever accompanies a clip (null prompt); implies --freeze-spatial")
    where = p.add_argument_group("where it goes: nothing is overwritten unasked")
    where.add_argument("--out", default=None,
                       help="folder of this run's checkpoints, shared by the stages of one cascade (the video stage "
                            "reads image from it; default runs/<preset>, never the shipped checkpoints/)")
    where.add_argument("--overwrite", action="store_true",
                       help="replace <out>/<stage>.safetensors if it exists (else the run refuses to start)")
    where.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                       help="continue exactly where a run stopped: from <out>/<stage>-train.pt, or from PATH")
    where.add_argument("--init", default=None, metavar="FOLDER",
                       help="start from the weights of this stage's checkpoint in FOLDER (e.g. checkpoints, to "
                            "fine-tune the shipped ones) instead of from its source stage; steps count from 0")
    add_watch_arguments(p.add_argument_group("watching it"))
    hardware = mav.add_device_arguments(p.add_argument_group("hardware and speed"))
    hardware.add_argument("--compile", nargs="?", const="default", default=None,
                          choices=["default", "reduce-overhead", "max-autotune"],
                          help="torch.compile the training step, in this mode (reduce-overhead adds CUDA graphs); "
                               "measure with --bench first")
    hardware.add_argument("--bench", action="store_true",
                          help="time warm-up + --bench-steps steps of fresh weights on the fast path and on the plain "
                               "path (fp32, eager, unfused AdamW), print one JSON line, train nothing")
    hardware.add_argument("--bench-steps", type=int, default=10, help="timed steps of --bench")
    return p


def add_watch_arguments(watch):
    watch.add_argument("--log-every", type=int, default=10, help="steps between loss readings (log file and bar)")
    watch.add_argument("--save-every", type=int, default=500, help="steps between checkpoints")
    watch.add_argument("--sample-every", type=int, default=1000, help="steps between sample grids (0 = never)")
    watch.add_argument("--eval-every", type=int, default=0,
                       help="video stage: steps between judge scores (adherence, switch rate) of 8 samples, "
                            "logged; needs <out>/judge.safetensors (0 = never)")


def check_args(p, args):
    """Every number and combination checked (one line, exit 2, before anything is built); defaults filled."""
    args.preset = args.preset or ("cpu" if args.stage == "all" else "small")
    if args.stage == "all":
        given = [f"--{k.replace('_', '-')}" for k in CHAIN_ONLY_RECIPE if getattr(args, k) not in (None, False)] + \
            (["--freeze-spatial"] if args.freeze_spatial else []) + (["--bench"] if args.bench else [])
        if given:
            p.error(f"{given[0]} applies to one stage: --stage all trains by its recipe (train.py CHAIN)")
        args.steps = 10 ** 9 if args.steps is None else args.steps
        args.batch_size, args.frames, args.lr, args.warmup = 1, mav.FRAMES, 1.0, 0  # each stage sets its own
    args.cooldown, args.min_snr = 0.0, None  # a single stage: constant lr, plain v-MSE; the chain's: CHAIN
    args.guidance = mav.GUIDANCE  # the weight its checkpoint records for sampling; the chain's: CHAIN_GUIDANCE
    args.steps = 5000 if args.steps is None else args.steps
    args.frames = mav.FRAMES if args.frames is None else args.frames
    args.lr = 2e-4 if args.lr is None else args.lr
    args.warmup = 200 if args.warmup is None else args.warmup
    args.ema_decay = 0.999 if args.ema_decay is None else args.ema_decay
    args.batch_size = DEFAULT_BATCH[args.stage] if args.batch_size is None else args.batch_size
    for name in ("steps", "batch_size", "frames", "log_every", "save_every", "bench_steps"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    for name in ("warmup", "sample_every", "eval_every"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    if not (math.isfinite(args.lr) and args.lr > 0) or not 0 <= args.ema_decay < 1:
        p.error("--lr must be a positive number and --ema-decay in [0, 1)")
    if args.time_limit is not None and not (math.isfinite(args.time_limit) and args.time_limit > 0):
        p.error("--time-limit must be a positive number of minutes")
    if args.stage != "video" and (args.unlabeled or args.freeze_spatial or args.eval_every):
        p.error("--unlabeled, --freeze-spatial and --eval-every apply to the video stage")
    if args.stage == "interp" and (args.frames - 1) % mav.INTERP_FACTOR:
        p.error(f"--frames for interp must be 1 + a multiple of {mav.INTERP_FACTOR} (e.g. 16)")
    if args.init and args.resume:
        p.error("--init starts a new run from a checkpoint's weights, --resume continues a run: choose one")
    args.freeze_spatial |= args.unlabeled
    if args.joint_images is None:
        args.joint_images = 4 * args.batch_size if args.stage == "video" and not args.freeze_spatial else 0


def check_out(p, args):
    """Never write over a checkpoint unasked: a finished or stopped run is continued, started from, or
    replaced only when the command says so."""
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        p.error(f"--out {args.out} is a file, not a folder")
    if args.resume or args.init or args.overwrite:
        return
    for name in (f"{args.stage}.safetensors", f"{args.stage}-train.pt"):
        path = os.path.join(args.out, name)
        if os.path.exists(path):
            p.error(f"{path} exists: continue that run with --resume, start from its weights with --init "
                    f"{args.out}, or replace it with --overwrite")


def example_frames(args) -> int:
    """Frames in one training example: a clip's for the stages trained on clips, else 1."""
    return args.frames if args.stage in mav.STAGES and mav.STAGES[args.stage].clips else 1


def load_for(args, stage, needed_by):
    """A checkpoint a stage starts from, or a one-line error that says how to make it."""
    try:
        model, meta = mav.load_checkpoint(args.out, stage, text_encoder=args.text_encoder)
    except mav.CheckpointError as e:
        mav.die(f"{e}; the {needed_by} stage starts from it: run python train.py --stage {stage} --out {args.out}")
    if meta.get("preset") != args.preset:
        mav.die(f"the {stage} checkpoint in {args.out}/ is preset {meta.get('preset')!r}, not {args.preset!r}")
    args.text_encoder = meta["text_encoder"]
    return model, meta


def build_model(args):
    """-> (model, meta of the model's origin): what mav.STAGES says the stage starts from.

    image and sr: new UNets (sr at 64², with the upsampled low-res video as an input channel and its
    noise level embedded). video: the image checkpoint, inflated. interp: the video checkpoint, inflated
    again with 3 zero-initialised input channels (known frames, mask, their blend in time). interp and sr
    make the difference to a simple guess (mav.temporal_fill, bicubic). --init: the stage's own weights.
    """
    if args.init:  # fine-tuning: the stage's own weights, from any folder
        return init_model(args)
    if args.stage == "judge":  # no text, no preset: one small CNN reads every stage
        return mav.Judge(mav.JudgeConfig()), {}
    source = mav.STAGES[args.stage].starts_from
    if source is None:
        if args.stage == "image":
            args.text_encoder = args.text_encoder or mav.DEFAULT_TEXT_ENCODER
        elif args.text_encoder is None:  # the cascade's encoder: the image model's if there is one
            args.text_encoder = mav.checkpoint_meta(args.out, "image").get("text_encoder", mav.DEFAULT_TEXT_ENCODER)
        return mav.UNet(mav.stage_config(args.stage, args.preset)), {}
    model, meta = load_for(args, source, args.stage)
    cfg = mav.stage_config(args.stage, args.preset, source=model.cfg)
    return mav.inflate(model.state_dict(), cfg), {f"{source}_step": meta.get("step")}


def init_model(args):
    """--init FOLDER: the stage's checkpoint in FOLDER, to train on from its weights (steps count from 0)."""
    try:
        model, meta = mav.load_checkpoint(args.init, args.stage, text_encoder=args.text_encoder)
    except mav.CheckpointError as e:
        mav.die(f"--init: {e}")
    if args.stage != "judge" and meta.get("preset") != args.preset:
        mav.die(f"--init: the {args.stage} checkpoint in {args.init}/ is preset {meta.get('preset')!r}, "
                f"not {args.preset!r}")
    args.text_encoder = meta.get("text_encoder")
    kept = {k: v for k, v in meta.items() if k.endswith("_step") and k != "init_step"}
    return model.train(), {**kept, "init_step": (meta.get("step") or 0) + meta.get("init_step", 0)}


class Batches:
    """Training batches made on the device: x in [-1, 1] and prompt ids with CFG dropout."""

    def __init__(self, args, device):
        self.data = mav.MovingMNIST("train", device)
        self.args = args

    def prompts(self, labels):
        ids = mav.prompt_ids(labels)
        if self.args.unlabeled:  # no text ever accompanies a clip
            return torch.full_like(ids, mav.NULL_PROMPT)
        drop = torch.rand(len(ids), device=ids.device) < mav.P_UNCOND
        return torch.where(drop, torch.full_like(ids, mav.NULL_PROMPT), ids)

    def frames(self, n):  # single frames: (b 1 32 32)
        video, labels = self.data.sample(n, frames=1)
        return mav.to_model(mav.area_downsample(video))[:, :, 0], self.prompts(labels)

    def clips(self, n):   # clips: (b 1 f 32 32)
        video, labels = self.data.sample(n, frames=self.args.frames, stride=1.0)
        return mav.to_model(mav.area_downsample(video)), self.prompts(labels)

    def interp_clips(self, n, cfg):  # clips with known frames: interpolation at 5x or extrapolation
        mask, stride = mav.training_masks(n, self.args.frames, self.data.device)
        video, labels = self.data.sample(n, frames=self.args.frames, stride=stride)
        x = mav.to_model(mav.area_downsample(video))
        cond = mav.masked_conditioning(x, mask, cfg.cond_channels)
        target = x - cond[:, 2:] if cfg.residual else x  # the third channel is the guess, mav.temporal_fill
        return target, self.prompts(labels), dict(stride=stride, cond=cond), \
            ~mask[:, None, :, None, None]  # the loss counts the frames to be made

    def sr_clips(self, n, cfg):  # 64² clips (or their difference to the guess), the 32² versions upsampled, noised
        video, labels = self.data.sample(n, frames=self.args.frames, stride=1.0)
        low = mav.to_model(mav.area_downsample(video))
        guess = mav.sr_input(low, cfg)
        t_aug = torch.rand(n, device=video.device) * mav.SR_AUG_MAX_T
        cond, aug = mav.noise_augment(guess, t_aug)
        target = mav.to_model(video) - guess if cfg.residual else mav.to_model(video)
        return target, self.prompts(labels), dict(cond=cond, aug=aug)

    def loss(self, model, cache, stage, stride):
        """The stage's loss on a fresh batch (diffusion, or the judge's digit counts)."""
        n, weighting = self.args.batch_size, dict(min_snr=self.args.min_snr)
        if stage == "judge":
            video, labels = self.data.sample(n, frames=1)
            return mav.judge_loss(model, mav.augment(mav.area_downsample(video)[:, :, 0]), labels)
        if stage == "image":
            x, ids = self.frames(n)
            return mav.diffusion_loss(model, x, cache(ids), **weighting)
        if stage == "interp":
            x, ids, cond, loss_mask = self.interp_clips(n, model.cfg)
            return mav.diffusion_loss(model, x, cache(ids), loss_mask=loss_mask, **weighting, **cond)
        if stage == "sr":
            x, ids, cond = self.sr_clips(n, model.cfg)
            return mav.diffusion_loss(model, x, cache(ids), **weighting, **cond)
        x, ids = self.clips(n)
        loss = mav.diffusion_loss(model, x, cache(ids), stride=stride, **weighting)
        if self.args.joint_images:  # images through the same net, temporal layers skipped
            xi, idi = self.frames(self.args.joint_images)
            loss = loss + mav.diffusion_loss(model, xi, cache(idi), **weighting)
        return loss


def preview(model, cache, stage, path, device, frames):
    """A small grid of samples from the EMA model, so progress can be seen as well as read.
    interp and sr work on real held-out clips, so their grids show what they add."""
    kw = dict(steps=25, guidance=mav.GUIDANCE, generator=torch.Generator().manual_seed(0))
    n = 4
    if stage in ("image", "video"):
        prompts = ["2 and four", "one and 7", "3 and 3", "five and nine"]
        text, null = cache.embed(prompts).to(device), cache.embed([""] * n).to(device)
        shape = (n, 1, mav.BASE, mav.BASE) if stage == "image" else (n, 1, frames, mav.BASE, mav.BASE)
        stride = None if stage == "image" else torch.ones(n, device=device)
        x = mav.sample(model, shape, text, null, stride=stride, **kw)
        videos = x[:, :, None] if stage == "image" else x
    else:
        video, labels = mav.MovingMNIST("test", device).sample(n, frames=mav.FRAMES,
                                                               generator=torch.Generator(device).manual_seed(0))
        text = cache(mav.prompt_ids(labels)).to(device)
        null = cache(torch.full((n,), mav.NULL_PROMPT, device=device)).to(device)
        low = mav.to_model(mav.area_downsample(video))
        if stage == "interp":
            videos = mav.interpolate(model, low, text, null, **kw)
        else:
            videos = mav.super_resolve(model, low, text, null, **kw)
    videos = mav.to_pixels(videos)[:, 0].float().cpu()
    mav.write_video(path, mav.video_grid(videos), fps=mav.BASE_FPS * (mav.INTERP_FACTOR if stage == "interp" else 1),
                    scale=2)


def quick_eval(model, judge, cache, device, frames, n=8):
    """Judge scores of n samples (25 DDIM steps) for seeded training-style prompts: is text control kept?"""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(10, (n, 2), generator=g)
    text = cache(mav.prompt_ids(labels, g).to(device))
    null = cache(torch.full((n,), mav.NULL_PROMPT, device=device))
    x = mav.sample(model, (n, 1, frames, mav.BASE, mav.BASE), text, null, steps=25, guidance=mav.GUIDANCE, generator=g,
                   stride=torch.ones(n, device=device))
    return mav.score_videos(judge, mav.to_pixels(x)[:, 0].float(), labels)[0]


class StageLoss(torch.nn.Module):
    """The stage's loss on a fresh batch as one module call: what DistributedDataParallel wraps
    (the video stage's clip and joint-image losses are two forward passes of one step)."""

    def __init__(self, model, batches, cache, stage, stride):
        super().__init__()
        self.model, self.batches, self.cache, self.stage, self.stride = model, batches, cache, stage, stride

    def forward(self):
        return self.batches.loss(self.model, self.cache, self.stage, self.stride)


def setup_distributed(args):
    """Under torchrun: one process per device (NCCL on CUDA, gloo on CPU). -> (rank, world size)."""
    if "RANK" not in os.environ:
        return 0, 1
    cuda = args.device.startswith("cuda")
    dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        args.device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(args.device)
    return dist.get_rank(), dist.get_world_size()


def load_train_state(args, path):
    """The full training state for --resume, refused (one line) if it is another run's."""
    if not os.path.exists(path):
        mav.die(f"--resume: no {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        mav.die(f"--resume: cannot read {path}: {type(e).__name__}")
    for key in ("stage", "preset", "text_encoder", "unlabeled"):
        mine = getattr(args, key)
        if key == "text_encoder" and mine is None:
            continue  # not given: take the state's
        if key == "preset" and args.stage == "judge":
            continue
        if state.get(key) != mine:
            mav.die(f"--resume: {path} is a run with {key} {state.get(key)!r}, not {mine!r}")
    args.text_encoder = state["text_encoder"]
    return state


def optimizer_step(step_loss, model, optimizer, autocast):
    """One training step: the loss under autocast, backward, grad-norm clip 1.0, AdamW. -> the loss."""
    with autocast:
        loss = step_loss()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss


# Dense bf16 peak of the accelerators MFU is quoted against (FLOP/s), by a part of their name.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def compiled(module, mode: str):
    return torch.compile(module, mode=None if mode == "default" else mode)


def fresh_model(stage, preset):
    """A model of the stage's shape with fresh weights (what --bench times)."""
    return mav.Judge(mav.JudgeConfig()) if stage == "judge" else mav.UNet(mav.stage_config(stage, preset))


def bench(args, device):
    """Training speed of a stage: the fast path (bf16 autocast, fused AdamW, SDPA, optional
    torch.compile) beside the plain path (fp32, eager, unfused AdamW), in one process."""
    from torch.utils.flop_counter import FlopCounterMode
    cache = None if args.stage == "judge" else mav.TextCache.load_or_build(
        args.out, args.text_encoder or mav.DEFAULT_TEXT_ENCODER).to(device)
    batches = Batches(args, device)
    stride = torch.ones(args.batch_size, device=device)
    cuda = device.type == "cuda"
    sync = lambda: mav.synchronize(device)

    def timed(fast: bool):
        torch.manual_seed(args.seed)
        model = fresh_model(args.stage, args.preset).to(device)
        if fast:
            optimizer = model.configure_optimizers(args.lr, device_type=device.type)
        else:
            optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, foreach=False, fused=False)
        step_loss = StageLoss(model, batches, cache, args.stage, stride)
        run = compiled(step_loss, args.compile) if fast and args.compile else step_loss
        autocast = mav.autocast(device, args.precision if fast else "fp32")

        def one_step(module):
            optimizer_step(module, model, optimizer, autocast)

        flops = None
        if fast:  # counted on one eager step (the compiled graph does the same arithmetic)
            with FlopCounterMode(display=False) as counter:
                one_step(step_loss)
            flops = counter.get_total_flops()
        for _ in range(3):
            one_step(run)
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        for _ in tqdm(range(args.bench_steps), desc=f"bench {'fast' if fast else 'plain'}", leave=False):
            one_step(run)
        sync()
        step_s = (time.perf_counter() - t0) / args.bench_steps
        peak = (torch.cuda.max_memory_allocated(device) if cuda
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2 ** 30
        return step_s, flops, peak, model.num_params(), lambda: one_step(run)

    step_s, flops, peak, params, fast_step = timed(fast=True)
    plain_s = timed(fast=False)[0]
    print(json.dumps(bench_report(args, device, step_s, flops, peak, params, plain_s)))
    if cuda:  # where the time goes: the top kernels of a few fast steps, for BENCHMARKS.md
        print(profile_table(fast_step), file=sys.stderr)


def bench_report(args, device, step_s, flops, peak, params, plain_s) -> dict:
    """--bench's JSON line: speed, memory, MFU (against the accelerator's bf16 peak) and the plain path."""
    samples = args.batch_size + args.joint_images
    frames = args.batch_size * example_frames(args) + args.joint_images
    name = mav.device_name(device)
    peak_flops = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
    achieved = flops / step_s
    return {
        "bench": "train", "stage": args.stage, "preset": args.preset, "device": name, "torch": torch.__version__,
        "params": params, "batch": args.batch_size, "joint_images": args.joint_images,
        "precision": args.precision, "compile": args.compile,
        "step_s": round(step_s, 4), "samples_per_s": round(samples / step_s, 1),
        "frames_per_s": round(frames / step_s, 1), "peak_mem_gib": round(peak, 2),
        "flops_per_step": flops, "achieved_tflops": round(achieved / 1e12, 3),
        "peak_tflops": peak_flops and peak_flops / 1e12,
        "mfu": peak_flops and round(achieved / peak_flops, 4),
        "plain_step_s": round(plain_s, 4), "speedup_vs_plain": round(plain_s / step_s, 2),
    }


def profile_table(step, steps: int = 3) -> str:
    """torch.profiler over a few CUDA training steps -> the GPU's busy share of the wall time and the
    kernels that take most of it: whether a step is bound by its arithmetic or by launching kernels."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    averages = prof.key_averages()
    kernels = [e for e in averages if str(e.device_type).endswith("CUDA")]
    busy = sum(e.self_device_time_total for e in kernels) / 1e6  # µs -> s
    launches = sum(e.count for e in kernels) / steps
    head = (f"profile: GPU busy {busy / wall:.0%} of {wall / steps * 1e3:.1f} ms per step, "
            f"{launches:.0f} kernels per step")
    return head + "\n" + averages.table(sort_by="self_device_time_total", row_limit=12)


class StopSignal:
    """Ctrl-C (SIGINT) and SIGTERM (a job scheduler, `kill`) ask the loop to stop after the step in flight:
    the state it then saves is a step boundary, so a resumed run equals an uninterrupted one bit for bit.
    A second signal stops at once, without saving."""

    def __init__(self):
        self.received = False
        self.previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}

    def __call__(self, signum, frame):
        if self.received:
            raise KeyboardInterrupt
        self.received = True

    def restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


class Trainer:
    """One run of one stage, on every rank of a torchrun: set up or resume, then loop, checking and
    saving as it goes, then finish."""

    def __init__(self, args, budget_s: float | None = None):
        self.args, self.budget_s = args, budget_s  # budget_s: seconds of training in all, resumed time included
        self.rank, self.world = setup_distributed(args)
        self.main_process = self.rank == 0
        self.device = torch.device(args.device)
        self.state_path = os.path.join(args.out, f"{args.stage}-train.pt")
        torch.manual_seed(args.seed)  # the same initial weights on every rank
        state = load_train_state(args, self.state_path if args.resume is True else args.resume) \
            if args.resume else None
        self.model, self.origin = resumed_model(args, state) if state else build_model(args)
        self.model.to(self.device)
        if args.freeze_spatial:
            temporal = mav.temporal_names(self.model.cfg)
            for name, p in self.model.named_parameters():
                p.requires_grad_(name in temporal)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.optimizer = self.model.configure_optimizers(args.lr, device_type=self.device.type)
        self.step = self.saved_step = self.restore(state)
        self.t_start = time.time() - (state or {}).get("train_seconds", 0.0)
        self.cache = None if args.stage == "judge" else \
            mav.TextCache.load_or_build(args.out, args.text_encoder).to(self.device)
        self.judge = self.load_judge() if args.eval_every else None
        step_loss = StageLoss(self.model, Batches(args, self.device), self.cache, args.stage,
                              torch.ones(args.batch_size, device=self.device))
        step_loss = compiled(step_loss, args.compile) if args.compile else step_loss
        # under DDP, gradients are averaged across ranks in backward(); the weights stay identical
        self.step_loss = DistributedDataParallel(step_loss) if self.world > 1 else step_loss
        self.autocast = mav.autocast(self.device, args.precision)
        self.log = None
        if self.main_process:
            os.makedirs(args.out, exist_ok=True)
            self.log = open(os.path.join(args.out, f"{args.stage}.log"), "a")
            self.describe()

    def restore(self, state) -> int:
        """EMA, optimizer and every rank's random stream from a saved state -> the step to go on from."""
        if state is None:
            torch.manual_seed(self.args.seed + self.rank)  # each rank its own data
            return 0
        self.ema.load_state_dict(mav.renamed(state["ema"]))
        self.optimizer.load_state_dict(state["optimizer"])
        if len(state["rng_cpu"]) == self.world:  # each rank continues its own random stream
            torch.set_rng_state(state["rng_cpu"][self.rank])
            if self.device.type == "cuda" and state.get("rng_cuda"):
                torch.cuda.set_rng_state(state["rng_cuda"][self.rank], self.device)
        else:
            print(f"warning: {self.world} processes now, {len(state['rng_cpu'])} when saved: the data stream "
                  "is reseeded, so the run continues correctly but not bit-exactly", file=sys.stderr)
            torch.manual_seed(self.args.seed + 1000 * state["step"] + self.rank)
        return state["step"]

    def load_judge(self):
        try:
            return mav.load_checkpoint(self.args.out, "judge", self.device)[0]
        except mav.CheckpointError as e:
            mav.die(f"--eval-every: {e}; train it with: python train.py --stage judge --out {self.args.out}")

    def describe(self):
        args, world = self.args, self.world
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        print(f"{args.stage}: {self.model.num_params() / 1e6:.2f}M parameters ({trainable / 1e6:.2f}M trained), "
              f"preset {args.preset}, batch {args.batch_size} x {world} process{'es' if world > 1 else ''}, "
              f"{args.precision} on {self.device}, text {args.text_encoder}, out {args.out}/")

    def last_good(self) -> str:
        if self.saved_step:
            return f"the last good checkpoint (step {self.saved_step}) is kept in {self.args.out}/"
        return "no checkpoint of this run was saved"

    def save(self, collective=True, **metrics):
        """Rank 0 writes the EMA checkpoint and the full training state (every rank's RNG state,
        gathered: so `collective` calls must happen on all ranks at the same step). Weights that are
        not all finite are never written: the run stops, and the last good checkpoint stays."""
        args, device, world = self.args, self.device, self.world
        tensors = [*self.model.parameters(), *self.ema.parameters()]
        if not bool(torch.stack([p.detach().isfinite().all() for p in tensors]).all()):
            mav.die(f"the weights are not finite at step {self.step}: not saved; {self.last_good()}", code=1)
        rng = [torch.get_rng_state()]
        rng_cuda = [torch.cuda.get_rng_state(device)] if device.type == "cuda" else None
        if world > 1 and collective:
            rng = [None] * world
            dist.all_gather_object(rng, torch.get_rng_state())
            if rng_cuda is not None:
                rng_cuda = [None] * world
                dist.all_gather_object(rng_cuda, torch.cuda.get_rng_state(device))
        if not self.main_process:
            return
        seconds = time.time() - self.t_start
        meta = dict(preset=args.preset, text_encoder=args.text_encoder, step=self.step, batch_size=args.batch_size,
                    processes=world, lr=args.lr, frames=example_frames(args), min_snr=args.min_snr,
                    cooldown=args.cooldown, ema_decay=args.ema_decay, unlabeled=args.unlabeled,
                    freeze_spatial=args.freeze_spatial, joint_images=args.joint_images,
                    device=str(device), train_seconds=round(seconds, 1), **self.origin)
        if args.stage in ("image", "video"):  # interp and SR are sampled unguided
            meta["guidance"] = args.guidance
        mav.save_checkpoint(args.out, args.stage, self.ema, {**meta, **({"metrics": metrics} if metrics else {})})
        mav.atomic_torch_save(dict(stage=args.stage, preset=args.preset, text_encoder=args.text_encoder,
                                   unlabeled=args.unlabeled, config=asdict(self.model.cfg), origin=self.origin,
                                   model=self.model.state_dict(), ema=self.ema.state_dict(), step=self.step,
                                   optimizer=self.optimizer.state_dict(), rng_cpu=rng, rng_cuda=rng_cuda,
                                   train_seconds=seconds), self.state_path)
        self.saved_step = self.step

    def stop_reason(self, stop: StopSignal, run_start: float) -> str | None:
        """'signal' or 'time' when the run must stop before the next step; rank 0 decides for every rank,
        so that all stop at the same step."""
        time_up = self.args.time_limit is not None and time.time() - run_start > 60 * self.args.time_limit
        time_up |= self.budget_s is not None and time.time() - self.t_start > self.budget_s
        reason = "signal" if stop.received else "time" if time_up else None
        if self.world == 1:
            return reason
        code = torch.tensor([None, "time", "signal"].index(reason), device=self.device)
        dist.broadcast(code, 0)
        return [None, "time", "signal"][int(code.item())]

    def progress(self) -> float:
        """How far the run is, 0 -> 1: by --steps, or by its time budget where it has one (the further)."""
        done = self.step / self.args.steps
        if self.budget_s:
            done = max(done, (time.time() - self.t_start) / self.budget_s)
        return min(done, 1.0)

    def learning_rate(self) -> float:
        """Linear warm-up to --lr, then constant; over the last `cooldown` of the run, linearly down to 0."""
        args = self.args
        lr = args.lr * min(1.0, (self.step + 1) / max(1, args.warmup))
        if args.cooldown:
            lr *= min(1.0, (1 - self.progress()) / args.cooldown)
        return lr

    def train_step(self):
        """lr warm-up, one optimizer step, the EMA update. -> the loss (on the device; not read here)."""
        args = self.args
        self.lr = self.learning_rate()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        loss = optimizer_step(self.step_loss, self.model, self.optimizer, self.autocast)
        decay = min(args.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()), 1 - decay)
        self.step += 1
        return loss

    def read_loss(self, loss, rate: float, bar):
        """The loss (mean over ranks), read on the host: logged, shown, and a non-finite one stops the run."""
        value = loss.detach().float()
        if self.world > 1:  # the mean over ranks, so that every rank sees the same number
            dist.all_reduce(value)
            value /= self.world
        value = value.item()  # the only host sync of the loop
        if not math.isfinite(value):
            bar.close()
            mav.die(f"loss is {value} at step {self.step}; stopped, {self.last_good()}", code=1)
        bar.set_postfix(loss=f"{value:.4f}", samples_s=f"{rate:.0f}")
        if self.main_process:
            self.log.write(f"step {self.step} loss {value:.5f} lr {self.lr:.2e} samples/s {rate:.1f} "
                           f"elapsed {time.time() - self.t_start:.0f}\n")
            self.log.flush()

    def watch(self, bar):
        """Rank 0, now and then: judge scores of a few samples (--eval-every) and a preview grid."""
        args, step = self.args, self.step
        if not self.main_process:
            return
        if self.judge is not None and (step % args.eval_every == 0 or step == args.steps):
            scores = quick_eval(self.ema, self.judge, self.cache, self.device, args.frames)
            bar.set_postfix(adherence=scores["adherence"], switch=scores["switch_rate"])
            self.log.write(f"step {step} eval adherence {scores['adherence']:.3f} switch_rate "
                           f"{scores['switch_rate']:.3f} motion_lag_ratio {scores['motion_lag_ratio']:.3f}\n")
            self.log.flush()
        if args.sample_every and args.stage != "judge" and (step % args.sample_every == 0 or step == args.steps):
            ext = "gif" if example_frames(args) > 1 else "png"
            path = os.path.join(args.out, "samples", f"{args.stage}-{step:06d}.{ext}")
            preview(self.ema, self.cache, args.stage, path, self.device, args.frames)

    def train(self, bar=None):
        """The loop, up to --steps, or until Ctrl-C / SIGTERM / --time-limit (then save and stop).
        bar: a progress bar to update once per step (default: one of this run's steps)."""
        args = self.args
        per_step = args.batch_size * example_frames(args) + args.joint_images
        bar = bar or tqdm(total=args.steps, initial=self.step, desc=args.stage, dynamic_ncols=True,
                          disable=not self.main_process)
        stop, run_start, reason = StopSignal(), time.time(), None
        t_log, n_log = time.time(), 0
        try:
            while self.step < args.steps and not (reason := self.stop_reason(stop, run_start)):
                loss = self.train_step()
                n_log += 1
                bar.update(1)
                if self.step % args.log_every == 0 or self.step == args.steps:
                    self.read_loss(loss, n_log * per_step * self.world / (time.time() - t_log), bar)
                    t_log, n_log = time.time(), 0
                if self.step % args.save_every == 0 or self.step == args.steps:
                    self.save()
                self.watch(bar)
            if reason:
                self.save()
        except KeyboardInterrupt:  # a second Ctrl-C: stop now
            bar.close()
            mav.die(f"interrupted again at step {self.step}: stopped without saving; {self.last_good()}", code=130)
        finally:
            stop.restore()
        bar.close()
        if reason == "signal":
            if self.main_process:
                print(f"interrupted at step {self.step}: saved {args.out}/{args.stage}.safetensors and "
                      f"{self.state_path}")
            raise SystemExit(130)

    def finish(self):
        """After the loop: replicas checked equal (DDP), the judge's accuracy stored, the peak memory."""
        args, device, world = self.args, self.device, self.world
        if world > 1:  # DDP keeps the replicas identical; check it, rather than trust it
            checksum = torch.stack([p.detach().double().sum() for p in self.model.parameters()]).cpu()
            sums = [None] * world
            dist.all_gather_object(sums, checksum)
            if not all(torch.equal(sums[0], other) for other in sums[1:]):
                mav.die(f"parameters differ across the {world} ranks", code=1)
            if self.main_process:
                print(f"parameters identical on all {world} ranks")
        if args.stage == "judge" and self.main_process:  # how well it reads held-out digits, kept in its JSON
            accuracy = mav.judge_accuracy(self.ema, device=device)
            self.save(collective=False, **accuracy)
            print(f"judge on 200 held-out clips: pair accuracy {accuracy['frame_accuracy']:.4f} per frame, "
                  f"{accuracy['video_accuracy']:.4f} per video (majority of 16 frames)")
        if device.type == "cuda":
            peak = f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
        else:
            peak = f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
        if self.main_process:
            print(f"done: {self.step} steps in {time.time() - self.t_start:.0f} s, {peak}; "
                  f"EMA weights in {args.out}/{args.stage}.safetensors")
        if world > 1:
            dist.destroy_process_group()


def resumed_model(args, state):
    """The network of a saved training state, with its weights. -> (model, origin)."""
    config = state["config"]
    model = mav.Judge(mav.JudgeConfig(**config)) if args.stage == "judge" else mav.UNet(mav.UNetConfig(**config))
    model.load_state_dict(mav.renamed(state["model"]))
    return model, state["origin"]

# --- the whole method in one command (--stage all) ---------------------------------------------

def chain_path(out: str) -> str:
    return os.path.join(out, "chain.json")


def check_chain_out(p, args):
    """A chain's folder holds one chain: a new chain never starts over another run's checkpoints, and
    --resume continues only the chain recorded in <out>/chain.json, with the same preset, minutes, seed."""
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        p.error(f"--out {args.out} is a file, not a folder")
    if args.resume is not None and args.resume is not True:
        p.error("--stage all --resume takes no PATH: it continues the chain in --out")
    if args.resume and args.overwrite:
        p.error("--resume continues the chain in --out, --overwrite starts it over: choose one")
    recorded = args.chain_recorded = {} if args.overwrite else mav.checkpoint_meta(args.out, "chain")
    if args.time_limit is None:  # a resumed chain keeps its minutes
        args.time_limit = float(recorded.get("time_limit", 120.0)) if args.resume else 120.0
    if args.overwrite:
        return
    if args.resume:
        if not recorded:
            p.error(f"--resume: {chain_path(args.out)} does not exist, so {args.out}/ holds no chain to continue")
        for key in ("preset", "time_limit", "seed"):
            if recorded.get(key) != getattr(args, key):
                p.error(f"--resume: the chain in {args.out}/ has {key} {recorded.get(key)!r}, not "
                        f"{getattr(args, key)!r}")
        return
    held = [name for stage in [*CHAIN, "chain"] for name in (f"{stage}.json", f"{stage}-train.pt")
            if os.path.exists(os.path.join(args.out, name))]
    if held:
        p.error(f"{args.out}/ already holds {held[0]}: continue that chain with --resume, or replace it "
                "with --overwrite")


def chain_budgets(time_limit: float, done: dict) -> dict:
    """Seconds of training for each stage not yet done: its share of the minutes the done stages left.
    Time a stage leaves unused (it reached --steps) so goes to the stages after it."""
    left = 60 * time_limit - sum(done.values())
    todo = [stage for stage in CHAIN if stage not in done]
    shares = sum(CHAIN[stage]["share"] for stage in todo)
    return {stage: max(0.0, left * CHAIN[stage]["share"] / shares) for stage in todo}


def stage_args(args, stage: str, resume: bool):
    """The arguments of one stage of the chain: the command's, with the stage's recipe."""
    recipe = CHAIN[stage]
    one = copy.copy(args)
    one.stage, one.batch_size, one.frames = stage, recipe["batch_size"], recipe["frames"]
    one.lr, one.warmup, one.min_snr = recipe["lr"], recipe["warmup"], recipe["min_snr"]
    one.cooldown, one.ema_decay = COOLDOWN, CHAIN_EMA_DECAY
    one.joint_images = 4 * one.batch_size if stage == "video" else 0
    one.guidance = CHAIN_GUIDANCE
    one.time_limit, one.resume, one.overwrite = None, True if resume else None, True
    one.text_encoder = args.text_encoder if stage == "image" else None  # later stages: the image model's
    return one


class ChainBar:
    """The whole chain's progress bar, in seconds of its time budget (so its ETA is the chain's),
    updated by each stage's loop as if it were that stage's own bar."""

    def __init__(self, total_s: float, done_s: float):
        self.bar = tqdm(total=round(total_s), initial=round(done_s), unit="s", dynamic_ncols=True,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| {n}/{total} s [{elapsed}<{remaining}{postfix}]")
        self.stage, self.trained_s, self.before_s = None, None, done_s

    def start(self, stage: str, trained_s, before_s: float):
        """A stage begins: trained_s() -> its seconds so far; before_s: the chain's seconds before it."""
        self.stage, self.trained_s, self.before_s = stage, trained_s, before_s
        self.bar.set_description(stage)

    def update(self, steps=1):
        self.bar.n = min(self.bar.total, round(self.before_s + self.trained_s()))
        self.bar.refresh()

    def set_postfix(self, **values):
        self.bar.set_postfix(**values)

    def close(self):  # a stage's end; the chain closes the bar itself
        pass


def train_chain(args):
    """image -> video -> interp -> sr into one folder, each stage in its share of --time-limit;
    --resume picks the chain up in the stage where it stopped."""
    chain = args.chain_recorded if args.resume else {}  # read (and checked) by check_chain_out
    done = chain.get("done", {})
    chain = dict(stage="chain", preset=args.preset, time_limit=args.time_limit, seed=args.seed,
                 shares={stage: recipe["share"] for stage, recipe in CHAIN.items()}, done=done,
                 budgets=chain.get("budgets", {}))
    os.makedirs(args.out, exist_ok=True)
    mav.atomic_write_json(chain, chain_path(args.out))
    print(f"chain: {' -> '.join(CHAIN)} into {args.out}/, {args.time_limit:g} min of training split by shares "
          + ", ".join(f"{stage} {recipe['share']:.0%}" for stage, recipe in CHAIN.items())
          + "; a stage that ends early leaves its time to those after it"
          + (f"; done already: {', '.join(done)}" if done else ""))
    bar = ChainBar(60 * args.time_limit, sum(done.values()))
    for stage in [stage for stage in CHAIN if stage not in done]:
        budget = chain_budgets(args.time_limit, done)[stage]  # after the stages before it: their unused time
        chain["budgets"][stage] = round(budget, 1)
        one = stage_args(args, stage, resume=bool(args.resume) and os.path.exists(
            os.path.join(args.out, f"{stage}-train.pt")))
        trainer = Trainer(one, budget_s=budget)
        bar.start(stage, lambda: time.time() - trainer.t_start, sum(done.values()))
        try:
            trainer.train(bar)
        except SystemExit as stop:
            bar.bar.close()
            if stop.code == 130:
                print(f"continue the chain with: python train.py --stage all --preset {args.preset} "
                      f"--time-limit {args.time_limit:g} --out {args.out} --resume")
            raise
        done[stage] = round(time.time() - trainer.t_start, 1)
        mav.atomic_write_json(chain, chain_path(args.out))
        trainer.finish()
    bar.bar.close()
    print("chain done: " + ", ".join(f"{stage} {seconds / 60:.1f} min" for stage, seconds in done.items())
          + f"; sample with: python sample.py --checkpoints {args.out}")


def main(argv=None):
    args = parse_args(argv)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"device: {args.device}, precision: {args.precision} ({args.precision_why})")
    if args.bench:
        return bench(args, torch.device(args.device))
    if args.stage == "all":
        return train_chain(args)
    trainer = Trainer(args)
    trainer.train()
    trainer.finish()


if __name__ == "__main__":
    main()
