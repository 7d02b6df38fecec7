"""
Train one stage of the Make-A-Video cascade on Moving MNIST, or all four in turn.

    python train.py --stage image                 # text-to-image on single frames
    python train.py --stage video                 # inflate the image model, train on 16-frame clips
    python train.py --stage video --unlabeled     # the paper's claim: clips without any text
    python train.py --stage interp                # masked frame interpolation, from the video model
    python train.py --stage sr                    # video super-resolution 32² -> 64²
    python train.py --stage judge                 # the digit judge that scores samples (evaluate.py)
    python train.py --stage all                   # image -> video -> interp -> sr, on a laptop
    python train.py --stage video --model temporal_attention=0   # an ablation (docs/ABLATIONS.md)

Every stage trains by its row of pipeline.RECIPES, for its steps (change any field with --recipe FIELD=VALUE,
the steps with --steps) and writes
<out>/<stage>.safetensors + .json (EMA weights, what sampling uses), <out>/<stage>-train.pt (the full
state, for --resume), <out>/<stage>.log (the loss) and sample grids under <out>/samples/.

This file is the training: the step, the loop, the chain. The command's checks, the run's folder, what a stage
starts from and what a run shows are train_setup.py's.
"""
import copy
import math
import os
import signal
import time
from dataclasses import asdict, replace

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import cli
import judge
import mav
import pipeline
import train_setup
from train_setup import CHAIN, SaveFailed

# =============================================================================
# 1. The step: a stage's loss on a fresh batch, AdamW, one optimizer step, the learning rate
# =============================================================================

# every trainable network's loss on a fresh batch: the cascade's stages (mav.STAGE_LOSSES) and the judge
LOSSES = {**mav.STAGE_LOSSES, "judge": judge.training_loss}


class StageLoss(torch.nn.Module):
    """The stage's loss on a fresh batch made on the device by its recipe, as one module call: what
    DistributedDataParallel wraps (the video stage's clip and joint-image losses are two forward passes of
    one step)."""

    def __init__(self, model, stage: str, recipe: pipeline.Recipe, cache, device, unlabeled: bool = False):
        super().__init__()
        self.model, self.loss, self.recipe, self.cache, self.unlabeled = model, LOSSES[stage], recipe, cache, unlabeled
        self.data = mav.MovingMNIST("train", device)

    def forward(self):
        return self.loss(self.model, self.data, self.recipe, self.cache, self.unlabeled)


def adamw(model, lr: float, device_type: str = "cpu", weight_decay: float = 0.01, betas=(0.9, 0.99)):
    """AdamW on the trainable weights; weight decay on matrices and kernels only, never on biases and norms
    (as in nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [dict(params=[p for p in params if p.dim() >= 2], weight_decay=weight_decay),
              dict(params=[p for p in params if p.dim() < 2], weight_decay=0.0)]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device_type in ("cuda", "cpu"))


def optimizer_step(step_loss, model, optimizer, autocast, scaler):
    """One training step: the loss under autocast, backward, grad-norm clip 1.0, AdamW. -> the loss.
    `scaler` (fp16) scales the loss so that small gradients survive fp16, unscales them before the clip,
    and skips a step whose gradients overflowed; disabled (bf16, fp32), each of its calls passes through."""
    with autocast:
        loss = step_loss()
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
    return loss


def learning_rate(recipe: pipeline.Recipe, step: int) -> float:
    """Linear warm-up to the recipe's lr, then constant; over its last `cooldown` of the run, down to 0.
    How far the run is counts in steps, never in time, so that a slow machine trains the same model."""
    lr = recipe.lr * min(1.0, (step + 1) / max(1, recipe.warmup))
    if recipe.cooldown:
        lr *= min(1.0, (1 - min(step / recipe.steps, 1.0)) / recipe.cooldown)
    return lr


def ema_update(ema, model, step: int, ema_decay: float):
    """θ_ema ← d·θ_ema + (1 − d)·θ, with d = min(ema_decay, (1 + step) / (10 + step)): ramped up at first."""
    decay = min(ema_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)


def train_only_temporal(model):
    """Freeze every weight but the temporal layers': the inflated image model's spatial layers stay as it left
    them (--unlabeled, and temporal_only=1)."""
    temporal = mav.temporal_names(model.cfg)
    for name, p in model.named_parameters():
        p.requires_grad_(name in temporal)


def compiled(module, mode: str):
    return torch.compile(module, mode=None if mode == "default" else mode)


# =============================================================================
# 2. Several processes (torchrun): one per device, the same weights on each
# =============================================================================

def setup_distributed(device: str):
    """Under torchrun: one process per device (NCCL on CUDA, gloo on CPU). -> (rank, world size, device)."""
    if "RANK" not in os.environ:
        return 0, 1, device
    cuda = device.startswith("cuda")
    dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def mean_over_ranks(value: torch.Tensor, world: int) -> torch.Tensor:
    """The mean of `value` over the ranks, so that every rank sees the same number."""
    if world > 1:
        dist.all_reduce(value)
        value /= world
    return value


def decided_by_rank_0(reason: str | None, world: int, device) -> str | None:
    """Rank 0's reason to stop (None, 'time', 'signal') on every rank, so that all stop at the same step."""
    if world == 1:
        return reason
    code = torch.tensor([None, "time", "signal"].index(reason), device=device)
    dist.broadcast(code, 0)
    return [None, "time", "signal"][int(code.item())]


