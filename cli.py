"""
What the scripts share that is not the method: the hardware, the command line, and files.

mav.py is Make-A-Video and nothing else; train.py, sample.py, evaluate.py and bench.py need more around it:

  Hardware   which device, and which precision it runs natively
  Errors     bad input ends with one line on stderr and exit code 2, never a traceback
  Files      pictures and videos read and written (GIF, MP4, PNG), output paths checked before any work;
             pictures from outside made like the training frames
"""
from __future__ import annotations

import argparse
import math
import os
import stat
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import mav
import pipeline

# --- hardware -----------------------------------------------------------------
# Device and precision are chosen from the hardware, not assumed: bf16 autocast is faster than fp32
# where the CPU has bf16 instructions (AVX512-BF16 or AMX) and many times *slower* where it has not
# (AVX2 only, most laptops): there oneDNN emulates it (BENCHMARKS.md). CUDA GPUs from Ampere on
# (compute capability 8.0) run bf16 on their tensor cores; older ones (the T4 of free notebooks,
# V100, P100) only emulate it, and run fp16 natively instead, which training pairs with a gradient
# scaler (fp16's narrow range would flush small gradients to zero).


def choose_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA, then Apple's MPS, then the CPU; any other name as given."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX in the CPU, and oneDNN allowed to use them (ONEDNN_MAX_CPU_ISA=AVX2 forbids it).
    torch answers with private helpers: if they are gone, assume no (fp32 is never the slow choice)."""
    try:
        in_cpu = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return bool(in_cpu and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cuda_has_native_bf16(device) -> bool:
    """Compute capability 8.0 or later (Ampere on): bf16 on tensor cores. torch's is_bf16_supported() says
    yes to older GPUs too, which emulate it."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def choose_precision(device: torch.device, requested: str = "auto") -> tuple[str, str]:
    """-> ("bf16", "fp16" or "fp32", why): 'auto' takes bf16 where the device runs it natively, fp16 on an
    older CUDA GPU, fp32 elsewhere; an explicit choice is kept, and its why warns when bf16 will be emulated."""
    if device.type == "cuda":
        native, where = cuda_has_native_bf16(device), "this GPU"
    elif device.type == "cpu":
        native, where = cpu_has_native_bf16(), "this CPU"
    else:  # MPS: bf16 autocast is not measured here, fp32 always works
        native, where = False, device.type
    lacks = f"{where} has no native bf16" if device.type in ("cpu", "cuda") else f"bf16 on {where} is untested"
    if requested == "auto":
        if native:
            return "bf16", f"{where} has native bf16"
        return ("fp16", f"{lacks}; fp16, with a gradient scaler in training") if device.type == "cuda" \
            else ("fp32", lacks)
    if requested == "bf16" and not native:
        return "bf16", f"requested; warning: {lacks}, so bf16 is emulated and many times slower than fp32"
    if requested == "fp16" and device.type == "cpu":
        return "fp16", "requested; warning: a CPU emulates fp16 autocast, many times slower than fp32"
    return requested, "requested"


def add_device_arguments(group):
    """--device and --precision, the same in every script (resolved by device_and_precision). -> group"""
    group.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:1, mps")
    group.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                       help="autocast precision; auto: bf16 where the device runs it natively (a CUDA GPU from "
                            "Ampere on, a CPU with AVX512-BF16 or AMX), fp16 on an older CUDA GPU, else fp32")
    return group


def device_and_precision(device_name: str, precision: str, error) -> tuple[str, str, str]:
    """The scripts' --device and --precision, checked (bad ones go to `error`, one line) and resolved
    -> (device, precision, why)."""
    try:
        device = choose_device(device_name)
    except RuntimeError:
        error(f"--device {device_name!r}: not a device; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        error(f"--device {device_name}: CUDA is not available here")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        error(f"--device {device_name}: MPS is not available here")
    if device.type not in ("cpu", "cuda", "mps"):
        error(f"--device {device_name}: only cpu, cuda and mps are supported")
    return (str(device), *choose_precision(device, precision))


AUTOCAST_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device, precision: str):
    """bf16 or fp16 autocast on the device's own type (cuda, cpu, mps), or nothing for fp32."""
    return torch.autocast(torch.device(device).type, dtype=AUTOCAST_DTYPE.get(precision, torch.bfloat16),
                          enabled=precision in AUTOCAST_DTYPE)


