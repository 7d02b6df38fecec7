"""
What train.py needs around its loop, so that train.py reads as the training itself:

  1. The command             its flags, each checked (one line on stderr, exit 2) before anything is built
  2. The run's folder        one run per --out, nothing written over unasked, a saved state read back checked
  3. What a stage starts from  a new UNet, the stage before it inflated, the shipped image model, --init
  4. What a run shows        a preview grid of samples as it goes, its peak memory at the end

    args = train_setup.parse_args(["--stage", "video"])   # then train.py's Trainer(args, ...) runs it
"""
import atexit
import contextlib
import math
import os
import pickle
import resource
import shutil
import sys
from dataclasses import asdict, fields, replace

import torch

import cli
import judge
import mav
import pipeline


# =============================================================================
# 1. The command: its flags, each checked before anything is built
# =============================================================================

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
                      help="change the stage's recipe (pipeline.RECIPES), e.g. --recipe batch=256 lr=1e-3; fields: "
                           + ", ".join(f.name for f in fields(pipeline.Recipe) if f.name != "steps"))
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


# the checks of the command's flags, as tables: each row one line on stderr (exit 2) when it fails
ONE_STAGE_FLAGS = ("recipe", "model", "init", "unlabeled")  # refused with --stage all: each stage takes its recipe
POSITIVE = ("steps", "log_every", "save_every")
CONFLICTS = [  # (flag, flag): why not both
    (("init", "resume"), "--init starts a new run from a checkpoint's weights, --resume continues a run: choose one"),
    (("model", "init"), "--model builds a new network; --init and --resume take the checkpoint's own"),
    (("model", "resume"), "--model builds a new network; --init and --resume take the checkpoint's own"),
]


def check_args(p, args):
    """Every number and combination checked (one line, exit 2, before anything is built)."""
    given = [name for name in ONE_STAGE_FLAGS if getattr(args, name)]
    if args.stage == "all" and given:
        p.error(f"--{given[0]} applies to one stage: --stage all trains every stage by its recipe (pipeline.RECIPES)")
    for name in POSITIVE:
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.sample_every < 0:
        p.error("--sample-every must be >= 0")
    cli.check_seed(args.seed, p.error)
    if args.time_limit is not None and not (math.isfinite(args.time_limit) and args.time_limit > 0):
        p.error("--time-limit must be a positive number of minutes")
    if args.stage not in ("video", "all") and args.unlabeled:
        p.error("--unlabeled applies to the video stage")
    for (one, other), why in CONFLICTS:
        if getattr(args, one) and getattr(args, other):
            p.error(why)


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
              row: pipeline.Recipe | None = None) -> pipeline.Recipe:
    """The stage's row of pipeline.RECIPES (or `row`) with --recipe's FIELD=VALUE changes (and --steps), checked."""
    row = row or pipeline.RECIPES[stage]
    row = replace(row, steps=steps or row.steps)
    changes = parsed_changes(p, "--recipe", overrides, {f.name: getattr(row, f.name) for f in fields(pipeline.Recipe)
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


def check_memory(p, stage: str, preset: str, recipe: pipeline.Recipe, model_changes: dict, device: str):
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


def describe(model, stage: str, recipe: pipeline.Recipe, args, world: int, device, text_encoder):
    """The run's first lines: the network, what trains, the recipe (and a video network's temporal layers)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{stage}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters ({trainable / 1e6:.2f}M trained), "
          f"preset {args.preset}, {world} process{'es' if world > 1 else ''}, {args.precision} on "
          f"{device}, text {text_encoder}, out {args.out}/\n  recipe: "
          + ", ".join(f"{k} {v:g}" for k, v in asdict(recipe).items()))
    cfg = model.cfg if isinstance(model, mav.UNet) else None
    if cfg is not None and cfg.temporal:
        print("  temporal layers: " + ", ".join(f"{k} {getattr(cfg, k):g}" for k in SWITCHES))


def chain_steps(args) -> dict:
    """Each stage's steps: its recipe's, or --steps for every stage."""
    return {stage: args.steps or pipeline.RECIPES[stage].steps for stage in CHAIN}


# =============================================================================
# 2. The run's folder: one run in it, nothing written over unasked, a saved state read back with every check
# =============================================================================

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


def chain_path(out: str) -> str:
    return os.path.join(out, "chain.json")


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


def remove_partial_saves(folder: str, stage: str):
    """A save's files under their temporary names (a full disk, a kill mid-save): never a checkpoint."""
    for name in (f"{stage}.safetensors", f"{stage}.json", f"{stage}-train.pt"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, name + ".tmp"))


class SaveFailed(Exception):
    """A save that could not be written whole (one-line message); the last good pair is kept."""


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


def restore(state, ema, optimizer, seed: int, rank: int, world: int, device) -> int:
    """EMA, optimizer and every rank's random stream from a saved state (None: a fresh run) -> the step to go
    on from."""
    if state is None:
        torch.manual_seed(seed + rank)  # each rank its own data
        return 0
    try:
        pipeline.load_weights(ema, state["ema"])
        optimizer.load_state_dict(state["optimizer"])
    except (pipeline.CheckpointError, KeyError, TypeError, ValueError) as e:
        cli.die(f"--resume: its EMA or optimizer state does not fit the network ({str(e).splitlines()[0][:200]})")
    if len(state["rng_cpu"]) == world:  # each rank continues its own random stream
        torch.set_rng_state(state["rng_cpu"][rank])
        if device.type == "cuda" and state.get("rng_cuda"):
            torch.cuda.set_rng_state(state["rng_cuda"][rank], device)
    else:
        print(f"warning: {world} processes now, {len(state['rng_cpu'])} when saved: the data stream "
              "is reseeded, so the run continues correctly but not bit-exactly", file=sys.stderr)
        torch.manual_seed(seed + 1000 * state["step"] + rank)
    return state["step"]


# =============================================================================
# 3. What a stage starts from
# =============================================================================

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


def from_shipped_image(folder: str) -> pipeline.Recipe:
    """The video recipe for a shipped image model: FROM_SHIPPED_IMAGE, sampled at the image model's guidance."""
    guidance = pipeline.checkpoint_meta(folder, "image").get("guidance", mav.GUIDANCE)
    return replace(pipeline.RECIPES["video"], guidance=guidance, **FROM_SHIPPED_IMAGE)


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


def source_ready(args) -> bool:
    """The stage's source checkpoint is there to start from (or it starts from none, or from --init)."""
    source = None if args.recipe.scratch or args.init else mav.STAGES[args.stage].starts_from
    return source is None or bool(args.shipped_image) or os.path.exists(os.path.join(args.out, source + ".json"))


def load_source(out, preset, stage, needed_by):
    """The checkpoint a stage starts from, or a one-line error that says how to make it."""
    try:
        model, meta = pipeline.load_checkpoint(out, stage)
    except pipeline.CheckpointError as e:
        cli.die(f"{e}; the {needed_by} stage starts from it: run python train.py --stage {stage} --out {out}")
    if meta.get("preset") != preset:
        cli.die(f"the {stage} checkpoint in {out}/ is preset {meta.get('preset')!r}, not {preset!r}")
    return model, meta


def build_model(args, stage, recipe: pipeline.Recipe):
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


# =============================================================================
# 4. What a run shows as it goes: a preview grid, its memory
# =============================================================================

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


def peak_memory(device) -> str:
    if device.type == "cuda":
        return f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