def gathered_rng(device, world: int, collective: bool):
    """Every rank's RNG states (CPU, CUDA), gathered on all ranks when `collective`."""
    rng = [torch.get_rng_state()]
    rng_cuda = [torch.cuda.get_rng_state(device)] if device.type == "cuda" else None
    if world > 1 and collective:
        rng = [None] * world
        dist.all_gather_object(rng, torch.get_rng_state())
        if rng_cuda is not None:
            rng_cuda = [None] * world
            dist.all_gather_object(rng_cuda, torch.cuda.get_rng_state(device))
    return rng, rng_cuda


def check_replicas(model, world: int, main_process: bool):
    """DDP keeps the replicas identical; check it, rather than trust it."""
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).cpu()
    sums = [None] * world
    dist.all_gather_object(sums, checksum)
    if not all(torch.equal(sums[0], other) for other in sums[1:]):
        cli.die(f"parameters differ across the {world} ranks", code=1)
    if main_process:
        print(f"parameters identical on all {world} ranks")


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


# =============================================================================
# 3. One run of one stage
# =============================================================================

class Trainer:
    """One run of one stage by its recipe, on every rank of a torchrun: set up or resume, then loop,
    checking and saving as it goes, then finish. `args` is the command's, read and never changed."""

    def __init__(self, args, stage: str, recipe: pipeline.Recipe, resume=None, started: float | None = None):
        # started: when --time-limit's minutes began (a chain's stages share the chain's); else at the first step
        self.args, self.stage, self.recipe, self.started = args, stage, recipe, started
        self.rank, self.world, device = setup_distributed(args.device)
        self.main_process, self.device = self.rank == 0, torch.device(device)
        self.state_path = os.path.join(args.out, f"{stage}-train.pt")
        torch.manual_seed(args.seed)  # the same initial weights on every rank
        state = train_setup.load_train_state(self.state_path if resume is True else resume, stage, args.preset,
                                             args.unlabeled) if resume else None
        self.model, self.text_encoder, self.origin = train_setup.resumed_model(stage, state) if state else \
            train_setup.build_model(args, stage, recipe)
        self.model.to(self.device)
        if args.unlabeled or recipe.temporal_only:
            train_only_temporal(self.model)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.optimizer = adamw(self.model, recipe.lr, self.device.type)
        self.step = self.saved_step = train_setup.restore(state, self.ema, self.optimizer, args.seed, self.rank,
                                                          self.world, self.device)
        self.t_start = time.time() - (state or {}).get("train_seconds", 0.0)
        self.cache = None if stage == "judge" else \
            pipeline.load_text_cache(args.out, self.text_encoder).to(self.device)
        step_loss = StageLoss(self.model, stage, recipe, self.cache, self.device, args.unlabeled)
        step_loss = compiled(step_loss, args.compile) if args.compile else step_loss
        # under DDP, gradients are averaged across ranks in backward(); the weights stay identical
        self.step_loss = DistributedDataParallel(step_loss) if self.world > 1 else step_loss
        self.autocast = cli.autocast(self.device, args.precision)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=args.precision == "fp16")
        self.skipped = (state or {}).get("skipped", 0)  # fp16 steps the scaler skipped (gradients overflowed)
        if state and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.log = None
        if self.main_process:
            os.makedirs(args.out, exist_ok=True)
            self.log = open(os.path.join(args.out, f"{stage}.log"), "a")
            train_setup.describe(self.model, stage, recipe, args, self.world, self.device, self.text_encoder)

    def train_step(self):
        """The learning rate, one optimizer step, the EMA update. -> the loss (on the device; not read here)."""
        self.lr = learning_rate(self.recipe, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else None  # fp16 only: a host sync a step
        loss = optimizer_step(self.step_loss, self.model, self.optimizer, self.autocast, self.scaler)
        if scale is not None and self.scaler.get_scale() < scale:  # the scaler backed off: a skipped step
            self.skipped += 1
        ema_update(self.ema, self.model, self.step, self.recipe.ema_decay)
        self.step += 1
        return loss

    def save(self, collective=True, **metrics):
        """Rank 0 writes the EMA checkpoint and the full training state (every rank's RNG state, gathered: so
        `collective` calls must happen on all ranks at the same step). Weights that are not all finite, as
        trained or as written (the checkpoint's fp16: |w| <= 65504), are never written: the run stops, and the
        last good checkpoint stays."""
        args, stage = self.args, self.stage
        written = self.ema.state_dict().values()  # as save_checkpoint writes them: fp16
        if not (pipeline.all_finite(self.model.parameters()) and pipeline.all_finite(written, torch.float16)):
            cli.die(f"the weights are not finite at step {self.step} (as trained, or in the checkpoint's fp16): "
                    f"not saved; {self.last_good()}", code=1)
        rng, rng_cuda = gathered_rng(self.device, self.world, collective)
        if not self.main_process:
            return
        seconds = time.time() - self.t_start
        meta = dict(preset=args.preset, text_encoder=self.text_encoder, step=self.step, processes=self.world,
                    recipe=asdict(self.recipe), unlabeled=args.unlabeled, device=str(self.device),
                    precision=args.precision, skipped_steps=self.skipped, train_seconds=round(seconds, 1),
                    **self.origin, **({"guidance": self.recipe.guidance} if stage in ("image", "video") else {}),
                    **({"metrics": metrics} if metrics else {}))  # guidance: sample.py's; interp and SR unguided
        state = dict(stage=stage, preset=args.preset, text_encoder=self.text_encoder, unlabeled=args.unlabeled,
                     config=asdict(self.model.cfg), origin=self.origin, model=self.model.state_dict(),
                     ema=self.ema.state_dict(), step=self.step, optimizer=self.optimizer.state_dict(), rng_cpu=rng,
                     rng_cuda=rng_cuda, scaler=self.scaler.state_dict(), skipped=self.skipped, train_seconds=seconds)
        try:  # all written, then all renamed: the EMA checkpoint and its training state stay a pair
            pipeline.commit(pipeline.write_torch(state, self.state_path),
                            *pipeline.checkpoint_files(args.out, stage, self.ema, meta))
        except Exception as e:  # a full disk, a file-size limit: one line, and no half-written file left
            train_setup.remove_partial_saves(args.out, stage)
            why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise SaveFailed(f"cannot save step {self.step} into {args.out}/ ({why}); {self.last_good()}") from None
        self.saved_step = self.step

    def last_good(self) -> str:
        if self.saved_step:
            return f"the last good checkpoint (step {self.saved_step}) is kept in {self.args.out}/"
        return "no checkpoint of this run was saved"


def train_loop(trainer: Trainer, bar=None):
    """The loop, up to --steps, or until Ctrl-C / SIGTERM / the time limit (then save and stop).
    bar: a progress bar to update once per step (default: one of this run's steps)."""
    args, r = trainer.args, trainer.recipe
    per_step = r.batch * r.frames + r.joint_images
    bar = bar or tqdm(total=r.steps, initial=trainer.step, desc=trainer.stage, dynamic_ncols=True,
                      disable=not trainer.main_process)
    stop, reason = StopSignal(), None
    t_log, n_log = time.time(), 0
    trainer.started = trainer.started or t_log
    try:
        while trainer.step < r.steps and not (reason := stop_reason(trainer, stop)):
            loss = trainer.train_step()
            n_log += 1
            bar.update(1)
            if trainer.step % args.log_every == 0 or trainer.step == r.steps:
                read_loss(trainer, loss, n_log * per_step * trainer.world / (time.time() - t_log), bar)
                t_log, n_log = time.time(), 0
            if trainer.step % args.save_every == 0 or trainer.step == r.steps:
                trainer.save()
            preview_if_due(trainer, last=trainer.step == r.steps)
        if reason:
            trainer.save()
    except SaveFailed as e:  # the bar's line ended first, so the message is a line of its own
        bar.close()
        cli.die(str(e), code=1)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now
        bar.close()
        cli.die(f"interrupted again at step {trainer.step}: stopped without saving; {trainer.last_good()}", code=130)
    finally:
        stop.restore()
    bar.close()
    if reason == "signal":
        if trainer.main_process:
            print(f"interrupted at step {trainer.step}: saved {args.out}/{trainer.stage}.safetensors and "
                  f"{trainer.state_path}")
        raise SystemExit(130)


def stop_reason(trainer: Trainer, stop: StopSignal) -> str | None:
    """'signal' or 'time' when the run must stop before the next step (rank 0's, on every rank)."""
    time_up = trainer.args.time_limit is not None and time.time() - trainer.started > 60 * trainer.args.time_limit
    return decided_by_rank_0("signal" if stop.received else "time" if time_up else None, trainer.world, trainer.device)


def read_loss(trainer: Trainer, loss, rate: float, bar):
    """The loss (mean over ranks), read on the host: logged, shown, and a non-finite one stops the run."""
    value = mean_over_ranks(loss.detach().float(), trainer.world).item()  # the only host sync of the loop
    if not math.isfinite(value):
        bar.close()
        cli.die(f"loss is {value} at step {trainer.step}; stopped, {trainer.last_good()}", code=1)
    bar.set_postfix(loss=f"{value:.4f}", samples_s=f"{rate:.0f}")
    if trainer.main_process:
        skipped = f" skipped {trainer.skipped}" if trainer.scaler.is_enabled() else ""
        trainer.log.write(f"step {trainer.step} loss {value:.5f} lr {trainer.lr:.2e} samples/s {rate:.1f} "
                       f"elapsed {time.time() - trainer.t_start:.0f}{skipped}\n")
        trainer.log.flush()


def preview_if_due(trainer: Trainer, last: bool):
    """Rank 0, every --sample-every steps: a preview grid of the EMA model; and one at the end, unless the
    run made fewer than a fifth of --sample-every steps since the last (so previews stay a small share)."""
    every, step = trainer.args.sample_every, trainer.step
    due = every and (step % every == 0 or (last and step % every >= every // 5))
    if trainer.main_process and due and trainer.stage != "judge":
        ext = "gif" if trainer.recipe.frames > 1 else "png"
        path = os.path.join(trainer.args.out, "samples", f"{trainer.stage}-{step:06d}.{ext}")
        train_setup.preview(trainer.ema, trainer.cache, trainer.stage, trainer.recipe.guidance, path, trainer.device)


def finish(trainer: Trainer):
    """After the loop: replicas checked equal (DDP), the judge's accuracy stored, the peak memory."""
    if trainer.world > 1:
        check_replicas(trainer.model, trainer.world, trainer.main_process)
    if trainer.stage == "judge" and trainer.main_process:  # how well it reads held-out digits, kept in its JSON
        accuracy = judge.judge_accuracy(trainer.ema, device=trainer.device)
        trainer.save(collective=False, **accuracy)
        print(f"judge on 200 held-out clips: pair accuracy {accuracy['frame_accuracy']:.4f} per frame, "
              f"{accuracy['video_accuracy']:.4f} per video (majority of 16 frames)")
    peak = train_setup.peak_memory(trainer.device)
    if trainer.main_process:
        print(f"done: {trainer.step} steps in {time.time() - trainer.t_start:.0f} s, {peak}; "
              f"EMA weights in {trainer.args.out}/{trainer.stage}.safetensors")
    if trainer.world > 1:
        dist.destroy_process_group()


# =============================================================================
# 4. The whole method in one command (--stage all)
# =============================================================================

def fresh_steps(model, stage: str, recipe: pipeline.Recipe, cache, device, precision: str, plain: bool = False):
    """Training steps of a fresh `model` for `stage`, as a run takes them (plain: fp32 and an unfused AdamW,
    bench.py's baseline) -> (its StageLoss, one_step(module): one optimizer step through module -> the loss).
    The chain times two of them (step_seconds), bench.py more."""
    model.to(device)
    if recipe.temporal_only:
        train_only_temporal(model)
    step_loss = StageLoss(model, stage, recipe, cache, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, foreach=False, fused=False) if plain else \
        adamw(model, recipe.lr, device.type)
    autocast = cli.autocast(device, "fp32" if plain else precision)
    scaler = torch.amp.GradScaler(device.type, enabled=not plain and precision == "fp16")
    return step_loss, lambda module: optimizer_step(module, model, optimizer, autocast, scaler)


def step_seconds(args, stage: str, recipe: pipeline.Recipe, cache) -> float:
    """Seconds of one training step of `stage` here: two steps of a fresh network, after one to warm up.
    (It leaves the run as it would be without it: every stage's Trainer seeds its own random streams.)"""
    device = torch.device(args.device)
    model = mav.UNet(mav.stage_config(stage, args.preset))
    step_loss, take = fresh_steps(model, stage, recipe, cache.to(device), device, args.precision)
    one_step = lambda: take(step_loss)
    one_step()
    t0 = time.perf_counter()
    for _ in range(2):
        one_step().item()  # .item(): the device has finished the step
    return (time.perf_counter() - t0) / 2


def run_eta(args) -> str:
    """One line: the run's steps and what they take on this machine (two timed steps of a fresh network)."""
    encoder = pipeline.checkpoint_meta(args.out, "image").get("text_encoder", mav.DEFAULT_TEXT_ENCODER)
    step_s = step_seconds(args, args.stage, args.recipe, pipeline.load_text_cache(args.out, encoder))
    return (f"{args.stage}: {args.recipe.steps:,} steps into {args.out}/, about "
            f"{duration(args.recipe.steps * step_s)} on this machine ({step_s:.2f} s a step)")


def duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{max(minutes, 1)} min"


class ChainBar(tqdm):
    """The whole chain's progress bar, in seconds as first timed (step_seconds): a step of a stage moves it
    by that stage's seconds a step, so its ETA covers the stages still to come, and tqdm's measured rate
    corrects the first timing as the chain runs. Each stage's loop updates it as its own bar."""

    def track(self, stage: str, step_s: float, done_steps: int):
        self.step_s = step_s
        self.total -= done_steps * step_s  # a resumed stage's steps before this command are not this bar's
        self.set_description(stage)

    def update(self, n=1):
        super().update(min(n * self.step_s, self.total - self.n))  # never past the end by a float's rounding

    def close(self, end: bool = False):  # a stage's loop closes its bar; the chain's ends with the chain
        if end:
            super().close()


def train_chain(args):
    """image -> video -> interp -> sr into one folder, each stage its recipe's steps (the same checkpoints
    on any machine); --time-limit stops and saves, --resume picks the chain up where it stopped."""
    started = time.time()
    recorded = pipeline.checkpoint_meta(args.out, "chain") if args.resume else {}
    done, steps = recorded.get("done", {}), train_setup.chain_steps(args)
    chain = dict(stage="chain", preset=args.preset, seed=args.seed, steps=steps, done=done)
    os.makedirs(args.out, exist_ok=True)
    pipeline.atomic_write_json(chain, train_setup.chain_path(args.out))
    todo = [stage for stage in CHAIN if stage not in done]
    if not todo:
        print(f"chain done already, every stage in {args.out}/: python sample.py --checkpoints {args.out}")
        return
    recipes = {stage: replace(pipeline.RECIPES[stage], steps=steps[stage]) for stage in CHAIN}
    cache = pipeline.load_text_cache(args.out)
    step_s = {stage: step_seconds(args, stage, recipes[stage], cache) for stage in todo}
    print(f"chain: {' -> '.join(f'{stage} {steps[stage]:,}' for stage in CHAIN)} steps into {args.out}/; "
          f"on this machine about {duration(sum(steps[s] * step_s[s] for s in todo))}"
          + (f" for {', '.join(todo)} (done already: {', '.join(done)})" if done else "")
          + f" (a step: {', '.join(f'{s} {step_s[s]:.2f} s' for s in todo)})"
          + (f"; stops and saves after {args.time_limit:g} min, --resume goes on" if args.time_limit else ""))
    bar = ChainBar(total=sum(steps[s] * step_s[s] for s in todo), unit="s", dynamic_ncols=True,
                   bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")
    for stage in todo:
        resume = bool(args.resume) and os.path.exists(os.path.join(args.out, f"{stage}-train.pt"))
        trainer = Trainer(args, stage, recipes[stage], resume=resume or None, started=started)
        bar.track(stage, step_s[stage], trainer.step)
        try:
            train_loop(trainer, bar)
        except SystemExit as stop:
            bar.close(end=True)
            if stop.code == 130:
                print(f"continue the chain with: {resume_command(args)}")
            raise
        if trainer.step < trainer.recipe.steps:  # the time limit: saved, to go on with --resume
            bar.close(end=True)
            print(f"time limit: {stage} stopped at step {trainer.step:,} of {trainer.recipe.steps:,}, saved; "
                  f"continue the chain with: {resume_command(args)}")
            return
        done[stage] = round(time.time() - trainer.t_start, 1)
        pipeline.atomic_write_json(chain, train_setup.chain_path(args.out))
        finish(trainer)
    bar.close(end=True)
    print("chain done: " + ", ".join(f"{stage} {seconds / 60:.1f} min" for stage, seconds in done.items())
          + f"; sample with: python sample.py --checkpoints {args.out}")


def resume_command(args) -> str:
    return (f"python train.py --stage all --preset {args.preset} --out {args.out} --seed {args.seed}"
            + (f" --steps {args.steps}" if args.steps else "") + " --resume")


def main(argv=None):
    args = train_setup.parse_args(argv)
    lock = train_setup.FolderLock(args.out) if int(os.environ.get("RANK", 0)) == 0 else None
    try:
        run(args)
    except SaveFailed as e:  # a save outside the loop's (the judge's accuracy, say)
        cli.die(str(e), code=1)
    finally:
        if lock:
            lock.release()


def run(args):
    """The command, its folder locked: one stage, or the chain."""
    device = f"device: {args.device}, precision: {args.precision} ({args.precision_why})"
    rank = int(os.environ.get("RANK", 0))
    if args.stage == "all" or args.resume or args.stage == "judge" or rank or not train_setup.source_ready(args):
        if rank == 0:
            print(device)
        return train_chain(args) if args.stage == "all" else train_stage(args)
    # the shipped image model is adopted before the timing: it brings the text cache
    adopted = train_setup.adopt_shipped_image(args) if args.shipped_image else None
    try:
        eta = run_eta(args)
    except KeyboardInterrupt:
        cli.die("interrupted while timing the first steps: nothing trained, nothing saved", code=130)
    print(f"{eta}; {device}")
    if adopted:
        print(adopted)
    train_stage(args)


def train_stage(args):
    trainer = Trainer(args, args.stage, args.recipe, resume=args.resume)
    train_loop(trainer)
    finish(trainer)


if __name__ == "__main__":
    main()