# --- errors ---------------------------------------------------------------------

def die(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each default once: not where the help text already says it, nor None / off."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and still exit code 2)."""

    def error(self, message):
        die(f"{message} (see {self.prog} --help)")


SEED_MAX = 2 ** 63 - 1  # a torch seed, with room for the rank and step a training run adds to it


def check_seed(seed: int, error):
    if not 0 <= seed <= SEED_MAX:
        error(f"--seed must be in 0 .. 2^63 - 1, got {seed}")


def free_memory(device: str) -> int | None:
    """Bytes free on the device now (the CPU: MemAvailable), or None where it cannot be told."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.mem_get_info(torch.device(device))[0]
    if kind == "cpu":
        try:
            with open("/proc/meminfo") as fh:
                info = dict(line.split(":", 1) for line in fh)
            return int(info["MemAvailable"].split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            return None
    return None


def check_output_folder(path: str, error):
    """Refuse (one line, through `error`) a folder of outputs that could not be made or written, before any
    work and without making it: a file in its place or above it, a place without write permission."""
    if os.path.exists(path) and not os.path.isdir(path):
        error(f"--out {path} is a file, not a folder")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):  # the nearest folder that is there: the rest would be made in it
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        error(f"--out {path}: {existing} is a file, so no folder can be made under it")
    try:  # made and removed at once: permissions, a read-only or virtual file system (/proc)
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".write-test-"))
    except OSError as e:
        error(f"--out {path}: cannot write in {existing} ({e.strerror or type(e).__name__})")


class InputError(Exception):
    """A file given or named on the command line that cannot be used; its message is one line."""


# --- files ----------------------------------------------------------------------

def video_grid(videos: torch.Tensor, pad: int = 2, cols: int | None = None) -> np.ndarray:
    """videos (n f h w) in [0, 1] -> uint8 frames (f H W), tiled row by row with grey borders."""
    n, f, h, w = videos.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.full((f, rows * (h + pad) + pad, cols * (w + pad) + pad), 0.5)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = videos[i]
    return (grid.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def read_frames(path: str) -> torch.Tensor:
    """An image (PNG, JPEG, ...: one frame) or a video (GIF, MP4: every frame) -> (f h w) in [0, 1],
    grayscale by luminance (transparent pixels count as black)."""
    import imageio.v3 as iio
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():  # imageio's plugins complain while they try a file that is no picture
            warnings.simplefilter("ignore")
            is_batch = iio.improps(path, index=None).is_batch
            pixels = np.asarray(iio.imread(path, index=None))
    except Exception as e:
        raise InputError(f"cannot read {path} as an image or a video ({type(e).__name__})") from None
    if not is_batch:
        pixels = pixels[None]
    if pixels.ndim not in (3, 4) or pixels.size == 0:
        raise InputError(f"cannot read {path}: unexpected pixel array of shape {pixels.shape}")
    scale = np.iinfo(pixels.dtype).max if np.issubdtype(pixels.dtype, np.integer) else 1.0
    x = torch.from_numpy(pixels.astype(np.float32) / scale)
    if x.ndim == 4:  # f h w channels
        gray = x[..., :3] @ torch.tensor([0.299, 0.587, 0.114]) if x.shape[-1] >= 3 else x[..., 0]
        x = gray * x[..., -1] if x.shape[-1] in (2, 4) else gray  # the last channel is alpha
    return x.clamp(0, 1)


VIDEO_EXTS, IMAGE_EXTS = (".gif", ".mp4"), (".png",)


# The first bytes of each kind of file a command writes: an existing --out is written over only if it is one.
MAGIC = {".gif": (0, b"GIF8"), ".png": (0, b"\x89PNG"), ".mp4": (4, b"ftyp")}


def check_output_path(path: str, extensions: tuple, sides: tuple = (), reading: tuple = ()) -> str:
    """Refuse (InputError, one line) an output path, before any work and without making anything: a wrong
    extension; a FIFO, device or folder in its place; a file of another kind already there (only a video this
    kind of command wrote is written over); a place inside a checkpoint folder the command reads; a place that
    cannot be written. `sides`: the extensions of the files written beside it (a grid's .txt, an evaluation's
    .json), each written over only where it sits beside such a video (a pair the command wrote before)."""
    ext = os.path.splitext(path)[1].lower()
    if os.path.isdir(path):
        raise InputError(f"--out {path}: is a folder")
    if ext not in extensions:
        raise InputError(f"--out {path}: the file name must end in {' or '.join(extensions)}")
    for folder in reading:
        where, read = os.path.realpath(os.path.dirname(os.path.abspath(path))), os.path.realpath(folder)
        if os.path.commonpath([where, read]) == read:
            raise InputError(f"--out {path} lies in {folder}/, a checkpoint folder this command reads: "
                             "write somewhere else")
    ours = check_regular(path, "--out") and written_by_us(path, ext)
    if os.path.exists(path) and not ours:
        raise InputError(f"--out {path} exists and is not a {ext[1:].upper()} file: refused, so as not to write "
                         "over it; choose another --out")
    for side in sides:
        beside = os.path.splitext(path)[0] + side
        if check_regular(beside, "--out's") and not ours:
            raise InputError(f"{beside} exists, and this command writes its {side} beside --out {path}, which is not "
                             "there: refused, so as not to write over a file it did not make; choose another --out")
    check_writable_folder(os.path.dirname(os.path.abspath(path)), f"--out {path}")
    check_name(path)
    return path


def check_name(path: str):
    """Every part of a path still to be made within the file system's name length; where its folder is there, the
    file itself made and removed at once (what a write would meet, found before the work)."""
    path = os.path.abspath(path)
    existing, missing = path, []
    while not os.path.exists(existing):
        existing, part = os.path.split(existing)
        missing.append(part)
    limit = os.pathconf(existing, "PC_NAME_MAX") if os.path.isdir(existing) else 255
    if any(len(part.encode()) > limit for part in missing):
        raise InputError(f"--out {path}: cannot write there (a name over {limit} bytes)")
    if len(missing) == 1:  # the folder is there: try the file
        try:
            with open(path, "ab"):
                pass
        except OSError as e:
            raise InputError(f"--out {path}: cannot write there ({e.strerror})") from None
        os.remove(path)


def check_regular(path: str, what: str) -> bool:
    """True where `path` is a regular file, False where nothing is there; InputError for a FIFO, a device, a
    folder (reading or writing one would block forever, never end, or fail after the work)."""
    if not os.path.lexists(path) or (os.path.islink(path) and not os.path.exists(path)):
        return False
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise InputError(f"{what} {path} is not a regular file (a folder, a FIFO or a device): refused")
    return True


def written_by_us(path: str, ext: str) -> bool:
    offset, magic = MAGIC[ext]
    try:
        with open(path, "rb") as fh:
            return fh.read(offset + len(magic))[offset:] == magic
    except OSError:
        return False


def check_writable_folder(folder: str, what: str):
    """The nearest existing folder at or above `folder` can be written in (made and removed at once: nothing
    is left, and no folder is made)."""
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise InputError(f"{what}: cannot write there ({existing} is a file, so no folder can be made under it)")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".write-test-"))
    except OSError as e:
        raise InputError(f"{what}: cannot write there ({e.strerror or type(e).__name__})") from None


def write_text(path: str, text: str):
    """A side file (a grid's prompts, an evaluation's figures), whole or not at all."""
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.getpid()}.partial.txt")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_video(path: str, frames: np.ndarray, fps: float, scale: int = 1):
    """uint8 frames (f h w) -> a looping GIF, an MP4 (by extension), or a PNG for one frame."""
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ext = os.path.splitext(path)[1].lower()
    final, path = path, os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.getpid()}.partial{ext}")
    try:
        _write_frames(path, ext, frames, fps)
        os.replace(path, final)  # whole, or not at all (Ctrl-C, a full disk)
    finally:
        if os.path.exists(path):
            os.remove(path)


def _write_frames(path: str, ext: str, frames: np.ndarray, fps: float):
    import imageio.v2 as imageio  # imported here: only the scripts that write files need it
    if ext == ".png":
        assert len(frames) == 1, "a PNG holds one frame"
        imageio.imwrite(path, frames[0])
    elif ext == ".mp4":
        h, w = frames.shape[1:]  # H.264 wants even sides
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2)))
        with imageio.get_writer(path, fps=fps, macro_block_size=1, codec="libx264", quality=8) as out:
            for frame in frames:
                out.append_data(np.stack([frame] * 3, axis=-1))
    else:
        _write_gif(path, frames, fps)


def _write_gif(path: str, frames: np.ndarray, fps: float):
    """A GIF through ffmpeg (imageio-ffmpeg's binary): one palette for the whole clip made of its grays (exact,
    as a frame has at most 256) and every frame kept. Pillow's writer, which imageio uses, drops a frame equal
    to the one before and picks a mode per frame, so a clip that holds still read back shorter, or not at all."""
    import imageio_ffmpeg
    f, h, w = frames.shape
    palette = ("split[a][b];[a]palettegen=max_colors=256:reserve_transparent=0:stats_mode=full[p];"
               "[b][p]paletteuse=dither=none")
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "gray",
               "-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "-", "-vf", palette, "-gifflags", "-transdiff-offsetting",
               "-loop", "0", "-f", "gif", path]
    subprocess.run(command, input=np.ascontiguousarray(frames).tobytes(), check=True, capture_output=True)


# --- pictures from outside, made like the training frames -----------------------------------

def fit_frames(frames: torch.Tensor, size: int = mav.BASE) -> torch.Tensor:
    """Outside pictures (f h w) in [0, 1], any size -> (f size size), made the way the training frames are:
    centre-cropped to a square, resized to the 64² canvas, then area-downsampled."""
    h, w = frames.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = frames[:, None, top:top + side, left:left + side].float()
    resize = dict(mode="area") if side > mav.CANVAS else dict(mode="bilinear", align_corners=False)
    canvas = F.interpolate(square, size=(mav.CANVAS, mav.CANVAS), **resize)
    return mav.area_downsample(canvas.clamp(0, 1), size)[:, 0]


def unlike_training_frames(frames: torch.Tensor) -> str | None:
    """Why pictures (f h w) in [0, 1] do not look like Moving MNIST frames (white digits on black), or None."""
    mean, lit = frames.mean().item(), (frames > 0.5).float().mean().item()
    if mean > 0.3 or lit > 0.4:
        return (f"mean brightness {mean:.2f} and {lit:.0%} bright pixels, where Moving MNIST frames are white "
                f"digits on black (about 0.05 and 5%)")
    return None


# --- the cascade's flags and checkpoints, the same in sample.py, evaluate.py and bench.py -------------

SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints")
SHIPPED_FOLDERS = {"base": SHIPPED, "cpu": os.path.join(SHIPPED, "cpu")}  # the shipped cascade of each preset

# Upper bounds of a request: beyond them a run takes hours or more memory than a laptop has.
LIMITS = {**{name: pipeline.CALL_RANGES[name][2] for name in ("steps", "interp_steps", "sr_steps", "frames")},
          "extend": pipeline.CALL_RANGES["extend_frames"][2], "scale": 16,
          "num_samples": 1024}


def add_cascade_arguments(cascade, stages_help="comma-separated subset of video,interp,sr (default: every stage "
                                               "with a checkpoint); or image: single frames from the image model"):
    """The cascade's flags, the same in sample.py, evaluate.py and bench.py (which make no video from pictures:
    their mode is None)."""
    cascade.set_defaults(mode=None)
    cascade.add_argument("--checkpoints", default="checkpoints",
                         help="folder with the stages' checkpoints (the shipped ones, or a train.py --out)")
    cascade.add_argument("--stages", default=None, help=stages_help)
    cascade.add_argument("--steps", type=int, nargs="+", default=None, metavar="N",
                         help="diffusion steps of the video model, then (optional) of interpolation and of "
                              "super-resolution (default " + " ".join(map(str, mav.STEPS.values())) + ")")
    cascade.add_argument("--sampler", default=mav.SAMPLER, choices=list(mav.SAMPLERS),
                         help="dpm++: DPM-Solver++(2M), second order; ddim: first order, needs more steps for the "
                              "same videos; ancestral: stochastic")
    cascade.add_argument("--guidance", type=float, default=None,
                         help="classifier-free guidance weight of the video model (1 = none); interp and SR run "
                              "unguided (default: the weight the checkpoint records, the laptop chain's 7; "
                              f"else {mav.GUIDANCE:g})")
    cascade.add_argument("--frames", type=int, default=mav.FRAMES, help="frames the video model generates")
    cascade.add_argument("--extend", type=int, default=0, help="continue the video model's clip by N frames (needs interp)")
    cascade.add_argument("--sr", default="spacetime", choices=["spacetime", "framewise"],
                         help="space-time SR, or frame by frame from one shared noise (the paper's SR_h)")
    cascade.add_argument("--image-expert", type=float, default=mav.IMAGE_EXPERT, metavar="BETA",
                         help="the image model's share of the last steps (t <= "
                              f"{mav.IMAGE_EXPERT_UNTIL:g}) of the video model, or of the masked network for --image "
                              "and --between, frame by frame: keeps each digit legible where two cross (mav.py §10; "
                              "used where --checkpoints holds image.json); 0: the video model "
                              f"alone, as the paper samples (default {mav.IMAGE_EXPERT:g})")


def check_cascade(p, args, needs_video: bool = True, image_alone: bool = True):
    """The cascade's flags (steps, limits, seed, stages, guidance), checked and resolved. image_alone: the command
    can run the image model alone (--stages image: sample.py's single frames)."""
    steps = args.steps or []
    if len(steps) > 3:
        p.error("--steps takes at most 3 numbers: video, interpolation, super-resolution")
    args.steps, args.interp_steps, args.sr_steps = [*steps, *list(mav.STEPS.values())[len(steps):]]
    for name, limit in LIMITS.items():
        value, flag = getattr(args, name, 1), "--steps" if name.endswith("steps") else "--" + name.replace("_", "-")
        if value < (0 if name == "extend" else 1):
            p.error(f"{flag} must be {'>= 0' if name == 'extend' else 'positive'}")
        if value > limit:
            p.error(f"{flag} {value} is over its limit of {limit} (hours of compute or too much memory)")
    if args.guidance is not None and not guidance_in_range(args.guidance):
        p.error(f"--guidance must be a number in {GUIDANCE_RANGE}, got {args.guidance!r}")
    if not 0 <= args.image_expert <= 1:  # nan fails too
        p.error(f"--image-expert must be a number in 0 .. 1, got {args.image_expert!r}")
    check_seed(args.seed, p.error)
    check_stages(p, args, needs_video)
    if args.stages == ["image"] and not image_alone:
        p.error(f"--stages image: single frames of the image model are sample.py's (python sample.py --stages image "
                f"--prompt ...); {p.prog} runs the video cascade (video, interp, sr)")
    if args.guidance is None:  # the weight its trainer chose (train.py records it), else the common default
        stage = "image" if args.stages == ["image"] else "video"
        args.guidance = pipeline.checkpoint_meta(args.checkpoints, stage).get("guidance", mav.GUIDANCE)
        if not guidance_in_range(args.guidance):
            p.error(f"{args.checkpoints}/{stage}.json records guidance {args.guidance!r}: not a number in "
                    f"{GUIDANCE_RANGE}")


GUIDANCE_RANGE = "{:g} .. {:g}".format(*pipeline.RECIPE_RANGES["guidance"][:2])


def guidance_in_range(w) -> bool:
    low, high, _ = pipeline.RECIPE_RANGES["guidance"]  # the one range: what a recipe may record
    return type(w) in (int, float) and math.isfinite(w) and low <= w <= high


def check_stages(p, args, needs_video: bool):
    if args.stages is None:
        return
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in args.stages if s not in mav.CASCADE and s != "image"]
    if unknown or not args.stages:
        p.error(f"--stages: unknown stage {unknown[0] if unknown else '(none)'!r}; choose from video,interp,sr "
                f"(or image alone)")
    if "image" in args.stages and (len(args.stages) > 1 or args.mode or args.extend):
        p.error("--stages image samples single frames from the image model; it does not combine with "
                "other stages, --image/--between/--variation or --extend")
    if needs_video and "image" not in args.stages and "video" not in args.stages \
            and args.mode not in ("image", "between"):
        p.error(f"--stages {','.join(args.stages)}: the cascade starts from the video model's clip; add video "
                f"(e.g. --stages video,{args.stages[0]})")


