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

Every stage trains by its row of mav.RECIPES, for its steps (change any field with --recipe FIELD=VALUE,
the steps with --steps) and writes
<out>/<stage>.safetensors + .json (EMA weights, what sampling uses), <out>/<stage>-train.pt (the full
state, for --resume), <out>/<stage>.log (the loss) and sample grids under <out>/samples/.
"""
import atexit
import contextlib
import copy
import math
import os
import pickle
import resource
import shutil
import signal
import sys
import time
from dataclasses import asdict, fields, replace

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import cli
import judge
import mav
import pipeline

TRAINABLE = [*mav.STAGES, "judge"]  # the cascade's networks, and the judge that scores them
CHAIN = list(mav.STAGES)             # --stage all: the cascade's stages, in order


def parse_args(argv=None):
    """The command, checked (one line and exit 2 for bad input, before anything is built)."""
    p = parser()
    args = p.parse_args(argv)
    args.device, args.precision, args.precision_why = cli.device_and_precision(args.device, args.precision, p.error)
    args.preset = args.preset or default_preset(args.stage, args.out)
    args.out = args.out or os.path.join("runs", args.preset)
    args.shipped_image = None
    check_args(p, args)
    if args.stage == "all":
        check_chain_out(p, args)
    else:
        args.recipe_changes = args.recipe or []
        args.recipe = recipe_of(p, args.stage, args.recipe_changes, args.unlabeled, args.steps)
        args.shipped_image = shipped_image(args)
        if args.shipped_image:  # the study's recipe for this path, then the command's changes
            args.recipe = recipe_of(p, args.stage, args.recipe_changes, args.unlabeled, args.steps,
                                    row=from_shipped_image(args.shipped_image))
        if args.recipe.scratch and args.init:
            p.error("--recipe scratch=1 starts from fresh weights, --init from a checkpoint's: choose one")
        check_out(p, args)
    args.model = model_changes(p, args.stage, args.model or [])
    if args.stage != "all":
        check_memory(p, args.stage, args.preset, args.recipe, args.model, args.device)
    return args


def parser():
    p = cli.ArgumentParser(description="Train one stage of Make-A-Video on Moving MNIST, or all of them.",
                           formatter_class=cli.HelpFormatter)
    what = p.add_argument_group("what to train")
    what.add_argument("--stage", required=True, choices=TRAINABLE + ["all"],
                      help="which network to train; all = image, video, interp and sr in turn, into one --out, "
                           "sharing --time-limit (the laptop chain)")
    what.add_argument("--preset", default=None, choices=list(mav.PRESETS),
                      help="model size: tiny (tests), cpu (the laptop chain), small, base (GPU); default cpu, but "
                           f"the video stage's is its image model's: {SHIPPED_IMAGE_PRESET} (the shipped GPU image "
                           "model) where --out holds none of its own")
    what.add_argument("--recipe", nargs="+", action="extend", default=None, metavar="FIELD=VALUE",
                      help="change the stage's recipe (mav.RECIPES), e.g. --recipe batch=256 lr=1e-3; fields: "
                           + ", ".join(f.name for f in fields(mav.Recipe) if f.name != "steps"))
    what.add_argument("--model", nargs="+", action="extend", default=None, metavar="FIELD=VALUE",
                      help="video or sr stage: switch a part of its temporal layers off, to measure what it buys "
                           "(docs/ABLATIONS.md), e.g. --model temporal_kernel=1; fields: " + ", ".join(SWITCHES))
    what.add_argument("--steps", type=int, default=None,
                      help="total optimizer steps (resume continues up to it); default the recipe's, the laptop "
                           "chain's; --stage all: every stage this many")
    what.add_argument("--time-limit", type=float, default=None,
                      help="stop (and save) after this many minutes of this command, even before --steps; "
                           "--resume continues (the same checkpoints as a run never stopped)")
    what.add_argument("--seed", type=int, default=0)
    what.add_argument("--unlabeled", action="store_true",
                      help="video stage: no text ever accompanies a clip (null prompt); only the temporal layers "
                           "train, and no joint images")
    where = p.add_argument_group("where it goes: nothing is overwritten unasked")
    where.add_argument("--out", default=None,
                       help="folder of this run's checkpoints, shared by the stages of one cascade (the video stage "
                            "reads image from it; default runs/<preset>, never the shipped checkpoints/)")
    where.add_argument("--overwrite", action="store_true",
                       help="replace <out>/<stage>.safetensors if it exists (else the run refuses to start, with "
                            "--init and --resume PATH too; --resume of the run's own state needs no --overwrite)")
    where.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                       help="continue exactly where a run stopped: from <out>/<stage>-train.pt, or from PATH")
    where.add_argument("--init", default=None, metavar="FOLDER",
                       help="start from the weights of this stage's checkpoint in FOLDER (e.g. checkpoints, to "
                            "fine-tune the shipped ones) instead of from its source stage; steps count from 0")
    watch = p.add_argument_group("watching it")
    watch.add_argument("--log-every", type=int, default=10, help="steps between loss readings (log file and bar)")
    watch.add_argument("--save-every", type=int, default=500, help="steps between checkpoints")
    watch.add_argument("--sample-every", type=int, default=1000,
                       help="steps between preview grids, and one at the end if a fifth of that passed since the "
                            "last (0 = never)")
    hardware = cli.add_device_arguments(p.add_argument_group("hardware and speed"))
    hardware.add_argument("--compile", nargs="?", const="default", default=None,
                          choices=["default", "reduce-overhead", "max-autotune"],
                          help="torch.compile the training step, in this mode (reduce-overhead adds CUDA graphs); "
                               "time it with bench.py first")
    return p


def check_args(p, args):
    """Every number and combination checked (one line, exit 2, before anything is built)."""
    if args.stage == "all":
        given = [flag for flag, value in (("--recipe", args.recipe), ("--model", args.model), ("--init", args.init),
                                          ("--unlabeled", args.unlabeled)) if value]
        if given:
            p.error(f"{given[0]} applies to one stage: --stage all trains every stage by its recipe (mav.RECIPES)")
    for name in ("steps", "log_every", "save_every"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.sample_every < 0:
        p.error("--sample-every must be >= 0")
    cli.check_seed(args.seed, p.error)
    if args.time_limit is not None and not (math.isfinite(args.time_limit) and args.time_limit > 0):
        p.error("--time-limit must be a positive number of minutes")
    if args.stage not in ("video", "all") and args.unlabeled:
        p.error("--unlabeled applies to the video stage")
    if args.init and args.resume:
        p.error("--init starts a new run from a checkpoint's weights, --resume continues a run: choose one")
    if args.model and (args.init or args.resume):
        p.error("--model builds a new network; --init and --resume take the checkpoint's own")


def parsed_changes(p, flag: str, items: list[str], defaults) -> dict:
    """FIELD=VALUE items -> {field: value}, each of the type of its value in `defaults`; one line, exit 2, else."""
    types = {name: type(value) for name, value in defaults.items()}
    truth = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    changes = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in types or not value:
            p.error(f"{flag} {item}: not FIELD=VALUE with FIELD one of {', '.join(types)}")
        if name in changes:
            p.error(f"{flag} {name} is given twice ({name}={changes[name]!r} and {item}): give it once")
        kind = types[name]
        try:
            if kind is bool:
                changes[name] = truth[value.lower()]
            else:
                changes[name] = kind(float(value)) if kind is int and float(value).is_integer() else kind(value)
        except (KeyError, ValueError, OverflowError):
            p.error(f"{flag} {item}: {value!r} is not a {kind.__name__}")
    return changes


# recipe fields that do nothing for a stage, and why: given, they are refused rather than recorded
IDLE_FIELDS = {"judge": {"guidance": "the judge is a classifier: nothing is sampled from it",
                          "min_snr": "the judge's loss is a classifier's, not a diffusion loss"}}


def recipe_of(p, stage: str, overrides: list[str], unlabeled: bool = False, steps: int | None = None,
              row: mav.Recipe | None = None) -> mav.Recipe:
    """The stage's row of mav.RECIPES (or `row`) with --recipe's FIELD=VALUE changes (and --steps), checked."""
    row = row or mav.RECIPES[stage]
    row = replace(row, steps=steps or row.steps)
    changes = parsed_changes(p, "--recipe", overrides, {f.name: getattr(row, f.name) for f in fields(mav.Recipe)
                                                         if f.name != "steps"})
    idle = [name for name in changes if name in IDLE_FIELDS.get(stage, ())]
    if idle:
        p.error(f"--recipe {idle[0]} does nothing for the {stage} stage ({IDLE_FIELDS[stage][idle[0]]})")
    if unlabeled and changes.get("joint_images"):
        p.error("--unlabeled trains on clips without text: no joint images with prompts (joint_images=0)")
    if unlabeled and changes.get("scratch"):
        p.error("--unlabeled trains only the temporal layers of an image model: not from scratch (scratch=0)")
    recipe = replace(row, **changes, **({"joint_images": 0} if unlabeled else {}))
    try:
        pipeline.check_recipe(recipe, stage)
    except ValueError as e:
        p.error(f"--recipe: {e}")
    return recipe


SWITCHES = ("temporal_kernel", "temporal_attention", "stride_embedding")  # the parts of mav.UNetConfig --model sets


def model_changes(p, stage: str, items: list[str]) -> dict:
    """--model's FIELD=VALUE changes to a new video (or sr) network's temporal layers, checked."""
    defaults = mav.UNetConfig()
    changes = parsed_changes(p, "--model", items, {name: getattr(defaults, name) for name in SWITCHES})
    if changes and stage not in ("video", "sr"):
        p.error(f"--model applies to the video and sr stages (the {stage} network "
                + ("has no temporal layers)" if stage in ("image", "judge") else "inherits the video model's)"))
    try:
        replace(defaults, **changes)
    except ValueError as e:
        p.error(f"--model: {e}")
    return changes


def check_out(p, args):
    """Never write over a checkpoint unasked: a finished or stopped run is continued (--resume of its own
    state), or replaced only with --overwrite; --init and --resume PATH keep the rule of a fresh run."""
    cli.check_output_folder(args.out, p.error)
    for name in (f"{args.stage}.log", "train.lock", f"{args.stage}.safetensors", f"{args.stage}.json",
                 f"{args.stage}-train.pt"):  # what the run writes: a FIFO there would block it forever
        try:
            cli.check_regular(os.path.join(args.out, name), "--out holds")
        except cli.InputError as e:
            p.error(str(e))
    if args.init and os.path.realpath(args.init) == os.path.realpath(args.out):  # links followed
        p.error(f"--init {args.init} is --out itself: the run would write over the checkpoint it starts from; "
                "give another --out")
    own_state = os.path.join(args.out, f"{args.stage}-train.pt")
    same = lambda a, b: os.path.realpath(a) == os.path.realpath(b)  # links followed
    continues_own = args.resume is True or (args.resume and same(args.resume, own_state))
    if continues_own or args.overwrite:
        return
    for name in (f"{args.stage}.safetensors", f"{args.stage}-train.pt"):
        path = os.path.join(args.out, name)
        if os.path.exists(path):
            p.error(f"{path} exists: continue that run with --resume, start from its weights with --init "
                    f"{args.out} --out ANOTHER_FOLDER, or replace it with --overwrite")


def check_memory(p, stage: str, preset: str, recipe: mav.Recipe, model_changes: dict, device: str):
    """Refuse, by arithmetic and before anything is built, a step the machine cannot hold: the activations
    that backward keeps, about ACTIVATION_WORDS floats per channel and pixel of every level (measured:
    bench.py's peak memory, base preset video step), against the memory free on the device."""
    if stage == "judge":
        return
    cfg = mav.stage_config(stage, preset, changes=model_changes)
    size = mav.CANVAS if stage == "sr" else mav.BASE
    per_frame = sum(c * (size // 2 ** level) ** 2 for level, c in enumerate(cfg.channels)) * ACTIVATION_WORDS * 4
    frames = recipe.batch * recipe.frames + (recipe.joint_images if stage == "video" else 0)
    need, free = frames * per_frame, cli.free_memory(device)
    if free is not None and need > free:
        p.error(f"--recipe batch={recipe.batch} frames={recipe.frames}"
                + (f" joint_images={recipe.joint_images}" if stage == "video" else "")
                + f": a {stage} step of preset {preset} needs about {need / 2 ** 30:.1f} GiB, and {device} has "
                f"{free / 2 ** 30:.1f} GiB free")


ACTIVATION_WORDS = 32  # the base video step of 4 clips + 16 frames peaks at 1.5 GiB: ~53 words; 32 is a floor


# --- what a stage starts from, and what it learns from ----------------------------------------

# The paper's central move needs no image stage of one's own: where --out holds no image model, the video
# stage inflates the shipped one of its preset and trains only what video adds (the temporal layers), for
# the steps docs/ABLATIONS.md chose ("Your own video model"). Its preset, where none is given, is the GPU
# image model's: drawn frame by frame it keeps its digits far better than the laptop one.
SHIPPED_IMAGE_PRESET = "base"
FROM_SHIPPED_IMAGE = dict(temporal_only=True, joint_images=0, steps=1000)  # and the image model's guidance


def default_preset(stage: str, out: str | None) -> str:
    """--preset, where none is given: the laptop chain's (cpu), except for the video stage, whose preset is its
    image model's: the one in --out (runs/cpu/ by default), else the shipped one's (SHIPPED_IMAGE_PRESET)."""
    if stage != "video":
        return "cpu"
    own = pipeline.checkpoint_meta(out or os.path.join("runs", "cpu"), "image")
    return own.get("preset", "cpu") if own else SHIPPED_IMAGE_PRESET


def shipped_image(args) -> str | None:
    """The shipped folder whose image model a new video run inflates: where --out holds no image model of its
    own (and the run is not from scratch, --init or --resume) and one is shipped at the run's preset."""
    if args.stage != "video" or args.recipe.scratch or args.init or args.resume:
        return None
    if os.path.exists(os.path.join(args.out, "image.json")):
        return None
    folder = cli.SHIPPED_FOLDERS.get(args.preset)
    return folder if folder and os.path.exists(os.path.join(folder, "image.json")) else None


def from_shipped_image(folder: str) -> mav.Recipe:
    """The video recipe for a shipped image model: FROM_SHIPPED_IMAGE, sampled at the image model's guidance."""
    guidance = pipeline.checkpoint_meta(folder, "image").get("guidance", mav.GUIDANCE)
    return replace(mav.RECIPES["video"], guidance=guidance, **FROM_SHIPPED_IMAGE)


def adopt_shipped_image(args) -> str:
    """Copy the shipped image model (and its text cache) into --out, where the video stage reads it and where
    sampling finds it as the video model's expert. -> the line that says so."""
    source = args.shipped_image
    meta = pipeline.checkpoint_meta(source, "image")
    os.makedirs(args.out, exist_ok=True)
    names = ["image.safetensors", "image.json"] + [n for n in os.listdir(source) if n.startswith("text-")]
    for name in names:
        if not os.path.exists(os.path.join(args.out, name)):
            shutil.copyfile(os.path.join(source, name), os.path.join(args.out, name + ".tmp"))
            os.replace(os.path.join(args.out, name + ".tmp"), os.path.join(args.out, name))
    return (f"{args.out}/ holds no image model: inflating the shipped one, {os.path.relpath(source)}/image.safetensors "
            f"(preset {meta.get('preset')}, {meta.get('step', 0):,} steps), copied there; only its temporal layers "
            f"train. Your own instead: python train.py --stage image --preset {args.preset} --out {args.out} first")


def load_source(out, preset, stage, needed_by):
    """The checkpoint a stage starts from, or a one-line error that says how to make it."""
    try:
        model, meta = pipeline.load_checkpoint(out, stage)
    except pipeline.CheckpointError as e:
        cli.die(f"{e}; the {needed_by} stage starts from it: run python train.py --stage {stage} --out {out}")
    if meta.get("preset") != preset:
        cli.die(f"the {stage} checkpoint in {out}/ is preset {meta.get('preset')!r}, not {preset!r}")
    return model, meta


def build_model(args, stage, recipe: mav.Recipe):
    """-> (model, its text encoder, meta of its origin): what mav.STAGES says the stage starts from.

    image and sr: new UNets (sr at 64², with the upsampled low-res video as an input channel and its
    noise level embedded). video: the image checkpoint, inflated (with the recipe's scratch=1: a new
    UNet, the ablation of inflation). interp: the video checkpoint, inflated again with 3 zero-initialised
    input channels (known frames, mask, their blend in time). --init: the stage's own weights, from any folder.
    """
    if args.init:
        return init_model(args, stage)
    if stage == "judge":  # no text, no preset: one small CNN reads every stage
        return judge.Judge(judge.JudgeConfig()), None, {}
    source = None if recipe.scratch else mav.STAGES[stage].starts_from
    if source is None:  # the cascade's encoder: the image model's, if there is one
        encoder = pipeline.checkpoint_meta(args.out, "image").get("text_encoder", mav.DEFAULT_TEXT_ENCODER) \
            if stage != "image" and not recipe.scratch else mav.DEFAULT_TEXT_ENCODER
        return mav.UNet(mav.stage_config(stage, args.preset, changes=args.model)), encoder, {}
    model, meta = load_source(args.out, args.preset, source, stage)
    cfg = mav.stage_config(stage, args.preset, source=model.cfg, changes=args.model)
    return mav.inflate(model.state_dict(), cfg), meta["text_encoder"], {f"{source}_step": meta.get("step")}


def init_model(args, stage):
    """--init FOLDER: the stage's checkpoint in FOLDER, to train on from its weights (steps count from 0)."""
    build = judge.build_judge if stage == "judge" else None
    try:
        model, meta = pipeline.load_checkpoint(args.init, stage, build=build)
    except pipeline.CheckpointError as e:
        cli.die(f"--init: {e}")
    if stage != "judge" and meta.get("preset") != args.preset:
        cli.die(f"--init: the {stage} checkpoint in {args.init}/ is preset {meta.get('preset')!r}, "
                f"not {args.preset!r}")
    kept = {k: v for k, v in meta.items() if k.endswith("_step") and k != "init_step"}
    return model.train(), meta.get("text_encoder"), {**kept, "init_step": (meta.get("step") or 0)
                                                     + meta.get("init_step", 0)}


# every trainable network's loss on a fresh batch: the cascade's stages (mav.STAGE_LOSSES) and the judge
LOSSES = {**mav.STAGE_LOSSES, "judge": judge.training_loss}


class StageLoss(torch.nn.Module):
    """The stage's loss on a fresh batch made on the device by its recipe, as one module call: what
    DistributedDataParallel wraps (the video stage's clip and joint-image losses are two forward passes of
    one step)."""

    def __init__(self, model, stage: str, recipe: mav.Recipe, cache, device, unlabeled: bool = False):
        super().__init__()
        self.model, self.loss, self.recipe, self.cache, self.unlabeled = model, LOSSES[stage], recipe, cache, unlabeled
        self.data = mav.MovingMNIST("train", device)

    def forward(self):
        return self.loss(self.model, self.data, self.recipe, self.cache, self.unlabeled)


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


def remove_partial_saves(folder: str, stage: str):
    """A save's files under their temporary names (a full disk, a kill mid-save): never a checkpoint."""
    for name in (f"{stage}.safetensors", f"{stage}.json", f"{stage}-train.pt"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, name + ".tmp"))


class SaveFailed(Exception):
    """A save that could not be written whole (one-line message); the last good pair is kept."""


class FolderLock:
    """One run per --out: <out>/train.lock holds the pid of the run writing there, for its lifetime. A second run
    is refused in one line; a lock whose run is gone (killed) is taken over, and the half-written files of its
    last save removed."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, "train.lock")
        os.makedirs(folder, exist_ok=True)
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                break
            except FileExistsError:
                pid = self.holder()
                if pid and pid != os.getpid() and alive(pid):
                    cli.die(f"{folder}/ is being written by another run (pid {pid}, {self.path}): one run per "
                            "folder; wait for it, stop it, or give another --out")
                if pid != os.getpid():
                    print(f"{self.path}: its run (pid {pid}) is gone; taking the folder over", file=sys.stderr)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        for stage in [*TRAINABLE, "chain"]:
            remove_partial_saves(folder, stage)
        atexit.register(self.release)  # also where the process ends past main's finally

    def holder(self) -> int | None:
        try:
            if not cli.check_regular(self.path, "the lock"):
                return None
            with open(self.path) as fh:
                return int(fh.read(32).strip())
        except (OSError, ValueError, cli.InputError):
            return None

    def release(self):
        if self.holder() == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def train_only_temporal(model):
    """Freeze every weight but the temporal layers': the inflated image model's spatial layers stay as it left
    them (--unlabeled, and temporal_only=1)."""
    temporal = mav.temporal_names(model.cfg)
    for name, p in model.named_parameters():
        p.requires_grad_(name in temporal)


def compiled(module, mode: str):
    return torch.compile(module, mode=None if mode == "default" else mode)


# --- one run of one stage -------------------------------------------------------------------

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


TRAIN_STATE_KEYS = ("stage", "config", "model", "ema", "optimizer", "step", "rng_cpu", "text_encoder", "origin")


def load_train_state(path, stage, preset, unlabeled):
    """The full training state for --resume, refused (one line) if it is another run's."""
    try:
        pipeline.regular_file(path)  # a FIFO would block the read forever
    except pipeline.CheckpointError as e:
        cli.die(f"--resume: {e}")
    try:  # tensors and plain values only: a resume file from anywhere can run no code as it loads
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        cli.die(f"--resume: {path} holds more than tensors and plain values; refused (a training state of "
                "this project never does)")
    except Exception as e:
        cli.die(f"--resume: cannot read {path}: {type(e).__name__}")
    if not isinstance(state, dict) or any(key not in state for key in TRAIN_STATE_KEYS):
        what = next((f"a dict without {key}" for key in TRAIN_STATE_KEYS if key not in state), None) \
            if isinstance(state, dict) else f"a {type(state).__name__}"
        cli.die(f"--resume: {path} is {what}, not the training state a run saves (<out>/<stage>-train.pt: a dict "
                f"of {', '.join(TRAIN_STATE_KEYS)})")
    why = state_problem(state)
    if why:
        cli.die(f"--resume: {path} {why}: not a state a run saves; refused")
    mine = dict(stage=stage, preset=preset, unlabeled=unlabeled)
    for key, value in mine.items():
        if key == "preset" and stage == "judge":
            continue
        if state.get(key) != value:
            cli.die(f"--resume: {path} is a run with {key} {state.get(key)!r}, not {value!r}")
    return state


def state_problem(state: dict) -> str | None:
    """What makes a loaded training state unusable, in a few words, or None: its step, its RNG states, its
    config and weights (the network its config builds must take them, and every number must be finite)."""
    step = state["step"]
    if not (isinstance(step, int) and not isinstance(step, bool) and step >= 0):
        return f"has step {step!r}"
    rng = state["rng_cpu"]
    good_rng = lambda r: torch.is_tensor(r) and r.dtype == torch.uint8 and r.shape == torch.get_rng_state().shape
    if not (isinstance(rng, list) and rng and all(good_rng(r) for r in rng)):
        return "holds no usable RNG state"
    if not isinstance(state["config"], dict):
        return f"has a config of type {type(state['config']).__name__}"
    for key in ("model", "ema"):
        weights = state[key]
        if not (isinstance(weights, dict) and all(torch.is_tensor(v) for v in weights.values())):
            return f"has no {key} weights"
        if not pipeline.all_finite(weights.values()):
            return f"holds {key} weights that are not finite"
    return None


def resumed_model(stage, state):
    """The network of a saved training state, with its weights. -> (model, text encoder, origin)."""
    config = state["config"]
    try:
        if stage != "judge":
            pipeline.check_config(config)
        model = judge.build_judge(config) if stage == "judge" else pipeline.network(config)
        pipeline.load_weights(model, state["model"])
    except (pipeline.CheckpointError, TypeError, ValueError) as e:
        cli.die(f"--resume: the state's weights do not fit its config ({str(e).splitlines()[0][:200]}); refused")
    return model, state["text_encoder"], state["origin"]


# --- what a run shows as it goes: a grid of samples ---------------------------------------------

PREVIEW_PROMPTS = ["2 and four", "one and 7", "3 and 3", "five and nine"]


@torch.no_grad()
def preview(model, cache, stage, guidance, path, device):
    """train.py's grid of 4 samples of a stage's model at mav's default sampler and steps, so progress can be
    seen as well as read. interp and sr work on real held-out clips, to show what they add."""
    kw = dict(guidance=guidance, generator=torch.Generator().manual_seed(0))
    n, frames = len(PREVIEW_PROMPTS), mav.FRAMES
    if stage in ("image", "video"):
        text, null = cache.embed(PREVIEW_PROMPTS).to(device), cache.embed([""] * n).to(device)
        shape = (n, 1, mav.BASE, mav.BASE) if stage == "image" else (n, 1, frames, mav.BASE, mav.BASE)
        stride = None if stage == "image" else torch.ones(n, device=device)
        x = mav.sample(model, shape, text, null, stride=stride, **kw)
        videos = x[:, :, None] if stage == "image" else x
    else:
        video, labels = mav.MovingMNIST("test", device).sample(n, frames=frames,
                                                               generator=torch.Generator(device).manual_seed(0))
        text = cache(mav.prompt_ids(labels)).to(device)
        null = cache(torch.full((n,), mav.NULL_PROMPT, device=device)).to(device)
        low = mav.to_model(mav.area_downsample(video))
        grow = mav.interpolate if stage == "interp" else mav.super_resolve
        videos = grow(model, low, text, null, **kw)
    videos = mav.to_pixels(videos)[:, 0].float().cpu()
    cli.write_video(path, cli.video_grid(videos), fps=mav.BASE_FPS * (mav.INTERP_FACTOR if stage == "interp" else 1),
                    scale=2)


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
    """One run of one stage by its recipe, on every rank of a torchrun: set up or resume, then loop,
    checking and saving as it goes, then finish. `args` is the command's, read and never changed."""

    def __init__(self, args, stage: str, recipe: mav.Recipe, resume=None, started: float | None = None):
        # started: when --time-limit's minutes began (a chain's stages share the chain's); else at the first step
        self.args, self.stage, self.recipe, self.started = args, stage, recipe, started
        self.rank, self.world, device = setup_distributed(args.device)
        self.main_process, self.device = self.rank == 0, torch.device(device)
        self.state_path = os.path.join(args.out, f"{stage}-train.pt")
        torch.manual_seed(args.seed)  # the same initial weights on every rank
        state = load_train_state(self.state_path if resume is True else resume, stage, args.preset,
                                 args.unlabeled) if resume else None
        self.model, self.text_encoder, self.origin = resumed_model(stage, state) if state else \
            build_model(args, stage, recipe)
        self.model.to(self.device)
        if args.unlabeled or recipe.temporal_only:
            train_only_temporal(self.model)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.optimizer = self.model.configure_optimizers(recipe.lr, device_type=self.device.type)
        self.step = self.saved_step = self.restore(state)
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
            self.describe()

    def restore(self, state) -> int:
        """EMA, optimizer and every rank's random stream from a saved state -> the step to go on from."""
        if state is None:
            torch.manual_seed(self.args.seed + self.rank)  # each rank its own data
            return 0
        try:
            pipeline.load_weights(self.ema, state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (pipeline.CheckpointError, KeyError, TypeError, ValueError) as e:
            cli.die(f"--resume: its EMA or optimizer state does not fit the network ({str(e).splitlines()[0][:200]})")
        if len(state["rng_cpu"]) == self.world:  # each rank continues its own random stream
            torch.set_rng_state(state["rng_cpu"][self.rank])
            if self.device.type == "cuda" and state.get("rng_cuda"):
                torch.cuda.set_rng_state(state["rng_cuda"][self.rank], self.device)
        else:
            print(f"warning: {self.world} processes now, {len(state['rng_cpu'])} when saved: the data stream "
                  "is reseeded, so the run continues correctly but not bit-exactly", file=sys.stderr)
            torch.manual_seed(self.args.seed + 1000 * state["step"] + self.rank)
        return state["step"]

    def describe(self):
        r, world = self.recipe, self.world
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        recipe = ", ".join(f"{k} {v:g}" for k, v in asdict(r).items())
        print(f"{self.stage}: {self.model.num_params() / 1e6:.2f}M parameters ({trainable / 1e6:.2f}M trained), "
              f"preset {self.args.preset}, {world} process{'es' if world > 1 else ''}, {self.args.precision} on "
              f"{self.device}, text {self.text_encoder}, out {self.args.out}/\n  recipe: {recipe}")
        cfg = self.model.cfg if isinstance(self.model, mav.UNet) else None
        if cfg is not None and cfg.temporal:
            print("  temporal layers: " + ", ".join(f"{k} {getattr(cfg, k):g}" for k in SWITCHES))

    def last_good(self) -> str:
        if self.saved_step:
            return f"the last good checkpoint (step {self.saved_step}) is kept in {self.args.out}/"
        return "no checkpoint of this run was saved"

    def gathered_rng(self, collective: bool):
        """Every rank's RNG states (CPU, CUDA), gathered on all ranks when `collective`."""
        device = self.device
        rng = [torch.get_rng_state()]
        rng_cuda = [torch.cuda.get_rng_state(device)] if device.type == "cuda" else None
        if self.world > 1 and collective:
            rng = [None] * self.world
            dist.all_gather_object(rng, torch.get_rng_state())
            if rng_cuda is not None:
                rng_cuda = [None] * self.world
                dist.all_gather_object(rng_cuda, torch.cuda.get_rng_state(device))
        return rng, rng_cuda

    def save(self, collective=True, **metrics):
        """Rank 0 writes the EMA checkpoint and the full training state (every rank's RNG state,
        gathered: so `collective` calls must happen on all ranks at the same step). Weights that are
        not all finite, as trained or as written (the checkpoint's fp16: |w| <= 65504), are never written:
        the run stops, and the last good checkpoint stays."""
        args, stage = self.args, self.stage
        written = self.ema.state_dict().values()  # as save_checkpoint writes them: fp16
        if not (pipeline.all_finite(self.model.parameters()) and pipeline.all_finite(written, torch.float16)):
            cli.die(f"the weights are not finite at step {self.step} (as trained, or in the checkpoint's fp16): "
                    f"not saved; {self.last_good()}", code=1)
        rng, rng_cuda = self.gathered_rng(collective)
        if not self.main_process:
            return
        seconds = time.time() - self.t_start
        meta = dict(preset=args.preset, text_encoder=self.text_encoder, step=self.step, processes=self.world,
                    recipe=asdict(self.recipe), unlabeled=args.unlabeled, device=str(self.device),
                    precision=args.precision, skipped_steps=self.skipped,
                    train_seconds=round(seconds, 1), **self.origin)
        if stage in ("image", "video"):  # the weight sample.py draws them at; interp and SR run unguided
            meta["guidance"] = self.recipe.guidance
        state = dict(stage=stage, preset=args.preset, text_encoder=self.text_encoder, unlabeled=args.unlabeled,
                     config=asdict(self.model.cfg), origin=self.origin, model=self.model.state_dict(),
                     ema=self.ema.state_dict(), step=self.step, optimizer=self.optimizer.state_dict(), rng_cpu=rng,
                     rng_cuda=rng_cuda, scaler=self.scaler.state_dict(), skipped=self.skipped, train_seconds=seconds)
        try:  # all written, then all renamed: the EMA checkpoint and its training state stay a pair
            pipeline.commit(pipeline.write_torch(state, self.state_path),
                       *pipeline.checkpoint_files(args.out, stage, self.ema, {**meta, **({"metrics": metrics} if metrics
                                                                                     else {})}))
        except Exception as e:  # a full disk, a file-size limit: one line, and no half-written file left
            remove_partial_saves(args.out, stage)
            why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise SaveFailed(f"cannot save step {self.step} into {args.out}/ ({why}); {self.last_good()}") from None
        self.saved_step = self.step

    def stop_reason(self, stop: StopSignal) -> str | None:
        """'signal' or 'time' when the run must stop before the next step; rank 0 decides for every rank,
        so that all stop at the same step."""
        time_up = self.args.time_limit is not None and time.time() - self.started > 60 * self.args.time_limit
        reason = "signal" if stop.received else "time" if time_up else None
        if self.world == 1:
            return reason
        code = torch.tensor([None, "time", "signal"].index(reason), device=self.device)
        dist.broadcast(code, 0)
        return [None, "time", "signal"][int(code.item())]

    def progress(self) -> float:
        """How far the run is, 0 -> 1, in steps: never in time, so that a slow machine trains the same model."""
        return min(self.step / self.recipe.steps, 1.0)

    def learning_rate(self) -> float:
        """Linear warm-up to the recipe's lr, then constant; over its last `cooldown` of the run, down to 0."""
        r = self.recipe
        lr = r.lr * min(1.0, (self.step + 1) / max(1, r.warmup))
        if r.cooldown:
            lr *= min(1.0, (1 - self.progress()) / r.cooldown)
        return lr

    def train_step(self):
        """The learning rate, one optimizer step, the EMA update. -> the loss (on the device; not read here)."""
        self.lr = self.learning_rate()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else None  # fp16 only: a host sync a step
        loss = optimizer_step(self.step_loss, self.model, self.optimizer, self.autocast, self.scaler)
        if scale is not None and self.scaler.get_scale() < scale:  # the scaler backed off: a skipped step
            self.skipped += 1
        decay = min(self.recipe.ema_decay, (1 + self.step) / (10 + self.step))
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
            cli.die(f"loss is {value} at step {self.step}; stopped, {self.last_good()}", code=1)
        bar.set_postfix(loss=f"{value:.4f}", samples_s=f"{rate:.0f}")
        if self.main_process:
            skipped = f" skipped {self.skipped}" if self.scaler.is_enabled() else ""
            self.log.write(f"step {self.step} loss {value:.5f} lr {self.lr:.2e} samples/s {rate:.1f} "
                           f"elapsed {time.time() - self.t_start:.0f}{skipped}\n")
            self.log.flush()

    def watch(self, last: bool):
        """Rank 0, every --sample-every steps: a preview grid of the EMA model; and one at the end, unless the
        run made fewer than a fifth of --sample-every steps since the last (so previews stay a small share)."""
        every, step = self.args.sample_every, self.step
        due = every and (step % every == 0 or (last and step % every >= every // 5))
        if self.main_process and due and self.stage != "judge":
            ext = "gif" if self.recipe.frames > 1 else "png"
            path = os.path.join(self.args.out, "samples", f"{self.stage}-{step:06d}.{ext}")
            preview(self.ema, self.cache, self.stage, self.recipe.guidance, path, self.device)

    def train(self, bar=None):
        """The loop, up to --steps, or until Ctrl-C / SIGTERM / the time limit (then save and stop).
        bar: a progress bar to update once per step (default: one of this run's steps)."""
        args, r = self.args, self.recipe
        per_step = r.batch * r.frames + r.joint_images
        bar = bar or tqdm(total=r.steps, initial=self.step, desc=self.stage, dynamic_ncols=True,
                          disable=not self.main_process)
        stop, reason = StopSignal(), None
        t_log, n_log = time.time(), 0
        self.started = self.started or t_log
        try:
            while self.step < r.steps and not (reason := self.stop_reason(stop)):
                loss = self.train_step()
                n_log += 1
                bar.update(1)
                if self.step % args.log_every == 0 or self.step == r.steps:
                    self.read_loss(loss, n_log * per_step * self.world / (time.time() - t_log), bar)
                    t_log, n_log = time.time(), 0
                if self.step % args.save_every == 0 or self.step == r.steps:
                    self.save()
                self.watch(last=self.step == r.steps)
            if reason:
                self.save()
        except SaveFailed as e:  # the bar's line ended first, so the message is a line of its own
            bar.close()
            cli.die(str(e), code=1)
        except KeyboardInterrupt:  # a second Ctrl-C: stop now
            bar.close()
            cli.die(f"interrupted again at step {self.step}: stopped without saving; {self.last_good()}", code=130)
        finally:
            stop.restore()
        bar.close()
        if reason == "signal":
            if self.main_process:
                print(f"interrupted at step {self.step}: saved {args.out}/{self.stage}.safetensors and "
                      f"{self.state_path}")
            raise SystemExit(130)

    def finish(self):
        """After the loop: replicas checked equal (DDP), the judge's accuracy stored, the peak memory."""
        if self.world > 1:  # DDP keeps the replicas identical; check it, rather than trust it
            checksum = torch.stack([p.detach().double().sum() for p in self.model.parameters()]).cpu()
            sums = [None] * self.world
            dist.all_gather_object(sums, checksum)
            if not all(torch.equal(sums[0], other) for other in sums[1:]):
                cli.die(f"parameters differ across the {self.world} ranks", code=1)
            if self.main_process:
                print(f"parameters identical on all {self.world} ranks")
        if self.stage == "judge" and self.main_process:  # how well it reads held-out digits, kept in its JSON
            accuracy = judge.judge_accuracy(self.ema, device=self.device)
            self.save(collective=False, **accuracy)
            print(f"judge on 200 held-out clips: pair accuracy {accuracy['frame_accuracy']:.4f} per frame, "
                  f"{accuracy['video_accuracy']:.4f} per video (majority of 16 frames)")
        if self.device.type == "cuda":
            peak = f"peak GPU memory {torch.cuda.max_memory_allocated(self.device) / 2**30:.2f} GiB"
        else:
            peak = f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
        if self.main_process:
            print(f"done: {self.step} steps in {time.time() - self.t_start:.0f} s, {peak}; "
                  f"EMA weights in {self.args.out}/{self.stage}.safetensors")
        if self.world > 1:
            dist.destroy_process_group()


# --- the whole method in one command (--stage all) ---------------------------------------------

def chain_path(out: str) -> str:
    return os.path.join(out, "chain.json")


def check_chain_out(p, args):
    """A chain's folder holds one chain: a new chain never starts over another run's checkpoints, and
    --resume continues only the chain recorded in <out>/chain.json, with the same preset, seed and steps."""
    cli.check_output_folder(args.out, p.error)
    if args.resume is not None and args.resume is not True:
        p.error("--stage all --resume takes no PATH: it continues the chain in --out")
    if args.resume and args.overwrite:
        p.error("--resume continues the chain in --out, --overwrite starts it over: choose one")
    if args.overwrite:
        return
    if args.resume:
        recorded = pipeline.checkpoint_meta(args.out, "chain")
        if not recorded:
            p.error(f"--resume: {chain_path(args.out)} does not exist, so {args.out}/ holds no chain to continue")
        for key, value in (("preset", args.preset), ("seed", args.seed), ("steps", chain_steps(args))):
            if recorded.get(key) != value:
                p.error(f"--resume: the chain in {args.out}/ has {key} {recorded.get(key)!r}, not {value!r}")
        return
    held = [name for stage in [*CHAIN, "chain"] for name in (f"{stage}.json", f"{stage}-train.pt")
            if os.path.exists(os.path.join(args.out, name))]
    if held:
        p.error(f"{args.out}/ already holds {held[0]}: continue that chain with --resume, or replace it "
                "with --overwrite")


def chain_steps(args) -> dict:
    """Each stage's steps: its recipe's, or --steps for every stage."""
    return {stage: args.steps or mav.RECIPES[stage].steps for stage in CHAIN}


def fresh_steps(model, stage: str, recipe: mav.Recipe, cache, device, precision: str, plain: bool = False):
    """Training steps of a fresh `model` for `stage`, as a run takes them (plain: fp32 and an unfused AdamW,
    bench.py's baseline) -> (its StageLoss, one_step(module): one optimizer step through module -> the loss).
    The chain times two of them (step_seconds), bench.py more."""
    model.to(device)
    if recipe.temporal_only:
        train_only_temporal(model)
    step_loss = StageLoss(model, stage, recipe, cache, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, foreach=False, fused=False) if plain else \
        model.configure_optimizers(recipe.lr, device_type=device.type)
    autocast = cli.autocast(device, "fp32" if plain else precision)
    scaler = torch.amp.GradScaler(device.type, enabled=not plain and precision == "fp16")
    return step_loss, lambda module: optimizer_step(module, model, optimizer, autocast, scaler)


def step_seconds(args, stage: str, recipe: mav.Recipe, cache) -> float:
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
    done, steps = recorded.get("done", {}), chain_steps(args)
    chain = dict(stage="chain", preset=args.preset, seed=args.seed, steps=steps, done=done)
    os.makedirs(args.out, exist_ok=True)
    pipeline.atomic_write_json(chain, chain_path(args.out))
    todo = [stage for stage in CHAIN if stage not in done]
    if not todo:
        print(f"chain done already, every stage in {args.out}/: python sample.py --checkpoints {args.out}")
        return
    recipes = {stage: replace(mav.RECIPES[stage], steps=steps[stage]) for stage in CHAIN}
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
            trainer.train(bar)
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
        pipeline.atomic_write_json(chain, chain_path(args.out))
        trainer.finish()
    bar.close(end=True)
    print("chain done: " + ", ".join(f"{stage} {seconds / 60:.1f} min" for stage, seconds in done.items())
          + f"; sample with: python sample.py --checkpoints {args.out}")


def resume_command(args) -> str:
    return (f"python train.py --stage all --preset {args.preset} --out {args.out} --seed {args.seed}"
            + (f" --steps {args.steps}" if args.steps else "") + " --resume")


def main(argv=None):
    args = parse_args(argv)
    lock = FolderLock(args.out) if int(os.environ.get("RANK", 0)) == 0 else None
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
    if args.stage == "all" or args.resume or args.stage == "judge" or rank or not source_ready(args):
        if rank == 0:
            print(device)
        return train_chain(args) if args.stage == "all" else train_stage(args)
    adopted = adopt_shipped_image(args) if args.shipped_image else None  # before the timing: it brings the text cache
    try:
        eta = run_eta(args)
    except KeyboardInterrupt:
        cli.die("interrupted while timing the first steps: nothing trained, nothing saved", code=130)
    print(f"{eta}; {device}")
    if adopted:
        print(adopted)
    train_stage(args)


def source_ready(args) -> bool:
    """The stage's source checkpoint is there to start from (or it starts from none, or from --init)."""
    source = None if args.recipe.scratch or args.init else mav.STAGES[args.stage].starts_from
    return source is None or bool(args.shipped_image) or os.path.exists(os.path.join(args.out, source + ".json"))


def train_stage(args):
    trainer = Trainer(args, args.stage, args.recipe, resume=args.resume)
    trainer.train()
    trainer.finish()


if __name__ == "__main__":
    main()