def load_networks(args, stages) -> dict:
    """{stage: (network, meta)}, each from --checkpoints (or the shipped set where choose_stages borrowed it)
    through pipeline.load_networks, Pipeline.load's loader; or a one-line error, which for a network the folder
    lacks says how to make it."""
    sources = {s: getattr(args, "borrowed", {}).get(s, args.checkpoints) for s in stages}
    if os.path.exists(args.checkpoints) and not os.path.isdir(args.checkpoints):
        die(f"--checkpoints {args.checkpoints} is a file, not a folder")
    for stage, folder in sources.items():
        if not os.path.exists(os.path.join(folder, stage + ".json")):
            die(f"{pipeline.no_checkpoint(folder, stage)}; train it with: python train.py --stage {stage} "
                f"--out {args.checkpoints}")
    try:
        return pipeline.load_networks(sources, args.device)
    except pipeline.CheckpointError as e:
        die(str(e))


def load(args, stage: str):
    """One stage's (network, meta), as load_networks loads it."""
    return load_networks(args, [stage])[stage]


def choose_stages(args) -> list[str]:
    """The stages a command runs: --stages, else video and every later stage the folder holds or borrows."""
    args.borrowed = borrowed_stages(args)
    held = lambda s: s in args.borrowed or os.path.exists(os.path.join(args.checkpoints, f"{s}.json"))
    if args.stages is not None:
        stages = [s for s in mav.CASCADE if s in args.stages]  # always in cascade order
    else:
        stages = ["video"] + [s for s in ("interp", "sr") if held(s)]
    mode = args.mode
    masked = ["--extend"] * bool(args.extend) + [f"--{mode}"] * (mode in ("image", "between"))
    if masked and not held("interp"):
        die(f"{masked[0]} makes frames with the masked interpolation network: no interp checkpoint in "
            f"{args.checkpoints}/; train it with: python train.py --stage interp")
    return stages


def borrowed_stages(args) -> dict:
    """A folder with a video model of one's own but no interp or SR (python train.py --stage video makes only
    the video model) borrows them from the shipped cascade of its preset, and says so in one line.
    -> {stage: shipped folder}."""
    meta = pipeline.checkpoint_meta(args.checkpoints, "video")
    shipped = SHIPPED_FOLDERS.get(meta.get("preset"))  # interp and SR of the video model's own preset
    if not shipped or os.path.realpath(args.checkpoints) == os.path.realpath(shipped) or args.stages == ["image"]:
        return {}
    wanted = {"interp", "sr"} if args.stages is None else set(args.stages)
    if args.extend or args.mode in ("image", "between"):
        wanted.add("interp")  # the masked network
    has = lambda folder, s: os.path.exists(os.path.join(folder, s + ".json"))
    missing = [s for s in ("interp", "sr") if s in wanted and not has(args.checkpoints, s) and has(shipped, s)]
    if missing:
        print(f"{args.checkpoints}/ holds no {' or '.join(missing)} model: the shipped ones from "
              f"{os.path.relpath(shipped)}/ make {'that stage' if len(missing) == 1 else 'those stages'}")
    return {s: shipped for s in missing}


def load_models(args, stages) -> dict:
    """The checkpoints a run loads: its stages, plus the masked network for --extend / --image / --between
    (which then makes the first clip, so the video model is not needed), plus the image model beside the
    video model or the masked network (their per-frame expert) where the folder has one. One text encoder."""
    animated = args.mode in ("image", "between")
    names = [s for s in stages if not (s == "video" and animated)]
    if (args.extend or animated) and "interp" not in names:
        names.append("interp")
    expert_of = "video" in names or animated or args.extend  # the video model or the masked network (mav.py §10)
    if expert_of and args.image_expert and os.path.exists(os.path.join(args.checkpoints, "image.json")):
        names.append("image")  # their per-frame expert
    return load_networks(args, names)


def text_cache(args, models) -> mav.TextCache:
    encoder = next(iter(models.values()))[1]["text_encoder"]
    return pipeline.load_text_cache(args.checkpoints, encoder, write=False)  # never writes in what it reads


def progress(desc):
    return lambda steps: tqdm(steps, desc=desc, dynamic_ncols=True, leave=False)


def cascade(args, models, stages) -> pipeline.Pipeline:
    """The loaded networks as a Pipeline (mav's Cascade, its calls checked), with args.checkpoints' text cache."""
    return pipeline.Pipeline({stage: model for stage, (model, _) in models.items()}, text_cache(args, models), stages,
                             args.guidance)


def cascade_options(args, quiet: bool = False) -> dict:
    """The command's cascade flags as Cascade.generate's keywords."""
    return dict(steps=args.steps, interp_steps=args.interp_steps, sr_steps=args.sr_steps, guidance=args.guidance,
                sampler=args.sampler, frames=args.frames, extend_frames=args.extend,
                framewise_sr=args.sr == "framewise", image_expert=args.image_expert,
                progress=None if quiet else progress,
                **({"strength": args.strength} if args.mode == "variation" else {}))
