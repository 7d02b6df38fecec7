"""Tests for mav.py, cli.py, judge.py, train.py, sample.py, evaluate.py and bench.py: CPU only, tiny preset, about
2 minutes on 2 cores. No test depends on the CPU's bf16: precision is auto. One section per part: the method,
training, sampling, evaluation, bad input; the fixtures and tables they share first.

    python -m pytest -q test_mav.py
"""
import json
import math
import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
import unittest.mock
from dataclasses import asdict
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

import bench
import cli
import evaluate
import judge
import mav
import pipeline
import sample
import train
import train_setup


# --- shared: fixtures, helpers, the tables parametrized tests read ------------------------------------------

HERE = os.path.dirname(os.path.abspath(__file__))


TINY = mav.UNetConfig(**mav.PRESETS["tiny"])


SHIPPED = os.path.join(HERE, "checkpoints")


@pytest.fixture(autouse=True)
def untimed_runs(request, monkeypatch):
    """train.py times a fresh run's first steps for its ETA line: three steps that tests counting the loss's
    calls, or waiting for none, do not want. Only the test of that line times them."""
    if "inflates_the_shipped_image_model" not in request.node.name:
        monkeypatch.setattr(train, "run_eta", lambda args: f"{args.stage}: {args.recipe.steps:,} steps (not timed)")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """A folder holding the text-embedding cache, built once (the only time the encoder runs)."""
    folder = tmp_path_factory.mktemp("cache")
    pipeline.load_text_cache(str(folder))
    return folder


@pytest.fixture(scope="session")
def cache(cache_dir):
    return pipeline.load_text_cache(str(cache_dir))


def fake_text(n: int, value: float | None = None) -> mav.Text:
    """n prompts' worth of text embeddings, no encoder needed: 3 tokens each, every number `value` (or random)."""
    g = torch.Generator().manual_seed(0)
    make = lambda *shape: torch.randn(*shape, generator=g) if value is None else torch.full(shape, value)
    return mav.Text(make(n, 3, 384), torch.ones(n, 3, dtype=torch.bool), make(n, 384))


def randomized(model):
    """Give every weight a random value, so zero-initialised layers cannot hide a bug."""
    torch.manual_seed(1)
    temporal = mav.temporal_names(model.cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name not in temporal:
                p.normal_(0, 0.1)
    return model


def untimed():
    """train.py without the two timed steps of its ETA line (the fixtures' runs; the line has tests of its own)."""
    return unittest.mock.patch.object(train, "step_seconds", lambda *args: 0.01)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, cache_dir):
    """train.py --stage image, then --stage video, tiny preset, as a user would run them (through its main)."""
    out = tmp_path_factory.mktemp("ckpt")
    for f in os.listdir(cache_dir):
        shutil.copy(os.path.join(cache_dir, f), out)
    common = ["--preset", "tiny", "--out", str(out), "--sample-every", "0", "--save-every", "1000"]
    with untimed():
        for stage, extra in [("image", ["--steps", "20", "--recipe", "batch=16"]),
                             ("video", ["--steps", "4", "--recipe", "batch=2", "frames=8", "joint_images=4"])]:
            train.main(["--stage", stage, *common, *extra])  # in this process: no second start-up of torch
    return out


@pytest.fixture(scope="session")
def cascade(trained, tmp_path_factory):
    """The trained folder plus tiny interp and sr stages, trained by train.py."""
    out = tmp_path_factory.mktemp("cascade")
    shutil.copytree(trained, out, dirs_exist_ok=True)
    common = ["--preset", "tiny", "--out", str(out), "--sample-every", "0", "--steps", "3"]
    with untimed():
        for stage, frames in [("interp", "6"), ("sr", "4")]:
            train.main(["--stage", stage, "--recipe", "batch=2", f"frames={frames}", *common])
    return out


def sample_at_most_2_steps(monkeypatch) -> list:
    """mav.sample takes at most 2 of the steps it is asked for, for time -> the list of the steps asked."""
    asked, real = [], mav.sample

    def sample(*args, steps=mav.STEPS["video"], **kw):
        asked.append(steps)
        return real(*args, steps=min(steps, 2), **kw)
    monkeypatch.setattr(mav, "sample", sample)
    return asked


def expect_one_line_error(capsys, main, argv, needle):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error:") and needle in err, err


def tiny_video_run(out, *extra):
    train.main(["--stage", "video", "--preset", "tiny", "--out", str(out), "--steps", "2", "--sample-every", "0",
                "--recipe", "batch=2", "frames=4", "joint_images=2", *extra])


def tiny_image_run(out, steps, *extra):
    train.main(["--stage", "image", "--preset", "tiny", "--out", str(out), "--steps", str(steps),
                "--recipe", "batch=4", "--sample-every", "0", "--log-every", "1", "--save-every", "2", *extra])


def tiny_chain(out, *extra):
    train.main(["--stage", "all", "--preset", "tiny", "--out", str(out), "--steps", "2",
                "--sample-every", "0", "--log-every", "1", *extra])


# the chain's recipes at the fewest examples a step (the chain takes no --recipe): its order, resume and files
# are the same, its steps an eighth of the cost
SMALL_BATCHES = {"image": dict(batch=4), "video": dict(batch=1, frames=4, joint_images=2),
                 "interp": dict(batch=1, frames=6), "sr": dict(batch=1, frames=2)}


def small_chain_recipes(monkeypatch):
    for stage, changes in SMALL_BATCHES.items():
        monkeypatch.setitem(pipeline.RECIPES, stage, mav.replace(pipeline.RECIPES[stage], **changes))


@pytest.fixture
def broken_checkpoints(trained, tmp_path):
    """Copies of the trained folder spoiled in each way sample.py must refuse."""
    def make(kind):
        folder = tmp_path / kind
        shutil.copytree(trained, folder)
        if kind == "corrupt":
            data = (folder / "video.safetensors").read_bytes()
            (folder / "video.safetensors").write_bytes(data[: len(data) // 2])
        elif kind == "bad-guidance":
            meta = pipeline.checkpoint_meta(str(folder), "video")
            pipeline.atomic_write_json({**meta, "guidance": "strong"}, str(folder / "video.json"))
        elif kind == "other-stage":
            shutil.copy(folder / "image.safetensors", folder / "video.safetensors")
            shutil.copy(folder / "image.json", folder / "video.json")
        elif kind == "json-list":
            (folder / "video.json").write_text("[1, 2]")
        elif kind == "two-encoders":  # the image model's from a local folder, the video model's the packaged one
            meta = pipeline.checkpoint_meta(str(folder), "image")
            pipeline.atomic_write_json({**meta, "text_encoder": str(tmp_path)}, str(folder / "image.json"))
        return str(folder)
    return make


@pytest.fixture(scope="session")
def pictures(tmp_path_factory):
    """A held-out frame pair as PNGs (64², gray) and a 20-frame GIF, as a user would pass them."""
    folder = tmp_path_factory.mktemp("pictures")
    video, _ = mav.MovingMNIST("test").sample(1, frames=20, generator=torch.Generator().manual_seed(3))
    frames = (video[0, 0] * 255).round().byte().numpy()
    iio.imwrite(folder / "first.png", frames[0])
    iio.imwrite(folder / "last.jpg", np.stack([frames[-1]] * 3, axis=-1))  # RGB JPEG: made gray
    iio.imwrite(folder / "clip.gif", frames, duration=125, loop=0)
    iio.imwrite(folder / "short.gif", frames[:5], duration=125, loop=0)
    iio.imwrite(folder / "photo.png", np.full((48, 80, 3), 200, np.uint8))  # bright, nothing like a frame
    (folder / "notes.png").write_text("not a picture")
    return folder


@pytest.fixture(scope="session")
def junk(tmp_path_factory):
    folder = tmp_path_factory.mktemp("junk")
    (folder / "a_file").write_text("x")
    (folder / "binary.txt").write_bytes(bytes(range(256)))
    return folder


@pytest.fixture(scope="session")
def shipped_judge():
    """The shipped judge (trained by python train.py --stage judge)."""
    return evaluate.load_judge(SHIPPED)


@pytest.fixture(scope="session")
def real_clips():
    video, labels = mav.MovingMNIST("test").sample(24, frames=16, generator=torch.Generator().manual_seed(5))
    return mav.area_downsample(video)[:, 0], labels


class PerfectDenoiser(torch.nn.Module):
    """The exact v for data that is always `target`: v = α·ε − σ·x with ε = (z − α·x)/σ."""

    def __init__(self, target):
        super().__init__()
        self.target = target

    def forward(self, z, logsnr, text, stride=None, cond=None):
        alpha, sigma = (s.view(-1, *[1] * (z.ndim - 1)) for s in mav.alpha_sigma(logsnr))
        return alpha * (z - alpha * self.target) / sigma - sigma * self.target


class GaussianDenoiser(torch.nn.Module):
    """The exact v for data x ~ N(mu, s²) per pixel: x̂ = (α·s²·z + σ²·mu) / (α²·s² + σ²)."""

    def __init__(self, mu, s):
        super().__init__()
        self.mu, self.s = mu, s

    def forward(self, z, logsnr, text, stride=None, cond=None):
        alpha, sigma = (s.view(-1, *[1] * (z.ndim - 1)) for s in mav.alpha_sigma(logsnr))
        x = (alpha * self.s ** 2 * z + sigma ** 2 * self.mu) / (alpha ** 2 * self.s ** 2 + sigma ** 2)
        return alpha * (z - alpha * x) / sigma - sigma * x


class PromptDenoiser(torch.nn.Module):
    """x̂ is the first number of the prompt's pooled embedding, whatever z: v = (α·z − x̂)/σ."""

    def forward(self, z, logsnr, text, stride=None, cond=None):
        alpha, sigma = (s.view(-1, *[1] * (z.ndim - 1)) for s in mav.alpha_sigma(logsnr))
        return (alpha * z - text.pooled[:, :1].view(-1, *[1] * (z.ndim - 1))) / sigma


class MakesNothing(torch.nn.Module):
    """A residual network whose x̂ is 0 everywhere: v = α·z/σ, so x̂ = α·z − σ·v = 0."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg

    def forward(self, z, logsnr, text, **conditioning):
        alpha, sigma = (mav._bcast(s, z) for s in mav.alpha_sigma(logsnr))
        return alpha * z / sigma


class RunsCode:
    """What a crafted pickle can hold: unpickling it would run a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def as_gray(frames: np.ndarray) -> np.ndarray:
    return frames[..., 0] if frames.ndim == 4 else frames


def ctrl_c_at_loss_call(monkeypatch, n: int):
    """Ctrl-C (SIGINT to this process) in the middle of the n-th call of the diffusion loss."""
    real_loss, calls = mav.diffusion_loss, []

    def loss(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            os.kill(os.getpid(), signal.SIGINT)
        return real_loss(*args, **kwargs)
    monkeypatch.setattr(mav, "diffusion_loss", loss)


SWITCHED_OFF = {"temporal_kernel": 0, "temporal_attention": False, "stride_embedding": False}


EVAL_KEYS = {"adherence", "frame_accuracy", "consistency", "switch_rate", "jump_rate", "vanish_rate", "motion",
             "motion_lag_ratio", "fd", "n"}


TRAIN_BENCH_KEYS = {"bench", "stage", "preset", "device", "batch", "samples_per_s", "frames_per_s", "step_s",
                    "peak_mem_gib", "flops_per_step", "achieved_tflops", "peak_tflops", "mfu", "plain_step_s",
                    "speedup_vs_plain", "compile", "precision"}


RESUME_RECIPES = {"image": ["batch=4"], "video": ["batch=1", "frames=4", "joint_images=2"],
                  "interp": ["batch=1", "frames=6"], "sr": ["batch=1", "frames=2"], "judge": ["batch=8"]}


# Every number a command takes, with the values a new user gets wrong: (where it goes, field or flag,
# the stage it is given for, the values that are used as documented rather than refused)
BAD_VALUES = ["nan", "inf", "-1", "0", "1e30", "99999999999", "abc"]


NUMBERS = [
    *[("recipe", name, "video" if name in ("joint_images", "scratch", "frames") else "image", ok)
      for name, ok in [("batch", ()), ("frames", ()), ("lr", ()), ("warmup", ("0",)), ("cooldown", ("0",)),
                       ("min_snr", ("0",)), ("ema_decay", ("0",)), ("joint_images", ("0",)), ("guidance", ("0",)),
                       ("scratch", ("0",))]],
    *[("model", name, "video", ("0",)) for name in train_setup.SWITCHES],
    *[("train", flag, "image", ok) for flag, ok in [("--steps", ()), ("--seed", ("0", "99999999999")),
                                                    ("--time-limit", ("1e30", "99999999999")),
                                                    ("--log-every", ("1e30", "99999999999")),
                                                    ("--save-every", ("1e30", "99999999999")),
                                                    ("--sample-every", ("0", "99999999999"))]],
]


def number_cases():
    for where, name, stage, ok in NUMBERS:
        for value in BAD_VALUES:
            if where == "train" and value == "1e30" and name not in ("--time-limit",):
                continue  # an int flag: argparse's own one-line refusal, the same as "abc"
            yield pytest.param(where, name, stage, value, value in ok, id=f"{where}-{name}-{value}")
        if where in ("recipe", "model"):
            yield pytest.param(where, name, stage, "twice", False, id=f"{where}-{name}-twice")


# --- the method: data, text, diffusion, layers, UNet, inflation, interpolation, SR, the judge ---------------

def test_held_out_digits_are_never_in_training():
    train_x, train_y = mav.load_digits("train")
    test_x, test_y = mav.load_digits("test")
    assert len(train_x) == 4500 and len(test_x) == 500
    all_x = np.loadtxt(mav.digits_path(), delimiter=",", dtype=np.uint8)[:, :-1].reshape(-1, 28, 28)
    assert np.array_equal(test_x, all_x[::10])
    assert set(np.unique(test_y)) == set(range(10))


def test_moving_mnist_shapes_range_and_frame_rate():
    data = mav.MovingMNIST("train")
    video, labels = data.sample(3, frames=16, generator=torch.Generator().manual_seed(0))
    assert video.shape == (3, 1, 16, 64, 64) and labels.shape == (3, 2)
    assert 0 <= video.min() and video.max() <= 1 and video.max() > 0.9
    assert mav.area_downsample(video).shape == (3, 1, 16, 32, 32)
    # the same motion at 5x the frame rate passes through the same positions every 5th frame
    fast, labels5 = data.sample(3, frames=76, stride=0.2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(labels, labels5)
    assert torch.allclose(fast[:, :, ::5], video, atol=1e-3)
    # the digits move, and they move a little between fast frames
    assert (video[:, :, 1:] - video[:, :, :-1]).abs().mean() > 2 * (fast[:, :, 1:] - fast[:, :, :-1]).abs().mean()


def test_digits_bounce_and_stay_inside_the_canvas():
    data = mav.MovingMNIST("train")
    video, _ = data.sample(16, frames=64, generator=torch.Generator().manual_seed(1))
    # MNIST digits have a blank 4-pixel margin, so a digit that stays inside never inks the outer
    # pixels of the canvas; one that flew off through a wall would (64 frames cross it several times)
    border = torch.cat([video[..., 0, :], video[..., -1, :], video[..., :, 0], video[..., :, -1]], dim=-1)
    assert border.max() < 0.05
    assert video[..., 4:-4, 4:-4].amax(dim=(-1, -2)).min() > 0.5  # both digits visible in every frame


def test_prompts_name_their_labels():
    prompts = mav.all_prompts()
    assert len(prompts) == mav.NUM_PROMPTS + 1 and prompts[mav.NULL_PROMPT] == ""
    labels = torch.tensor([[2, 4], [7, 7], [0, 9]])
    for _ in range(5):
        ids = mav.prompt_ids(labels)
        assert [sample.parse_prompt(prompts[i]) for i in ids] == [(2, 4), (7, 7), (0, 9)]
    assert {"2 and four", "two and 4", "two and four", "2 and 4"} <= set(prompts)


@pytest.mark.parametrize("text,pair", [("2 and four", (2, 4)), ("  Two   AND 4 ", (2, 4)), ("NINE and zero", (9, 0)),
                                       ("2 and 44", None), ("2 or 4", None), ("a cat", None), ("", None)])
def test_parse_prompt(text, pair):
    assert sample.parse_prompt(text) == pair


def test_text_cache_matches_the_encoder(cache):
    assert cache.text.tokens.shape[0] == mav.NUM_PROMPTS + 1 and cache.text.tokens.shape[2] == 384
    encoder = mav.TextEncoder()
    fresh = encoder(["two and 4"])
    cached = cache.embed(["two and 4"])
    assert torch.allclose(cached.pooled, fresh.pooled, atol=1e-2)  # the cache is stored in fp16
    # a prompt that is not cached goes through the encoder, padded to the cache's width
    mixed = cache.embed(["a dog and a cat running", "two and 4"])
    assert mixed.tokens.shape[0] == 2 and mixed.mask[0].sum() > mixed.mask[1].sum()
    assert torch.allclose(mixed.pooled[1], fresh.pooled[0], atol=1e-2)


def test_schedule_end_points():
    lam = mav.logsnr_schedule(torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(lam, torch.tensor([mav.LOGSNR_MAX, 0.0, mav.LOGSNR_MIN]), atol=1e-3)
    t = torch.linspace(0, 1, 101)
    assert (mav.logsnr_schedule(t).diff() < 0).all()
    alpha, sigma = mav.alpha_sigma(mav.logsnr_schedule(t))
    assert torch.allclose(alpha ** 2 + sigma ** 2, torch.ones_like(t), atol=1e-6)


def test_v_prediction_recovers_x_and_eps():
    torch.manual_seed(0)
    x, eps = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    alpha, sigma = (s.view(-1, 1, 1, 1) for s in mav.alpha_sigma(torch.tensor([-5.0, 0.0, 3.0, 10.0])))
    z = mav.add_noise(x, eps, torch.tensor([-5.0, 0.0, 3.0, 10.0]))
    assert torch.allclose(z, alpha * x + sigma * eps)
    v = mav.v_target(x, eps, alpha, sigma)
    assert torch.allclose(mav.v_to_x0(z, v, alpha, sigma), x, atol=1e-5)
    assert torch.allclose(sigma * z + alpha * v, eps, atol=1e-5)  # ε̂ = σ·z + α·v̂, as the sampler uses


def test_guidance_moves_each_sample_from_its_empty_prompt_through_its_prompt():
    """guided_v asks the model once for both halves (the prompts, then their empty prompts) and takes each
    sample's v from its own unconditional prediction through its conditional one: w = 0 is the empty prompt's,
    w = 3 three times as far; w = 1 is the prompt's alone, in one call of b rows."""
    calls = []

    def model(z, logsnr, text, **conditioning):  # v = z + the row's text value
        calls.append(len(z))
        return z + text.pooled[:, :1].view(-1, 1, 1, 1)

    z = torch.zeros(2, 1, 2, 2)
    pooled = torch.tensor([[1.0], [2.0], [0.0], [0.5]])  # prompts 1 and 2, then their empty prompts 0 and 0.5
    text = mav.Text(torch.zeros(4, 1, 1), torch.ones(4, 1, dtype=torch.bool), pooled)
    v = lambda w, t=text: mav.guided_v(model, z, torch.tensor(0.0), t, w, {})[:, 0, 0, 0].tolist()
    assert v(0.0) == [0.0, 0.5] and calls == [4]
    assert v(3.0) == [3.0, 5.0]  # 0 + 3·(1 − 0), 0.5 + 3·(2 − 0.5)
    assert v(1.0, text[:2]) == [1.0, 2.0] and calls[-1] == 2


@pytest.mark.parametrize("sampler,steps", [("ddim", 8), ("ancestral", 8), ("dpm++", 8), ("dpm++", 20)])
def test_samplers_reach_the_data(cache, sampler, steps):
    target = torch.linspace(-0.9, 0.9, 32 * 32).view(1, 1, 32, 32)
    text, null = cache.embed(["1 and 2"] * 2), cache.embed([""] * 2)
    x = mav.sample(PerfectDenoiser(target), (2, 1, 32, 32), text, null, steps=steps, sampler=sampler,
                   guidance=3.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x, target.expand(2, -1, -1, -1), atol=1e-4)


def test_dpm_solver_follows_the_ode_closer_than_ddim_in_few_steps(cache):
    """Both solve the same ODE from the same noise; the second-order one lands far nearer to its solution."""
    torch.manual_seed(0)
    model = GaussianDenoiser((torch.rand(1, 1, 4, 4) - 0.5) * 0.5, 0.5)
    text, null = cache.embed(["1 and 2"] * 8), cache.embed([""] * 8)
    noise = torch.randn(8, 1, 4, 4)
    run = lambda sampler, steps: mav.sample(model, (8, 1, 4, 4), text, null, steps=steps, sampler=sampler,
                                            guidance=1.0, noise=noise)
    truth = run("ddim", 4000)
    assert (run("dpm++", 4000) - truth).abs().max() < 1e-3                  # the same solution
    for steps in (8, 12, 20):
        ddim, dpm = ((run(s, steps) - truth).norm() for s in ("ddim", "dpm++"))
        assert dpm < 0.5 * ddim, (steps, dpm, ddim)


def test_the_ode_samplers_carry_noise_to_where_the_ode_takes_it():
    """For data x ~ N(μ, s²) the probability-flow ODE carries z_1 = ε to x = μ + s·ε exactly (it keeps each
    sample's standardised place). DDIM with many steps and DPM-Solver++ with the default's land there: a wrong
    coefficient in either update does not (the perfect denoiser above would hide it)."""
    mu, s = 0.1, 0.2
    model, text = GaussianDenoiser(torch.tensor(mu), s), fake_text(4)
    noise = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    truth = mu + s * noise
    for sampler, steps, tol in (("ddim", 400, 0.01), ("dpm++", mav.STEPS["video"], 0.02)):
        x = mav.sample(model, noise.shape, text, text, steps=steps, sampler=sampler, guidance=1.0, noise=noise)
        assert (x - truth).abs().max() < tol, (sampler, (x - truth).abs().max())


def test_the_ancestral_sampler_draws_from_the_data_distribution():
    """Its steps add fresh noise, so it lands anywhere; but its samples have the data's mean and spread."""
    mu, s = 0.1, 0.2
    model, text = GaussianDenoiser(torch.tensor(mu), s), fake_text(4)
    x = mav.sample(model, (4, 1, 32, 32), text, text, steps=100, sampler="ancestral", guidance=1.0,
                   generator=torch.Generator().manual_seed(0))
    assert abs(x.mean().item() - mu) < 0.03 and abs(x.std().item() - s) < 0.02, (x.mean(), x.std())


@pytest.mark.parametrize("sampler", list(mav.SAMPLERS))
def test_guidance_pushes_from_the_empty_prompt_towards_the_prompt(sampler):
    """x̂ = 0.2 for the prompt, 0 for the empty one: guided, x̂_u + w·(x̂_c − x̂_u) = 0.2·w (with the halves
    swapped it would be 0.2 − 0.2·w); unguided (w = 1), the prompt's 0.2."""
    text, null = fake_text(2, 0.2), fake_text(2, 0.0)
    run = lambda w: mav.sample(PromptDenoiser(), (2, 1, 4, 4), text, null, steps=4, sampler=sampler, guidance=w,
                               generator=torch.Generator().manual_seed(0))
    assert torch.allclose(run(3.0), torch.full((2, 1, 4, 4), 0.6), atol=1e-4)
    assert torch.allclose(run(1.0), torch.full((2, 1, 4, 4), 0.2), atol=1e-4)


def test_unet_shapes_on_images_and_videos(cache):
    image_model, video_model = mav.UNet(TINY), mav.inflate(mav.UNet(TINY).state_dict(), TINY)
    text = cache(torch.tensor([5, 17]))
    logsnr = torch.tensor([0.0, 3.0])
    assert image_model(torch.randn(2, 1, 32, 32), logsnr, text).shape == (2, 1, 32, 32)
    assert video_model(torch.randn(2, 1, 16, 32, 32), logsnr, text, stride=torch.ones(2)).shape == (2, 1, 16, 32, 32)
    assert video_model(torch.randn(2, 1, 32, 32), logsnr, text).shape == (2, 1, 32, 32)  # joint image batches
    temporal = mav.temporal_names(TINY)
    assert temporal and not temporal & set(image_model.state_dict()) and temporal <= set(video_model.state_dict())
    assert all("temporal" in name or name.startswith("stride_embed") for name in temporal)


def test_temporal_conv_starts_as_identity():
    torch.manual_seed(0)
    conv = mav.Pseudo3DConv(4, 6, temporal=3)
    x = torch.randn(2 * 5, 4, 8, 8)  # (b f) c h w
    assert torch.allclose(conv(x, frames=5), conv.spatial(x), atol=1e-6)
    with torch.no_grad():
        conv.temporal.weight.add_(0.1)  # a trained temporal conv does mix frames
    assert not torch.allclose(conv(x, frames=5), conv.spatial(x), atol=1e-3)


@pytest.mark.parametrize("taps", [3, 1, 5])
def test_fused_temporal_conv_is_the_papers_conv1d_over_each_pixels_frames(monkeypatch, taps):
    """The transpose-free temporal conv equals the paper's rearrange -> Conv1d -> rearrange, values and gradients,
    and the whole model gives the same on either path."""
    torch.manual_seed(0)
    conv = mav.Pseudo3DConv(4, 6, temporal=taps)
    with torch.no_grad():
        conv.temporal.weight.normal_(0, 0.3)
        conv.temporal.bias.normal_(0, 0.3)
    x = torch.randn(2 * 5, 6, 3, 4, requires_grad=True)  # (b f) c h w
    plain, fast = conv.temporal_conv(x, 5), conv.temporal_conv_fused(x, 5)
    assert torch.allclose(fast, plain, atol=1e-5) and (plain - x).abs().max() > 0.1  # it does mix frames
    params = [x, conv.temporal.weight, conv.temporal.bias]
    grads = [torch.autograd.grad(y.square().sum(), params) for y in (plain, fast)]
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-4)
    model = randomized(mav.UNet(mav.replace(TINY, temporal=True, temporal_kernel=taps))).eval()
    video, logsnr, text = torch.randn(2, 1, 5, 32, 32), torch.zeros(2), fake_text(2)
    with torch.no_grad():
        fused = model(video, logsnr, text, stride=torch.ones(2))
        monkeypatch.setattr(mav.Pseudo3DConv, "fused", False)
        paper = model(video, logsnr, text, stride=torch.ones(2))
    assert torch.allclose(fused, paper, atol=1e-4) and fused.abs().mean() > 0.01


def test_temporal_attention_starts_as_identity(cache):
    torch.manual_seed(0)
    spatial = mav.Pseudo3DAttention(32, 384, 16, temporal=False)
    full = mav.Pseudo3DAttention(32, 384, 16, temporal=True)
    full.load_state_dict(spatial.state_dict(), strict=False)
    text = cache(torch.tensor([3] * 10))
    x = torch.randn(2 * 5, 32, 4, 4)
    assert torch.allclose(full(x, text.tokens, text.mask, frames=5), spatial(x, text.tokens, text.mask), atol=1e-6)
    torch.nn.init.normal_(full.temporal_attn.to_out.weight)
    assert not torch.allclose(full(x, text.tokens, text.mask, frames=5), spatial(x, text.tokens, text.mask),
                              atol=1e-3)


def test_inflation_invariant(cache):
    """Right after inflation the video model equals the image model applied frame by frame."""
    image_model = randomized(mav.UNet(TINY)).eval()
    video_model = mav.inflate(image_model.state_dict(), TINY).eval()
    new = set(video_model.state_dict()) - set(image_model.state_dict())
    assert new == mav.temporal_names(TINY)
    torch.manual_seed(2)
    video = torch.randn(2, 1, 6, 32, 32)
    logsnr, text = torch.tensor([-3.0, 7.0]), cache(torch.tensor([12, 301]))
    with torch.no_grad():
        out = video_model(video, logsnr, text, stride=torch.tensor([1.0, 2.0]))
        frames = torch.stack([image_model(video[:, :, i], logsnr, text) for i in range(6)], dim=2)
    assert frames.abs().mean() > 0.01  # a real signal, not zeros on both sides
    assert (out - frames).abs().max() < 1e-5


def test_the_image_expert_mixes_in_the_image_model_frame_by_frame_at_low_noise_only(cache):
    """§10: above t_e the expert is the video model; at t <= t_e its v is (1 − β)·video + β·image, the image
    model applied to every frame on its own (the video model here trained away from it: random temporal
    weights)."""
    image_model = randomized(mav.UNet(TINY)).eval()
    video_model = mav.inflate(image_model.state_dict(), TINY).eval()
    temporal = mav.temporal_names(TINY)
    with torch.no_grad():
        for name, p in video_model.named_parameters():
            if name in temporal:
                p.normal_(0, 0.1)
    expert = mav.ImageExpert(video_model, image_model, image_expert=0.25, until=0.5)
    torch.manual_seed(2)
    video, text, stride = torch.randn(2, 1, 6, 32, 32), cache(torch.tensor([12, 301])), torch.ones(2)
    with torch.no_grad():
        for t in (0.9, 0.6, 0.4, 0.1):
            logsnr = mav.logsnr_schedule(torch.tensor(t)).expand(2)
            v = video_model(video, logsnr, text, stride=stride)
            frames = torch.stack([image_model(video[:, :, i], logsnr, text) for i in range(6)], dim=2)
            assert (v - frames).abs().mean() > 0.01  # the two models differ: the test can tell them apart
            want = v if t > 0.5 else 0.75 * v + 0.25 * frames
            assert (expert(video, logsnr, text, stride=stride) - want).abs().max() < 1e-5, t


def test_the_image_expert_mixes_into_the_masked_networks_made_frames_only(cache):
    """§10 in the masked modes (animate, between, extend): on the frames the network makes, at t <= t_e, its v
    is (1 − β)·v_masked + β·v_image, the image model reading the frames themselves (the noised difference
    plus α·guess) and its v taken back into the difference's terms (+ σ·guess); the given frames keep the
    masked network's own v, and above t_e nothing is mixed."""
    image_model = randomized(mav.UNet(TINY)).eval()
    masked = randomized(mav.UNet(mav.stage_config("interp", "tiny", mav.replace(TINY, temporal=True)))).eval()
    expert = mav.ImageExpert(masked, image_model, image_expert=0.25, until=0.5)
    torch.manual_seed(3)
    known, z = torch.rand(2, 1, 6, 32, 32) * 2 - 1, torch.randn(2, 1, 6, 32, 32)
    mask = torch.tensor([True, False, False, False, False, True]).expand(2, 6)  # between: the two ends given
    cond, guess = mav.masked_conditioning(known, mask)
    text, kw = cache(torch.tensor([12, 301])), dict(stride=torch.ones(2), cond=cond)
    with torch.no_grad():
        for t in (0.9, 0.3):
            logsnr = mav.logsnr_schedule(torch.tensor(t)).expand(2)
            alpha, sigma = mav.alpha_sigma(logsnr[0])
            v = masked(z, logsnr, text, **kw)
            frames = torch.stack([image_model(z[:, :, i] + alpha * guess[:, :, i], logsnr, text) for i in range(6)], 2)
            mixed = 0.75 * v + 0.25 * (frames + sigma * guess)
            assert (v - mixed).abs().mean() > 0.01  # the two differ: the test can tell them apart
            got = expert(z, logsnr, text, **kw)
            assert (got[:, :, [0, 5]] - v[:, :, [0, 5]]).abs().max() < 1e-5, t      # the given frames: v_masked
            want = v if t > 0.5 else mixed
            assert (got[:, :, 1:5] - want[:, :, 1:5]).abs().max() < 1e-5, t         # the made frames


def test_a_variation_samples_from_the_default_strength(cascade, monkeypatch):
    """Without --strength (or strength=), a variation starts at t = mav.STRENGTH, the strength the table chose
    (docs/ABLATIONS.md: every clip with the prompt's digits, the input's layout kept)."""
    run, seen, real = pipeline.Pipeline.load(str(cascade), stages=["video"]), [], mav.sample
    monkeypatch.setattr(mav, "sample", lambda *a, **kw: (seen.append(kw.get("strength")), real(*a, **kw))[1])
    run("2 and four", steps=2, video=torch.zeros(1, 1, mav.FRAMES, 32, 32))
    assert seen == [mav.STRENGTH] and 0.6 < mav.STRENGTH < 1
    clip = os.path.join(HERE, "docs", "clip.gif")
    assert sample.parse_args(["--prompt", "3 and 7", "--variation", clip]).strength == mav.STRENGTH


def test_the_picture_modes_start_from_pure_noise_and_interpolation_from_its_guess(cache):
    """Animate and between (mav.PICTURE_START) take the video model's steps from t = 1, pure noise: from their
    guess (the picture held still, a cross-fade) noised to 0.8 the digits hardly moved. Interpolation, the cascade's
    one-step ↑F, still starts from its guess, at mav.RESIDUAL_START."""
    class Records(MakesNothing):
        def forward(self, z, logsnr, text, **conditioning):
            seen.append(float(logsnr[0]))
            return super().forward(z, logsnr, text, **conditioning)
    masked = Records(mav.stage_config("interp", "tiny", mav.replace(TINY, temporal=True)))
    text, first = cache(torch.tensor([12])), torch.zeros(1, 1, 32, 32)
    for make in (lambda: mav.animate(masked, first, text, text, frames=6, steps=4, guidance=1.0),
                 lambda: mav.animate(masked, first, text, text, frames=6, last=first, steps=4, guidance=1.0)):
        seen = []
        make()
        assert mav.PICTURE_START == 1.0 and len(seen) == 4
        assert seen[0] == pytest.approx(float(mav.logsnr_schedule(torch.tensor(1.0))))
    seen = []
    mav.interpolate(masked, torch.zeros(1, 1, 2, 32, 32), text, text, steps=1)
    assert seen == [pytest.approx(float(mav.logsnr_schedule(torch.tensor(mav.RESIDUAL_START))))]


def test_the_cascade_animates_with_the_image_expert_and_keeps_the_given_frames(cascade):
    """Animate and between with the cascade's image model as the masked network's expert: the first (and last)
    frame come back as given, the made frames differ from the masked network's alone, image_expert=0 is it."""
    run = pipeline.Pipeline.load(str(cascade), stages=["video"])
    assert {"interp", "image"} <= set(run.models)
    first, last = torch.rand(1, 1, 32, 32) * 2 - 1, torch.rand(1, 1, 32, 32) * 2 - 1
    make = lambda **kw: run("2 and four", seed=3, steps=4, frames=8, first=first, **kw)[0]
    for ends in ({}, {"last": last}):
        mixed, alone = make(**ends), make(image_expert=0, **ends)
        assert torch.allclose(mixed[:, 0], mav.to_pixels(first[:, 0]), atol=1e-6)
        if ends:
            assert torch.allclose(mixed[:, -1], mav.to_pixels(last[:, 0]), atol=1e-6)
        assert (mixed - alone).abs().mean() > 1e-4


def test_the_cascade_takes_the_image_model_as_expert_unless_told_not_to(cascade):
    """A folder with an image model: Cascade.load holds it, and it changes the video model's clip; image_expert=0 (or
    no image model) samples the video model alone, as the paper does."""
    with_image = pipeline.Pipeline.load(str(cascade), stages=["video"])
    alone = mav.Cascade({"video": with_image.models["video"]}, with_image.cache, ["video"], with_image.guidance)
    assert "image" in with_image.models
    make = lambda run, **kw: run("2 and four", seed=3, steps=3, **kw)[0]
    paper, mixed = make(alone), make(with_image)
    assert torch.equal(make(with_image, image_expert=0), paper) and torch.equal(make(alone, image_expert=0.5), paper)
    assert (mixed - paper).abs().mean() > 1e-4  # small: the tiny video model is 4 steps from its image model


@pytest.mark.parametrize("taps", [0, 1, 3, 5])
def test_a_temporal_conv_sees_as_many_frames_as_its_taps(taps):
    """Frame 3 of the input reaches frames 3 ± taps // 2 of the output, and no others (0 taps: no temporal conv)."""
    torch.manual_seed(0)
    conv = mav.Pseudo3DConv(4, 6, temporal=taps)
    assert (conv.temporal is None) == (taps == 0)
    if taps:
        with torch.no_grad():
            conv.temporal.weight.normal_(0, 0.3)
    x = torch.randn(8, 4, 5, 5)  # one clip of 8 frames
    nudged = x.clone()
    nudged[3] += 1.0
    with torch.no_grad():
        changed = (conv(nudged, frames=8) - conv(x, frames=8)).abs().amax(dim=(1, 2, 3)) > 1e-6
    assert changed.nonzero().flatten().tolist() == list(range(3 - taps // 2, 3 + taps // 2 + 1)) if taps else [3]


@pytest.mark.parametrize("switch", list(SWITCHED_OFF))
def test_a_switched_off_temporal_part_has_no_weights_and_inflation_stays_exact(cache, switch):
    """Each ablation switch removes exactly its part (no temporal conv, no temporal attention, no stride
    embedding), and the video model inflated with it still equals the image model frame by frame."""
    cfg = mav.replace(TINY, **{switch: SWITCHED_OFF[switch]})
    full, ablated = mav.temporal_names(TINY), mav.temporal_names(cfg)
    part = {"temporal_kernel": ".temporal.", "temporal_attention": "temporal_attn", "stride_embedding": "stride_embed"}
    assert ablated == {name for name in full if part[switch] not in name} and ablated < full
    image_model = randomized(mav.UNet(TINY)).eval()
    video_model = mav.inflate(image_model.state_dict(), cfg).eval()
    assert set(video_model.state_dict()) == set(image_model.state_dict()) | ablated
    video, logsnr, text = torch.randn(2, 1, 5, 32, 32), torch.tensor([-3.0, 7.0]), cache(torch.tensor([12, 301]))
    with torch.no_grad():
        out = video_model(video, logsnr, text, stride=torch.tensor([1.0, 2.0]))
        frames = torch.stack([image_model(video[:, :, i], logsnr, text) for i in range(5)], dim=2)
    assert (out - frames).abs().max() < 1e-5 and frames.abs().mean() > 0.01


def test_without_temporal_conv_and_attention_the_video_model_sees_frames_apart():
    """With both temporal parts switched off, no frame reaches another: a video model in name only (the
    lower end of the ablation table), while the full model's frames do depend on each other."""
    video = torch.randn(1, 1, 6, 32, 32)
    nudged = video.clone()
    nudged[:, :, 2] += 1.0
    for cfg, mixes in [(mav.replace(TINY, temporal=True, temporal_kernel=0, temporal_attention=False), False),
                       (mav.replace(TINY, temporal=True), True)]:
        torch.manual_seed(0)
        model = mav.UNet(cfg).eval()
        with torch.no_grad():
            for p in model.parameters():  # every weight, the temporal ones too (randomized() keeps those)
                p.normal_(0, 0.1)
            delta = (model(nudged, torch.zeros(1), fake_text(1)) - model(video, torch.zeros(1), fake_text(1))).abs()
        others = delta[:, :, [0, 1, 3, 4, 5]].max()
        assert delta[:, :, 2].max() > 1e-3 and (others > 1e-4) == mixes


def test_checkpoint_round_trip(tmp_path):
    model = randomized(mav.UNet(TINY))
    pipeline.save_checkpoint(str(tmp_path), "image", model, {"text_encoder": mav.DEFAULT_TEXT_ENCODER, "step": 7,
                                                           "preset": "tiny"})
    loaded, meta = pipeline.load_checkpoint(str(tmp_path), "image")
    assert meta["step"] == 7 and loaded.cfg == model.cfg
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a.half().float(), b), name  # stored as fp16
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # written atomically


def test_interp_network_starts_as_the_video_model(cache):
    """Inflation again: the new known-frames and mask channels start at zero."""
    video_model = randomized(mav.inflate(mav.UNet(TINY).state_dict(), TINY)).eval()
    interp = mav.inflate(video_model.state_dict(), mav.stage_config("interp", "tiny", video_model.cfg)).eval()
    torch.manual_seed(0)
    x, text, stride = torch.randn(2, 1, 6, 32, 32), cache(torch.tensor([4, 9])), torch.ones(2)
    cond, guess = mav.masked_conditioning(torch.randn(2, 1, 6, 32, 32), torch.rand(2, 6) < 0.5)
    assert torch.equal(cond[:, 2:], guess)
    assert cond.shape[1] == interp.cfg.cond_channels == 3
    with torch.no_grad():
        expected = video_model(x, torch.zeros(2), text, stride=stride)
        assert expected.abs().mean() > 0.01
        assert (interp(x, torch.zeros(2), text, stride=stride, cond=cond) - expected).abs().max() < 1e-5
    bad = dict(video_model.state_dict())
    bad["conv_in.spatial.weight"] = bad["conv_in.spatial.weight"][:, :, :2]  # a kernel of another size
    with pytest.raises(ValueError, match="mismatched"):
        mav.inflate(bad, interp.cfg)


def test_training_masks():
    mask, stride = mav.training_masks(256, 16, "cpu", generator=torch.Generator().manual_seed(0))
    interp = stride < 1
    assert 0.35 < interp.float().mean() < 0.65 and torch.allclose(stride[interp], torch.tensor(0.2))
    assert (mask[interp] == (torch.arange(16) % 5 == 0)).all()
    ends = (mask == ((torch.arange(16) == 0) | (torch.arange(16) == 15))).all(1) & ~interp   # --between
    first_k = ~interp & ~ends                                                                # --extend, --image
    assert 0.15 < ends.float().mean() < 0.35 and 0.15 < first_k.float().mean() < 0.35
    k = mask[first_k].sum(1)
    assert (k >= 1).all() and (k < 16).all()
    assert all(row[:n].all() and not row[n:].any() for row, n in zip(mask[first_k], k))


def test_interpolate_and_extend_keep_the_known_frames(cache):
    model = randomized(mav.UNet(mav.stage_config("interp", "tiny", mav.replace(TINY, temporal=True)))).eval()
    clip = torch.rand(2, 1, 16, 32, 32) * 2 - 1
    text, null = cache(torch.tensor([1, 2])), cache(torch.tensor([mav.NULL_PROMPT] * 2))
    out = mav.interpolate(model, clip, text, null, steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 76, 32, 32) and torch.equal(out[:, :, ::5], clip)
    short = mav.interpolate(model, clip[:, :, :5], text, null, steps=2)  # 4 gaps: a window of 3, then of 1
    assert short.shape == (2, 1, 21, 32, 32) and torch.equal(short[:, :, ::5], clip[:, :, :5])
    longer = mav.extend(model, clip, 11, text, null, steps=2)
    assert longer.shape == (2, 1, 27, 32, 32) and torch.equal(longer[:, :, :16], clip)


def test_linear_blend_and_psnr():
    clip = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)], dim=1)[None]  # b c f h w, f = 2
    blend = evaluate.linear_blend(clip)
    assert blend.shape[2] == 6
    assert torch.allclose(blend[0, 0, :, 0, 0], torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]))
    assert evaluate.psnr(torch.zeros(1, 4), torch.full((1, 4), 0.1)).item() == pytest.approx(20.0)


def test_temporal_fill_is_the_linear_blend_for_any_mask():
    clip = torch.randn(3, 1, 16, 4, 4)
    index = torch.arange(16)
    every_5th = (index % 5 == 0).expand(3, 16)
    assert torch.allclose(mav.temporal_fill(clip, every_5th), evaluate.linear_blend(clip[:, :, ::5]))
    first_3 = (index < 3).expand(3, 16)                                # extrapolation: the last known frame held
    held = mav.temporal_fill(clip, first_3)
    assert torch.equal(held[:, :, :3], clip[:, :, :3]) and torch.allclose(held[:, :, 3:], clip[:, :, 2:3].expand_as(held[:, :, 3:]))
    ends = ((index == 0) | (index == 15)).expand(3, 16)                # in-between: a cross-fade of the two
    w = (index / 15).view(1, 1, 16, 1, 1)
    assert torch.allclose(mav.temporal_fill(clip, ends), clip[:, :, :1] * (1 - w) + clip[:, :, 15:] * w)


@pytest.mark.parametrize("framewise", [False, True])
def test_residual_networks_add_to_their_guess(cache, framewise):
    """A residual network that makes nothing returns the simple guess: bicubic (SR), the linear blend (interp)."""
    low = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    text, null = cache(torch.tensor([1, 2])), cache(torch.tensor([mav.NULL_PROMPT] * 2))
    kw = dict(steps=3, guidance=1.0, generator=torch.Generator().manual_seed(0))
    sr = MakesNothing(mav.stage_config("sr", "tiny"))
    bicubic = torch.stack([F.interpolate(low[:, :, i], scale_factor=2, mode="bicubic", align_corners=False)
                           for i in range(low.shape[2])], dim=2).clamp(-1, 1)
    assert torch.allclose(mav.super_resolve(sr, low, text, null, framewise=framewise, **kw), bicubic, atol=1e-5)
    interp = MakesNothing(mav.stage_config("interp", "tiny", mav.replace(TINY, temporal=True)))
    out = mav.interpolate(interp, low, text, null, **kw)
    assert torch.allclose(out, evaluate.linear_blend(low), atol=1e-5)


def test_super_resolution_shapes_and_shared_noise(cache):
    cfg = mav.replace(TINY, temporal=True, cond_channels=1, noise_cond=True)
    model = randomized(mav.UNet(cfg)).eval()
    still = torch.rand(1, 1, 1, 32, 32).expand(1, 1, 4, 32, 32) * 2 - 1  # the same frame 4 times
    text, null = cache(torch.tensor([7])), cache(torch.tensor([mav.NULL_PROMPT]))
    kw = dict(steps=3, guidance=1.0)
    spacetime = mav.super_resolve(model, still, text, null, generator=torch.Generator().manual_seed(0), **kw)
    framewise = mav.super_resolve(model, still, text, null, framewise=True,
                                  generator=torch.Generator().manual_seed(0), **kw)
    assert spacetime.shape == framewise.shape == (1, 1, 4, 64, 64)
    # one shared noise and no temporal layers: identical inputs give identical frames
    assert (framewise - framewise[:, :, :1]).abs().max() < 1e-4
    assert (spacetime - spacetime[:, :, :1]).abs().max() > 1e-2  # independent noise per frame


# --- training, and the hardware it runs on ------------------------------------------------------------------

def test_precision_auto_takes_bf16_only_where_it_is_native(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(cli, "cpu_has_native_bf16", lambda: True)
    assert cli.choose_precision(cpu) == ("bf16", "this CPU has native bf16")
    monkeypatch.setattr(cli, "cpu_has_native_bf16", lambda: False)
    assert cli.choose_precision(cpu) == ("fp32", "this CPU has no native bf16")
    precision, why = cli.choose_precision(cpu, "bf16")  # asked for: kept, with a warning
    assert precision == "bf16" and "warning" in why and "slower" in why
    assert cli.choose_precision(cpu, "fp32") == ("fp32", "requested")
    precision, why = cli.choose_precision(cpu, "fp16")  # it works (the fp16 tests run it), slowly
    assert precision == "fp16" and "warning" in why
    assert cli.choose_precision(torch.device("mps"))[0] == "fp32"


@pytest.mark.parametrize("capability,expected", [((6, 0), "fp16"), ((7, 0), "fp16"), ((7, 5), "fp16"),
                                                 ((8, 0), "bf16"), ((8, 9), "bf16"), ((9, 0), "bf16")])
def test_precision_auto_on_a_gpu_takes_fp16_where_bf16_would_be_emulated(monkeypatch, capability, expected):
    """P100, V100, the T4 of free notebooks: torch.cuda.is_bf16_supported() says yes (emulated); auto says fp16."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    precision, why = cli.choose_precision(torch.device("cuda"))
    assert precision == expected and ("gradient scaler" in why) == (expected == "fp16")
    assert cli.choose_precision(torch.device("cuda"), "fp16") == ("fp16", "requested")


def test_fp16_training_scales_its_loss_and_resumes_bit_exactly(cache_dir, tmp_path):
    """fp16 autocast with a gradient scaler, on the CPU: finite losses, a scaler that has stepped (its state
    saved with the run), and 2 + 1 resumed steps equal to 3 in one go, scaler included."""
    for name in ("once", "twice"):
        shutil.copytree(cache_dir, tmp_path / name)
    run = lambda name, steps, *extra: tiny_image_run(tmp_path / name, steps, "--precision", "fp16", *extra)
    run("once", 3)
    run("twice", 2)
    run("twice", 3, "--resume")
    a, b = (torch.load(tmp_path / name / "image-train.pt", weights_only=True) for name in ("once", "twice"))
    assert a["scaler"]["scale"] > 0 and a["scaler"]["_growth_tracker"] > 0  # it stepped, and counts steps
    assert a["scaler"] == b["scaler"] and a["skipped"] == b["skipped"]
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    losses = [float(line.split()[3]) for line in (tmp_path / "once" / "image.log").read_text().splitlines()]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert pipeline.checkpoint_meta(str(tmp_path / "once"), "image")["precision"] == "fp16"


def test_cpu_bf16_detection(monkeypatch):
    """bf16 is native where the CPU has AVX512-BF16 or AMX and oneDNN may use them (ONEDNN_MAX_CPU_ISA=AVX2 says
    it may not): each combination, mocked, against the answer it must give."""
    table = {(False, False, True): False, (True, False, True): True, (False, True, True): True,
             (True, True, True): True, (True, True, False): False}   # avx512_bf16, amx, oneDNN allowed -> native
    for (avx512_bf16, amx, allowed), native in table.items():
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda v=allowed: v)
        assert cli.cpu_has_native_bf16() == native, (avx512_bf16, amx, allowed)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")  # a torch without the private helper: fp32
    assert cli.cpu_has_native_bf16() is False


def test_device_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    for cuda, mps, expected in ((True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda mps=mps: mps)
        assert cli.choose_device("auto").type == expected
    assert cli.choose_device("cpu").type == "cpu"


def test_tiny_model_loss_falls_on_a_fixed_batch(cache):
    torch.manual_seed(0)
    model = mav.UNet(TINY)
    optimizer = train.adamw(model, lr=2e-3)
    video, labels = mav.MovingMNIST("train").sample(16, frames=1, generator=torch.Generator().manual_seed(0))
    x, text = mav.to_model(mav.area_downsample(video))[:, :, 0], cache(mav.prompt_ids(labels))
    losses = []
    for _ in range(30):  # the same x, t and noise every step
        loss = mav.diffusion_loss(model, x, text, generator=torch.Generator().manual_seed(1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_min_snr_weights_each_example_by_its_capped_snr():
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    predict_zero = lambda z, logsnr, text, **kw: torch.zeros_like(z)
    g = torch.Generator().manual_seed(3)  # the draws diffusion_loss makes, in its order: t, then ε
    logsnr = mav.logsnr_schedule(torch.rand(6, generator=g))
    eps = torch.randn(x.shape, generator=g)
    alpha, sigma = (s.view(-1, 1, 1, 1) for s in mav.alpha_sigma(logsnr))
    per_example = (mav.v_target(x, eps, alpha, sigma) ** 2).mean((1, 2, 3))
    snr = logsnr.exp()
    weighted = mav.diffusion_loss(predict_zero, x, None, generator=torch.Generator().manual_seed(3), min_snr=5.0)
    plain = mav.diffusion_loss(predict_zero, x, None, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(weighted, (per_example * snr.clamp(max=5.0) / (snr + 1)).mean())
    assert torch.allclose(plain, per_example.mean()) and not torch.allclose(weighted, plain)


def test_train_writes_checkpoints_and_logs(trained):
    for name in ("image.safetensors", "image.json", "image.log", "image-train.pt",
                 "video.safetensors", "video.json", "video.log"):
        assert (trained / name).exists(), name
    model, meta = pipeline.load_checkpoint(str(trained), "video")
    assert model.cfg.temporal and meta["step"] == 4 and meta["image_step"] == 20 and meta["preset"] == "tiny"
    assert meta["text_encoder"] == mav.DEFAULT_TEXT_ENCODER
    assert len((trained / "image.log").read_text().splitlines()) == 2  # steps 10 and 20


def test_an_ablated_network_trains_resumes_and_loads_as_built(trained, tmp_path):
    """--model's switches reach the network, its checkpoint and its resume file: the run goes on without
    the flag and its model loads as it was built."""
    folder = tmp_path / "kernel_1"
    shutil.copytree(trained, folder)
    tiny_video_run(folder, "--overwrite", "--model", "temporal_kernel=1", "temporal_attention=0", "--save-every", "1")
    tiny_video_run(folder, "--resume", "--steps", "3")
    model, meta = pipeline.load_checkpoint(str(folder), "video")
    assert meta["step"] == 3 and model.cfg.temporal_kernel == 1 and not model.cfg.temporal_attention
    assert not any("temporal_attn" in name for name in model.state_dict())
    assert model.conv_in.temporal.kernel_size == (1,)


def test_a_scratch_video_model_loads_no_image_weights(trained, tmp_path):
    """scratch=1 starts from fresh weights, with or without an image model in the folder; inflation starts
    from the image model's (after 2 steps at a warm-up learning rate they are still nearly those)."""
    image = pipeline.load_checkpoint(str(trained), "image")[0].state_dict()["conv_in.spatial.weight"]
    distance = lambda folder: (pipeline.load_checkpoint(str(folder), "video")[0].state_dict()["conv_in.spatial.weight"]
                               - image).abs().max().item()
    scratch, alone = tmp_path / "scratch", tmp_path / "alone"
    shutil.copytree(trained, scratch)
    alone.mkdir()
    for name in os.listdir(trained):
        if name.startswith("text-"):
            shutil.copy(trained / name, alone)
    tiny_video_run(scratch, "--overwrite", "--recipe", "scratch=1")
    tiny_video_run(alone, "--recipe", "scratch=1")
    assert distance(trained) < 1e-3 < distance(scratch)  # trained: its video model was inflated, 4 steps ago
    meta = pipeline.checkpoint_meta(str(alone), "video")
    assert meta["recipe"]["scratch"] and "image_step" not in meta and not (alone / "image.safetensors").exists()


def test_ctrl_c_saves_and_exits_cleanly(cache_dir, tmp_path):
    out = tmp_path / "sigint"
    shutil.copytree(cache_dir, out)
    proc = subprocess.Popen([sys.executable, "train.py", "--stage", "image", "--preset", "tiny", "--out", str(out),
                             "--steps", "100000", "--recipe", "batch=4", "--sample-every", "0", "--log-every", "1"],
                            cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "image.log").exists() or not (out / "image.log").read_text():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert "interrupted at step" in stdout and "image.safetensors" in stdout
    model, meta = pipeline.load_checkpoint(str(out), "image")
    assert meta["step"] >= 1


def test_torchrun_two_cpu_processes(trained, tmp_path):
    """DDP over gloo: both ranks finish with identical weights; rank 0's checkpoint samples."""
    folder = tmp_path / "ddp"
    shutil.copytree(trained, folder)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "train.py",
                          "--stage", "video", "--preset", "tiny", "--out", str(folder), "--steps", "2", "--overwrite",
                          "--recipe", "batch=1", "frames=8", "joint_images=2", "--sample-every", "0",
                          "--device", "cpu"], cwd=HERE, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "parameters identical on all 2 ranks" in run.stdout
    meta = pipeline.checkpoint_meta(str(folder), "video")
    assert meta["processes"] == 2 and meta["step"] == 2
    assert len(torch.load(folder / "video-train.pt", weights_only=False)["rng_cpu"]) == 2
    sample.main(["--checkpoints", str(folder), "--steps", "2", "--out", str(tmp_path / "ddp.gif")])
    assert iio.imread(tmp_path / "ddp.gif").shape[:3] == (16, 32, 32)


@pytest.mark.parametrize("stage", ["image", "video", "interp", "sr", "judge"])
def test_train_bench_prints_every_key(cache_dir, capsys, stage):
    frames = {"image": [], "judge": [], "interp": ["frames=6"]}.get(stage, ["frames=2"])  # the fewest each trains on
    bench.main(["train", "--stage", stage, "--preset", "tiny", "--steps", "1", "--recipe", "batch=1", *frames,
                "--device", "cpu"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert TRAIN_BENCH_KEYS <= set(result) and result["stage"] == stage
    assert result["flops_per_step"] > 0 and result["step_s"] > 0 and result["plain_step_s"] > 0
    assert result["mfu"] is None and result["device"].startswith("cpu")  # no published peak for a CPU
    assert result["batch"] == 1 and result["joint_images"] == pipeline.RECIPES[stage].joint_images


def test_train_init_fine_tunes_a_checkpoint(cascade, tmp_path):
    out = tmp_path / "fine"
    shutil.copytree(cascade, out)
    train.main(["--stage", "interp", "--preset", "tiny", "--init", str(cascade), "--out", str(out), "--overwrite",
                "--steps", "2",
                "--recipe", "batch=2", "frames=6", "warmup=1", "lr=1e-2", "ema_decay=0", "--sample-every", "0"])
    meta = pipeline.checkpoint_meta(str(out), "interp")
    assert meta["step"] == 2 and meta["init_step"] == 3 and meta["video_step"] == 4
    before, _ = pipeline.load_checkpoint(str(cascade), "interp")
    after, _ = pipeline.load_checkpoint(str(out), "interp")
    assert any(not torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))


def test_ctrl_c_in_the_middle_of_a_step_then_resume_is_bit_exact(cache_dir, tmp_path, monkeypatch, capsys):
    for name in ("once", "cut"):
        shutil.copytree(cache_dir, tmp_path / name)
    tiny_image_run(tmp_path / "once", 4, "--save-every", "100")
    ctrl_c_at_loss_call(monkeypatch, 2)  # during step 2, after its batch was drawn
    with pytest.raises(SystemExit) as exit_info:
        tiny_image_run(tmp_path / "cut", 4, "--save-every", "100")
    assert exit_info.value.code == 130 and "interrupted at step 2" in capsys.readouterr().out
    monkeypatch.undo()
    tiny_image_run(tmp_path / "cut", 4, "--resume", "--save-every", "100")
    a, b = (torch.load(tmp_path / name / "image-train.pt", weights_only=False) for name in ("once", "cut"))
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)


def test_train_without_warmup(cache_dir, tmp_path):
    """warmup=0: the first step takes the recipe's whole lr (warmup=4: a quarter of it, then a half)."""
    lrs = {}
    for warmup in (0, 4):
        out = tmp_path / f"w{warmup}"
        shutil.copytree(cache_dir, out)
        tiny_image_run(out, 2, "--recipe", f"warmup={warmup}", "cooldown=0")
        lrs[warmup] = [float(line.split(" lr ")[1].split()[0]) for line in open(out / "image.log") if " lr " in line]
        assert pipeline.checkpoint_meta(str(out), "image")["step"] == 2
    lr = pipeline.RECIPES["image"].lr
    assert lrs == {0: [lr, lr], 4: [lr / 4, lr / 2]}


def test_the_chain_and_a_single_stage_train_the_recipes_steps():
    for i, stage in enumerate(train_setup.CHAIN):  # each stage after the one it starts from
        source = mav.STAGES[stage].starts_from
        assert source is None or train_setup.CHAIN.index(source) < i, stage
    assert set(train_setup.CHAIN) == set(mav.STAGES)
    chain = train_setup.chain_steps(SimpleNamespace(steps=None))
    assert chain == {stage: pipeline.RECIPES[stage].steps for stage in train_setup.CHAIN}
    assert set(train_setup.chain_steps(SimpleNamespace(steps=3)).values()) == {3}
    own_image = ["--stage", "video", "--out", os.path.join(SHIPPED, "cpu"), "--overwrite"]  # parsed, not run
    args = train_setup.parse_args(own_image)
    assert args.recipe == pipeline.RECIPES["video"] and args.recipe.steps == chain["video"]  # one recipe: the chain's
    assert train_setup.parse_args([*own_image, "--steps", "7"]).recipe.steps == 7


def test_the_learning_rate_warms_up_then_cools_down_to_zero_by_steps_not_time():
    recipe = pipeline.Recipe(batch=1, frames=1, lr=1e-3, warmup=10, cooldown=0.3, min_snr=0, ema_decay=0.9, steps=1000)
    run = SimpleNamespace(recipe=recipe, step=4)  # whatever the time it has run: the rate reads only steps
    lr = lambda: train.learning_rate(run.recipe, run.step)
    assert math.isclose(lr(), 5e-4)                         # warming up: step 5 of 10
    run.step = 500
    assert math.isclose(lr(), 1e-3)                         # half the steps done: full rate
    run.step = 850
    assert math.isclose(lr(), 5e-4)                         # 15% left of a 30% cool-down: half the rate
    run.step = 1000
    assert lr() == 0.0
    run.recipe, run.step = mav.replace(recipe, cooldown=0.0), 999
    assert lr() == 1e-3                                     # no cool-down: the rate to the end


def test_the_chain_makes_the_same_checkpoints_on_a_slow_machine_and_across_a_time_limit(cache_dir, tmp_path,
                                                                                       monkeypatch, capsys):
    """Steps, not minutes: a chain slowed down (another job beside it), stopped by its time limit in the video
    stage and resumed, trains every stage in order by its recipe and writes every checkpoint byte for byte as
    the chain that ran straight through."""
    fast, slow = tmp_path / "fast", tmp_path / "slow"
    for out in (fast, slow):
        shutil.copytree(cache_dir, out)
    small_chain_recipes(monkeypatch)
    monkeypatch.setattr(train, "step_seconds", lambda *args: 0.01)  # no timing steps: the slow chain's do no harm
    tiny_chain(fast)
    monkeypatch.undo()
    small_chain_recipes(monkeypatch)
    forward, stop_reason = train.StageLoss.forward, train.stop_reason
    monkeypatch.setattr(train.StageLoss, "forward", lambda self: (time.sleep(0.05), forward(self))[1])
    minutes_run_out = lambda run, stop: "time" if (run.stage, run.step) == ("video", 1) else stop_reason(run, stop)
    monkeypatch.setattr(train, "stop_reason", minutes_run_out)
    capsys.readouterr()
    tiny_chain(slow, "--time-limit", "60")
    printed = capsys.readouterr().out
    assert "on this machine about" in printed
    assert "time limit: video stopped at step 1 of 2, saved; continue the chain with: python train.py --stage all " \
           f"--preset tiny --out {slow} --seed 0 --steps 2 --resume" in printed, printed
    assert list(pipeline.checkpoint_meta(str(slow), "chain")["done"]) == ["image"]
    image_bytes = (slow / "image.safetensors").read_bytes()
    monkeypatch.setattr(train, "stop_reason", stop_reason)
    monkeypatch.setattr(train, "step_seconds", lambda *args: 0.01)
    tiny_chain(slow, "--resume")
    printed = capsys.readouterr().out
    assert "done already: image" in printed and "chain done" in printed
    for stage in train_setup.CHAIN:
        assert (slow / f"{stage}.safetensors").read_bytes() == (fast / f"{stage}.safetensors").read_bytes(), stage
    chain = pipeline.checkpoint_meta(str(slow), "chain")
    assert list(chain["done"]) == train_setup.CHAIN and chain["steps"] == dict.fromkeys(train_setup.CHAIN, 2)
    assert (slow / "image.safetensors").read_bytes() == image_bytes  # a finished stage is not trained again
    video, interp, sr = (pipeline.checkpoint_meta(str(slow), stage) for stage in ("video", "interp", "sr"))
    assert video["step"] == 2 and video["image_step"] == 2 and interp["video_step"] == 2
    for stage, meta in (("video", video), ("interp", interp), ("sr", sr)):  # each trained by its recipe
        assert meta["recipe"] == asdict(mav.replace(pipeline.RECIPES[stage], steps=2)), stage
    assert pipeline.load_checkpoint(str(slow), "sr")[0].cfg.noise_cond
    # the chain's guidance is recorded with the image and video models and is sample.py's default for them, not a rule
    assert video["guidance"] == pipeline.RECIPES["video"].guidance == 7 and "guidance" not in sr
    assert sample.parse_args(["--checkpoints", str(slow)]).guidance == 7
    assert sample.parse_args(["--checkpoints", str(slow), "--guidance", "2"]).guidance == 2.0


def test_unlabeled_trains_exactly_the_temporal_weights(trained, tmp_path):
    out = tmp_path / "frozen"
    shutil.copytree(trained, out)
    args = train_setup.parse_args(["--stage", "video", "--preset", "tiny", "--out", str(out), "--overwrite",
                                   "--steps", "2", "--recipe", "batch=2", "frames=8", "--unlabeled", "--sample-every", "0"])
    assert args.recipe.joint_images == 0  # no text, so no joint images with prompts
    trainer = train.Trainer(args, "video", args.recipe)
    trainable = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    image_names = set(pipeline.load_checkpoint(str(out), "image")[0].state_dict())
    assert trainable and trainable == {name for name, _ in trainer.model.named_parameters()} - image_names
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    train.train_loop(trainer)
    changed = {name for name, p in trainer.model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and changed <= trainable  # the image model's weights are exactly as they were


def test_video_stage_on_a_fresh_folder_inflates_the_shipped_image_model(trained, tmp_path, monkeypatch, capsys):
    """No image model in --out: the shipped one of the preset (here a tiny copy) is copied in, said so in one line,
    and only its temporal layers train: after two steps every spatial weight is bit-equal to the image model's."""
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for name in os.listdir(trained):
        if name.startswith(("image.", "text-")):
            shutil.copy(trained / name, shipped)
    monkeypatch.setattr(cli, "SHIPPED_FOLDERS", {"tiny": str(shipped)})
    out = tmp_path / "fresh"
    train.main(["--stage", "video", "--preset", "tiny", "--out", str(out), "--steps", "2", "--sample-every", "0",
                "--recipe", "batch=2", "frames=4"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("video: 2 steps into") and "on this machine" in lines[0]  # the ETA first
    assert lines[1].startswith(f"{out}/ holds no image model: inflating the shipped one")
    assert (out / "image.json").read_text() == (shipped / "image.json").read_text()
    meta = pipeline.checkpoint_meta(str(out), "video")
    assert meta["recipe"]["temporal_only"] and meta["recipe"]["joint_images"] == 0
    image = pipeline.load_checkpoint(str(shipped), "image")[0].state_dict()
    state = torch.load(out / "video-train.pt", weights_only=True)
    temporal = mav.temporal_names(mav.UNetConfig(**state["config"]))
    assert temporal and all(torch.equal(state["model"][k], v) for k, v in image.items())  # spatial: frozen
    assert any(not torch.equal(state["model"][k], mav.inflate(image, mav.UNetConfig(**state["config"])).state_dict()[k])
               for k in temporal)                                                 # temporal: trained


def test_video_stage_defaults_to_the_shipped_image_models_preset(tmp_path):
    args = train_setup.parse_args(["--stage", "video", "--out", str(tmp_path / "new")])
    assert args.preset == train_setup.SHIPPED_IMAGE_PRESET and args.shipped_image == cli.SHIPPED
    assert args.recipe == train_setup.from_shipped_image(cli.SHIPPED)
    own = train_setup.parse_args(["--stage", "video", "--out", os.path.join(SHIPPED, "cpu"), "--overwrite"])
    assert own.preset == "cpu" and own.shipped_image is None  # a folder with an image model: its own, its preset


@pytest.mark.parametrize("stage", list(RESUME_RECIPES))
def test_every_stage_resumes_bit_exactly(cascade, tmp_path, monkeypatch, stage):
    """2 steps, stop, --resume to 3 == 3 steps in one go (which saved at step 2 and went on): the same weights,
    EMA and optimizer state, bit for bit, whatever the stage draws (clips, masks, noise levels, joint images)."""
    no_score = lambda model, device: {"frame_accuracy": 0.0, "video_accuracy": 0.0}  # not at stake here, and slow
    monkeypatch.setattr(judge, "judge_accuracy", no_score)
    for name in ("once", "twice"):
        shutil.copytree(cascade, tmp_path / name)
    run = lambda name, steps, *extra: train.main(["--stage", stage, "--preset", "tiny", "--out", str(tmp_path / name),
                                                  "--steps", str(steps), "--recipe", *RESUME_RECIPES[stage],
                                                  "--sample-every", "0", "--save-every", "2", *extra])
    run("once", 3, "--overwrite")
    run("twice", 2, "--overwrite")
    run("twice", 3, "--resume")
    a, b = (torch.load(tmp_path / name / f"{stage}-train.pt", weights_only=False) for name in ("once", "twice"))
    assert a["step"] == b["step"] == 3
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    for i, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg_sq"], b["optimizer"]["state"][i]["exp_avg_sq"]), i


def test_the_time_limit_stops_and_saves_a_run_that_resumes(cache_dir, tmp_path, capsys):
    out = tmp_path / "timed"
    shutil.copytree(cache_dir, out)
    tiny_image_run(out, 300, "--time-limit", "0.001")  # 0.06 s: it stops after a step or two, far before 300
    step = pipeline.checkpoint_meta(str(out), "image")["step"]
    assert 1 <= step < 300 and "done:" in capsys.readouterr().out
    assert torch.load(out / "image-train.pt", weights_only=False)["step"] == step
    tiny_image_run(out, step + 2, "--resume")
    assert pipeline.checkpoint_meta(str(out), "image")["step"] == step + 2


def test_previews_every_sample_every_steps_and_none_at_the_end_of_a_short_run(cache_dir, tmp_path):
    """A preview grid every --sample-every steps and one at the end; a run shorter than a fifth of --sample-every
    makes none at its end, so previews stay a small share of any run."""
    out = tmp_path / "previews"
    shutil.copytree(cache_dir, out)
    tiny_image_run(out, 3, "--sample-every", "2", "--overwrite")
    grids = sorted(os.listdir(out / "samples"))
    assert grids == ["image-000002.png", "image-000003.png"]
    assert iio.imread(out / "samples" / grids[0]).shape[:2] == (2 * (2 * (32 + 2) + 2),) * 2  # 2 x 2, scaled by 2
    shutil.rmtree(out / "samples")
    tiny_image_run(out, 4, "--sample-every", "1000", "--overwrite")
    assert not (out / "samples").exists()


def test_fp16_steps_whose_gradients_overflow_are_skipped_and_counted(cache_dir, tmp_path, monkeypatch):
    out = tmp_path / "overflow"
    shutil.copytree(cache_dir, out)
    real_loss, calls = mav.diffusion_loss, []

    def overflows_once(*args, **kwargs):  # step 2's gradients, scaled for fp16, overflow
        calls.append(1)
        return real_loss(*args, **kwargs) * (1e35 if len(calls) == 2 else 1.0)
    monkeypatch.setattr(mav, "diffusion_loss", overflows_once)
    tiny_image_run(out, 4, "--precision", "fp16")
    meta = pipeline.checkpoint_meta(str(out), "image")
    assert meta["step"] == 4 and meta["skipped_steps"] == 1
    assert "skipped 1" in (out / "image.log").read_text().splitlines()[-1]
    assert all(p.isfinite().all() for p in pipeline.load_checkpoint(str(out), "image")[0].parameters())


# --- sampling: the cascade, the picture modes, the files written --------------------------------------------

CASCADE_CALLS = [  # a learner's mistakes in Python -> the error and the words its one line must hold
    (dict(steps=0), ValueError, "steps=0 is outside 1 .. 1000"),
    (dict(steps=2.5), TypeError, "steps=2.5: must be an int"),
    (dict(steps=10 ** 9), ValueError, "steps=1000000000 is outside"),
    (dict(sr_steps=-1), ValueError, "sr_steps=-1 is outside"),
    (dict(guidance=float("nan")), ValueError, "guidance=nan is outside 0 .. 100"),
    (dict(guidance=float("inf")), ValueError, "guidance=inf is outside"),
    (dict(guidance=-1), ValueError, "guidance=-1 is outside"),
    (dict(image_expert=float("nan")), ValueError, "image_expert=nan is outside 0 .. 1"),
    (dict(image_expert=1.5), ValueError, "image_expert=1.5 is outside"),
    (dict(seed=-1), ValueError, "seed=-1 is outside 0 .. 2^63 - 1"),
    (dict(seed=2 ** 70), ValueError, "seed=1180591620717411303424 is outside"),
    (dict(seed=1.5), TypeError, "seed=1.5: must be an int"),
    (dict(strength=2), ValueError, "strength=2 is outside"),
    (dict(frames=0), ValueError, "frames=0 is outside 1 .. 64"),
    (dict(frames=-3), ValueError, "frames=-3 is outside"),
    (dict(extend_frames=-4), ValueError, "extend_frames=-4 is outside 0 .. 240"),
    (dict(extend_frames=10 ** 6), ValueError, "extend_frames=1000000 is outside"),
    (dict(prompts=[]), TypeError, "prompts=[]: must be a prompt or a non-empty list"),
    (dict(prompts=[1, 2]), TypeError, "prompts=[1, 2]"),
    (dict(first=torch.zeros(3, 3)), ValueError, "first: a tensor of shape (1, 1, 32, 32)"),
    (dict(first=torch.zeros(1, 1, 32, 32), last=torch.zeros(2, 1, 32, 32)), ValueError, "last: a tensor of shape"),
    (dict(video=torch.zeros(1, 1, 3, 32, 32)), ValueError, "video: a tensor of shape (1, 1, 16, 32, 32)"),
]


@pytest.fixture(scope="module")
def loaded_cascade(cascade):
    """The tiny cascade loaded once, as a learner holds it between calls."""
    return pipeline.Pipeline.load(str(cascade))


@pytest.mark.parametrize("kw,error,words", CASCADE_CALLS, ids=[str(c[0])[:40] for c in CASCADE_CALLS])
def test_the_python_cascade_names_its_bad_argument(loaded_cascade, kw, error, words):
    """Every bad keyword is refused before any step, in one line that names it, its value and its range
    (one cascade for them all: a refused call leaves it as it was, for the next)."""
    kw = dict(kw)
    with pytest.raises(error) as info:
        loaded_cascade(kw.pop("prompts", "1 and 2"), **kw)
    assert words in str(info.value) and len(str(info.value).splitlines()) == 1


def test_a_cascade_loaded_without_a_stage_a_call_needs_says_so(cascade):
    with pytest.raises(ValueError, match="holds no video network .* load it with 'video' among its stages"):
        pipeline.Pipeline.load(str(cascade), stages=["interp"])("1 and 2")


def test_sampling_a_folder_without_interp_and_sr_borrows_them(trained, cascade, tmp_path, monkeypatch, capsys):
    """python train.py --stage video makes only the video model: sample.py takes interp and SR from the shipped
    cascade of its preset (here a tiny one) and says so in one line."""
    monkeypatch.setattr(cli, "SHIPPED_FOLDERS", {"tiny": str(cascade)})
    out = tmp_path / "full.gif"
    sample.main(["--checkpoints", str(trained), "--steps", "2", "--frames", "4", "--out", str(out)])
    assert f"{trained}/ holds no interp or sr model: the shipped ones from" in capsys.readouterr().out
    assert iio.imread(out).shape[:3] == (16, 64, 64)  # 4 frames -> 16, 32² -> 64²


def test_sample_writes_a_16_frame_gif(trained, tmp_path, capsys):
    out = tmp_path / "clip.gif"
    sample.main(["--checkpoints", str(trained), "--steps", "4", "--out", str(out)])
    assert capsys.readouterr().out.startswith(f"device: {cli.choose_device()}, precision: ")  # auto's choice, and why
    frames = iio.imread(out)
    assert frames.shape[:3] == (16, 32, 32)
    assert len(set(f.tobytes() for f in frames)) > 1  # a video, not one frame repeated


def test_same_seed_same_file(trained, tmp_path):
    paths = [tmp_path / f"{name}.gif" for name in "abc"]
    for path, seed in zip(paths, [3, 3, 4]):
        sample.main(["--checkpoints", str(trained), "--steps", "3", "--seed", str(seed), "--out", str(path)])
    assert paths[0].read_bytes() == paths[1].read_bytes() != paths[2].read_bytes()


def test_several_prompts_make_a_grid_with_its_prompt_list(trained, tmp_path, capsys):
    out = tmp_path / "grid.gif"
    sample.main(["--checkpoints", str(trained), "--steps", "2", "--prompt", "1 and 3", "--prompt", "six and 9",
                 "--num-samples", "2", "--scale", "2", "--out", str(out)])
    side = 2 * (2 * (32 + 2) + 2)  # 2 x 2 videos with 2-pixel borders, then scaled by 2
    assert iio.imread(out).shape[:3] == (16, side, side)
    assert (tmp_path / "grid.txt").read_text().split("\n")[:4] == ["1 and 3", "1 and 3", "six and 9", "six and 9"]
    assert "warning" not in capsys.readouterr().err


def test_cascade_writes_76_frames_at_64(cascade, tmp_path, capsys):
    meta = pipeline.checkpoint_meta(str(cascade), "interp")
    assert meta["video_step"] == 4 and meta["config"]["cond_channels"] == 3
    assert pipeline.checkpoint_meta(str(cascade), "sr")["config"]["noise_cond"]
    out = tmp_path / "cascade.gif"
    sample.main(["--checkpoints", str(cascade), "--steps", "2", "1", "1", "--out", str(out)])
    assert iio.imread(out).shape[:3] == (76, 64, 64)
    assert "video+interp+sr" in capsys.readouterr().out
    sample.main(["--checkpoints", str(cascade), "--stages", "video,sr", "--sr", "framewise", "--extend", "4",
                 "--steps", "2", "1", "1", "--out", str(tmp_path / "b.mp4")])
    assert iio.imread(tmp_path / "b.mp4").shape[:3] == (20, 64, 64)


def test_the_readmes_python_makes_the_video_sample_py_makes(cascade, tmp_path, monkeypatch, capsys):
    """The README's Python snippet, run as written (on the tiny cascade, in a scratch folder), writes the same
    GIF as sample.py with the same prompt and seed at fp32 (Python runs without autocast). Both ask the sampler
    for their default steps (recorded, and compared); it takes at most 2 of them, for time."""
    readme = open(os.path.join(HERE, "README.md")).read()
    snippet = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'pipeline.Pipeline.load("checkpoints")' in snippet and len(snippet.strip().splitlines()) <= 4
    asked = sample_at_most_2_steps(monkeypatch)
    monkeypatch.chdir(tmp_path)
    exec(snippet.replace('"checkpoints"', repr(str(cascade))), {})
    written, by_python = [f for f in os.listdir(tmp_path) if f.endswith(".gif")], asked[:]
    sample.main(["--checkpoints", str(cascade), "--precision", "fp32", "--out", str(tmp_path / "sample.gif")])
    assert by_python == asked[len(by_python):] == [mav.STEPS["video"], mav.STEPS["interp"], mav.STEPS["sr"]]
    assert len(written) == 1 and (tmp_path / written[0]).read_bytes() == (tmp_path / "sample.gif").read_bytes()


def test_sample_bench_times_every_stage(cascade, capsys):
    bench.main(["sample", "--checkpoints", str(cascade), "--num-samples", "1", "--steps", "1", "1", "1"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["seconds"]) == {"video", "interp", "sr"} and result["frames_out"] == 76
    assert result["frames_per_s"] > 0 and result["size"] == 64


def test_animate_keeps_the_given_frames(cache):
    model = randomized(mav.UNet(mav.stage_config("interp", "tiny", TINY))).eval()
    first, last = (torch.rand(2, 1, 32, 32) * 2 - 1 for _ in range(2))
    text, null = cache(torch.tensor([1, 2])), cache(torch.tensor([mav.NULL_PROMPT] * 2))
    clip = mav.animate(model, first, text, null, frames=16, steps=2, generator=torch.Generator().manual_seed(0))
    assert clip.shape == (2, 1, 16, 32, 32) and torch.equal(clip[:, :, 0], first)
    assert (clip[:, :, 1:] - first[:, :, None]).abs().mean() > 0.05  # the rest is made, not copied
    both = mav.animate(model, first, text, null, frames=8, last=last, steps=2)
    assert both.shape == (2, 1, 8, 32, 32) and torch.equal(both[:, :, 0], first) and torch.equal(both[:, :, -1], last)


def test_variation_strength_runs_from_the_input_to_a_fresh_sample(cache):
    model = randomized(mav.UNet(mav.replace(TINY, temporal=True))).eval()
    video = torch.rand(2, 1, 4, 32, 32) * 2 - 1
    text, null = cache(torch.tensor([1, 2])), cache(torch.tensor([mav.NULL_PROMPT] * 2))
    run = lambda **kw: mav.sample(model, video.shape, text, null, steps=10, generator=torch.Generator().manual_seed(0),
                                  **kw)
    assert (run(init=video, strength=1e-3) - video).abs().max() < 0.02          # S -> 0: the input
    far = [(run(init=video, strength=s) - video).abs().mean().item() for s in (0.2, 0.6)]
    assert 0.02 < far[0] < far[1]                                                 # further with S
    assert torch.allclose(run(init=video, strength=1.0), run(), atol=1e-3)  # S = 1: a fresh sample (α_1 ≈ 5e-5)


def test_image_between_and_variation_from_files(cascade, pictures, tmp_path, capsys):
    base = ["--checkpoints", str(cascade), "--steps", "2", "--stages", "video", "--prompt", "3 and 7"]
    sample.main([*base, "--image", str(pictures / "first.png"), "--out", str(tmp_path / "a.gif")])
    made = cli.read_frames(str(tmp_path / "a.gif"))
    given = cli.fit_frames(cli.read_frames(str(pictures / "first.png")))
    assert made.shape == (16, 32, 32) and (made[0] - given[0]).abs().max() <= 1 / 255 + 1e-6
    sample.main([*base, "--between", str(pictures / "first.png"), str(pictures / "last.jpg"),
                 "--out", str(tmp_path / "b.gif")])
    made = cli.read_frames(str(tmp_path / "b.gif"))
    last = cli.fit_frames(cli.read_frames(str(pictures / "last.jpg")))
    assert made.shape == (16, 32, 32) and (made[-1] - last[0]).abs().max() <= 2 / 255
    sample.main([*base, "--variation", str(pictures / "clip.gif"), "--strength", "0.3", "--num-samples", "2",
                 "--out", str(tmp_path / "c.gif")])
    assert cli.read_frames(str(tmp_path / "c.gif")).shape == (16, 32 + 4, 2 * (32 + 2) + 2)  # 2 videos side by side
    sample.main(["--checkpoints", str(cascade), "--steps", "2", "1", "1",
                 "--image", str(pictures / "first.png"), "--out", str(tmp_path / "d.gif")])  # the whole cascade
    assert cli.read_frames(str(tmp_path / "d.gif")).shape == (76, 64, 64)
    assert "warning" not in capsys.readouterr().err


def test_image_model_grid_from_a_prompt_file(trained, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("4 and eight, 0 and two\n1 and zero\n\n5 and 5\n")
    sample.main(["--checkpoints", str(trained), "--stages", "image", "--prompt-file", str(prompts), "--steps", "2",
                 "--out", str(tmp_path / "grid.png")])
    assert iio.imread(tmp_path / "grid.png").shape[:2] == (2 * (32 + 2) + 2, 2 * (32 + 2) + 2)
    assert (tmp_path / "grid.txt").read_text().split("\n")[:4] == ["4 and eight", "0 and two", "1 and zero", "5 and 5"]


def test_long_prompt_names_a_file_that_can_be_written(tmp_path):
    """An 800-character prompt names its output file (sample.py's default --out) within a file system's 255."""
    name = sample.slug("1 and 2 " * 100) + ".gif"
    (tmp_path / name).write_bytes(b"GIF")
    assert (tmp_path / name).exists() and name.startswith("1_and_2_")


def test_digits_of_other_scripts_are_not_the_prompts_digits():
    """Only the ASCII numerals and English words name digits: a full-width ２ or an Arabic-Indic ٢ is free text
    (which sample.py samples with a warning: test_free_text_warns_but_samples)."""
    assert sample.parse_prompt("２ and ٢") is None and sample.parse_prompt("2 and two") == (2, 2)


def test_configs_that_say_residual_load_as_today(cascade, tmp_path):
    """Checkpoints written from 27 Nov to 7 Dec name `residual` in their config (true for interp and SR, false for
    the rest): each loads as today's network, weight for weight."""
    folder = tmp_path / "said_residual"
    shutil.copytree(cascade, folder)
    for stage, said in (("video", False), ("interp", True), ("sr", True)):
        meta = pipeline.checkpoint_meta(str(folder), stage)
        assert "residual" not in meta["config"]
        said_so = {**meta, "config": {**meta["config"], "residual": said}}
        pipeline.atomic_write_json(said_so, str(folder / f"{stage}.json"))
        model = pipeline.load_checkpoint(str(folder), stage)[0]
        today = pipeline.load_checkpoint(str(cascade), stage)[0]
        assert type(model) is mav.UNet and model.cfg == today.cfg
        assert all(torch.equal(v, today.state_dict()[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("folder", ["checkpoints", "checkpoints/cpu"])
def test_the_shipped_checkpoints_load_and_run(folder):
    """Every shipped network has today's keys and config (the GPU-trained interp: the paper's 2 conditioning
    channels, read through WholeFrameInterp) and makes finite output of the right shape from its inputs."""
    folder = os.path.join(HERE, folder)
    text, logsnr = fake_text(1), torch.zeros(1)
    for stage, shape, cond in (("image", (1, 1, 32, 32), None), ("video", (1, 1, 3, 32, 32), None),
                               ("interp", (1, 1, 3, 32, 32), 3), ("sr", (1, 1, 2, 64, 64), 1)):
        model, meta = pipeline.load_checkpoint(folder, stage)
        stored = safetensors.torch.load_file(os.path.join(folder, stage + ".safetensors"))
        assert "residual" not in meta["config"] and stored.keys() == model.state_dict().keys(), stage
        whole_frames = stage == "interp" and folder.endswith("checkpoints")
        assert type(model) is (pipeline.WholeFrameInterp if whole_frames else mav.UNet), stage
        assert model.cfg == mav.replace(mav.stage_config(stage, meta["preset"]),
                                        **({"cond_channels": 2} if whole_frames else {})), stage
        x = torch.randn(shape)
        kw = dict(cond=torch.randn(1, cond, *shape[2:])) if cond else {}
        kw.update(stride=torch.ones(1)) if len(shape) == 5 else None
        kw.update(aug=torch.zeros(1)) if stage == "sr" else None
        with torch.no_grad():
            v = model(x, logsnr, text, **kw)
        assert v.shape == x.shape and v.isfinite().all(), stage
    if folder.endswith("checkpoints"):
        config = pipeline.checkpoint_meta(folder, "judge")["config"]
        assert evaluate.load_judge(folder).cfg == judge.JudgeConfig(**config)


def test_residual_init_gives_an_old_whole_frame_network_todays_form(tmp_path, monkeypatch):
    """docs/residual_init.py: an interp network of the format shipped until 7 Dec (2 conditioning channels,
    fps_embed, whole frames) becomes today's, every old weight kept and the blend channel's input weight zero,
    so the new network starts as the old one reading the known frames and the mask."""
    old_cfg = {**asdict(mav.stage_config("interp", "tiny", mav.replace(TINY, temporal=True))), "cond_channels": 2}
    old = randomized(mav.UNet(mav.UNetConfig(**old_cfg)))
    state = {k.replace("stride_embed.", "fps_embed.", 1): v for k, v in old.state_dict().items()}
    source = tmp_path / "old"
    source.mkdir()
    safetensors.torch.save_file(state, source / "interp.safetensors")
    (source / "interp.json").write_text(json.dumps({"stage": "interp", "config": old_cfg, "preset": "tiny", "step": 5,
                                                    "text_encoder": mav.DEFAULT_TEXT_ENCODER}))
    script = os.path.join(HERE, "docs", "residual_init.py")
    monkeypatch.syspath_prepend(os.path.dirname(script))  # as `python docs/residual_init.py` has it
    monkeypatch.setattr(sys, "argv", [script, str(source), str(tmp_path / "new"), "--stages", "interp"])
    runpy.run_path(script, run_name="__main__")
    new, meta = pipeline.load_checkpoint(str(tmp_path / "new"), "interp")
    assert new.cfg == mav.stage_config("interp", "tiny", mav.replace(TINY, temporal=True)) and meta["step"] == 0
    for key, weight in old.state_dict().items():
        if key == "conv_in.spatial.weight":  # z, known frames, mask; then the blend: zero
            assert torch.equal(new.state_dict()[key][:, :3], weight.half().float())
            assert not new.state_dict()[key][:, 3].any()
        else:
            assert torch.equal(new.state_dict()[key], weight.half().float()), key


def test_the_old_whole_frame_interp_is_sampled_as_before(cache):
    """The GPU-trained interp network makes whole frames from 2 conditioning channels; through WholeFrameInterp,
    §7's residual sampler gives what plain SDEdit from the blend gave it, step for step: its z and v taken into
    the difference's terms, and x̂ clipped as a frame."""
    cfg = mav.replace(TINY, temporal=True, cond_channels=2)
    old = randomized(pipeline.network(asdict(cfg))).eval()
    assert isinstance(old, pipeline.WholeFrameInterp)
    mask = (torch.arange(6) % 5 == 0)[None]
    known = (torch.rand(1, 1, 6, 32, 32) * 2 - 1) * mask[:, None, :, None, None]
    text, null = cache(torch.tensor([3])), cache(torch.tensor([mav.NULL_PROMPT]))
    plain = lambda x, logsnr, text, stride=None, cond=None: mav.UNet.forward(old, x, logsnr, text, stride, cond)
    known_and_mask = torch.cat([known, mask[:, None, :, None, None].float().expand_as(known)], dim=1)
    before = mav.sample(plain, known.shape, text, null, steps=5, generator=torch.Generator().manual_seed(0),
                        init=mav.temporal_fill(known, mask), strength=mav.RESIDUAL_START, stride=torch.full((1,), 0.2),
                        cond=known_and_mask)
    now = mav.interpolate(old, known[:, :, ::5], text, null, steps=5, guidance=mav.GUIDANCE,
                          generator=torch.Generator().manual_seed(0))
    assert torch.allclose(torch.where(mask[:, None, :, None, None], known, before), now, atol=1e-4)


def test_a_residual_sample_is_clipped_as_a_frame_not_as_a_difference(cache):
    """A digit that moves off its guess needs a difference of up to 2 (the guess bright, the frame dark): each
    x̂ is clipped so that guess + x̂ lies in [-1, 1], not x̂ itself (which left a gray ghost where the guess was)."""
    class MakesMinusTwo(MakesNothing):  # x̂ = α·z − σ·v = −2 everywhere
        def forward(self, z, logsnr, text, **conditioning):
            alpha, sigma = (mav._bcast(s, z) for s in mav.alpha_sigma(logsnr))
            return (alpha * z + 2) / sigma
    text = cache(torch.tensor([3]))
    guess = torch.ones(1, 1, 4, 8, 8)
    for steps in (1, 3):
        x = mav.residual_sample(MakesMinusTwo(None), guess, guess.shape, text, text, steps=steps, guidance=1.0)
        assert torch.allclose(x, -guess, atol=1e-5), steps  # was 0 where clipped as a difference


@pytest.mark.parametrize("kind", ["random", "constant", "black", "white", "still, then moving"])
def test_every_video_written_reads_back_with_every_frame(tmp_path, kind):
    """What sample.py writes, imageio reads back: every frame, GIFs exactly (one palette of the clip's grays)."""
    rng = np.random.default_rng(0)
    frames = {"random": rng.integers(0, 256, (8, 36, 40)), "constant": np.full((8, 36, 40), 77),
              "black": np.zeros((8, 36, 40)), "white": np.full((8, 36, 40), 255),
              "still, then moving": np.concatenate([np.zeros((4, 36, 40)), rng.integers(0, 256, (4, 36, 40))])}[kind]
    frames = frames.astype(np.uint8)
    cli.write_video(str(tmp_path / "v.gif"), frames, fps=8)
    assert np.array_equal(as_gray(iio.imread(tmp_path / "v.gif", index=None)), frames)
    assert torch.allclose(cli.read_frames(str(tmp_path / "v.gif")), torch.from_numpy(frames / 255).float(), atol=1e-5)
    cli.write_video(str(tmp_path / "v.mp4"), frames, fps=8)
    back = as_gray(iio.imread(tmp_path / "v.mp4", index=None)).astype(int)
    assert back.shape == frames.shape  # H.264 is lossy: the frames are all there, near their values
    error = np.abs(back - frames)
    assert error.mean() <= 4  # random frames too (against another random clip: ~85)
    smooth = [i for i in range(len(frames)) if frames[i].min() == frames[i].max()]  # flat frames: nearly exact
    assert (kind == "random") == (not smooth) and all(error[i].max() <= 2 for i in smooth)


# --- evaluation, benchmarks and the docs studies ------------------------------------------------------------

@pytest.mark.parametrize("stage,keys", [("interp", {"psnr", "psnr_linear_blend", "in_between_frames"}),
                                        ("sr", {"psnr", "psnr_bicubic"})])
def test_eval_prints_psnr_beside_its_baseline(cascade, capsys, stage, keys):
    evaluate.main([stage, "--checkpoints", str(cascade), "--num-samples", "2", "--steps", "1", "1", "1",
                   "--frames", "4"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert keys <= set(result) and result["n"] == 2 and result["eval"] == stage
    baseline = result["psnr_linear_blend" if stage == "interp" else "psnr_bicubic"]
    assert 15 < baseline < 60 and math.isfinite(result["psnr"])


def test_pair_index_matches_the_pair_table():
    pairs = torch.tensor(judge.PAIRS)
    assert torch.equal(judge.pair_index(pairs), torch.arange(55))
    assert torch.equal(judge.pair_index(pairs.flip(1)), torch.arange(55))  # unordered
    assert judge.pair_counts(torch.tensor([[3, 3], [1, 7]])).tolist()[0][3] == 2


def test_judge_learns_digit_counts():
    torch.manual_seed(0)
    model = judge.Judge(judge.JudgeConfig(width=8, features=32))
    optimizer = train.adamw(model, lr=3e-3)
    video, labels = mav.MovingMNIST("train").sample(64, frames=1, generator=torch.Generator().manual_seed(0))
    frames = mav.area_downsample(video)[:, :, 0]
    losses = []
    for _ in range(30):
        loss = judge.judge_loss(model, frames, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
    assert judge.augment(frames).shape == frames.shape and 0 <= judge.augment(frames).min()


def test_shipped_judge_reads_held_out_digits(shipped_judge, real_clips):
    videos, labels = real_clips
    scores, feats = judge.score_videos(shipped_judge, videos, labels)
    assert scores["adherence"] == 1.0 and scores["frame_accuracy"] > 0.85
    assert feats.shape == (24 * 16, shipped_judge.cfg.features)
    # the same frames at 64² read the same way (area-downsampled inside)
    big = mav.MovingMNIST("test").sample(4, frames=2, generator=torch.Generator().manual_seed(5))[0][:, 0]
    assert torch.equal(shipped_judge.read(big.reshape(-1, 1, 64, 64))[0],
                       shipped_judge.read(mav.area_downsample(big).reshape(-1, 1, 32, 32))[0])


def test_scorer_tells_prompts_apart(shipped_judge, real_clips):
    videos, labels = real_clips
    shuffled = labels.roll(1, dims=0)
    keep = judge.pair_index(shuffled) != judge.pair_index(labels)  # a roll may land on the same pair
    scores, _ = judge.score_videos(shipped_judge, videos[keep], shuffled[keep])
    assert scores["adherence"] <= 0.1


def test_scorer_tells_videos_from_slideshows(shipped_judge, real_clips):
    videos, labels = real_clips
    real, _ = judge.score_videos(shipped_judge, videos, labels)
    assert real["switch_rate"] < 0.15 and real["motion_lag_ratio"] < 0.8 and real["motion"] > 0.01
    # frame t of each "video" taken from a random other video: a flickering slideshow
    g = torch.Generator().manual_seed(0)
    mixed = torch.stack([videos[torch.randperm(len(videos), generator=g), t] for t in range(16)], dim=1)
    slideshow, _ = judge.score_videos(shipped_judge, mixed, labels)
    assert slideshow["switch_rate"] > 0.6 and slideshow["motion_lag_ratio"] > 0.9
    still, _ = judge.score_videos(shipped_judge, videos[:, :1].expand(-1, 16, -1, -1), labels)
    assert still["motion"] == 0 and still["switch_rate"] == 0


def test_switches_are_split_into_momentary_and_lasting():
    """A read that leaves its pair for 1-2 frames and returns is two momentary switches; a pair that changes
    and stays (or leaves for 3 frames) is lasting; the two rates add up to the switch rate."""
    reads = torch.tensor([[0, 0, 1, 0, 0, 2, 2, 2, 3, 3, 2, 2, 5, 5, 5, 5],   # 4 momentary, 2 lasting
                          [1] * 16,                                          # none
                          [0, 1, 1, 1, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4],  # 3 lasting (a 3-frame excursion)
                          [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0]])  # flicker: 4 momentary, each once
    kinds = judge.switch_kinds(reads)
    assert kinds == {"momentary_switch_rate": 8 / 60, "lasting_switch_rate": 5 / 60}
    assert min(judge.switch_kinds(torch.tensor([[0, 1] * 8, [2, 2, 3] * 5 + [2]])).values()) >= 0


def test_jump_and_vanish_rates_read_coherent_motion():
    """A digit moving steadily reads clean; one put somewhere else for a frame jumps (its ink appears far from
    the old and leaves the old place empty), one missing from a frame vanishes (and appears again after)."""
    videos, _ = mav.MovingMNIST("test").sample(8, frames=16, generator=torch.Generator().manual_seed(0))
    videos = mav.area_downsample(videos)[:, 0]                                       # n f 32 32, real motion
    assert judge.jump_rates(videos) == {"jump_rate": 0.0, "vanish_rate": 0.0}
    digit = torch.zeros(1, 16, 32, 32)
    for f in range(16):
        digit[0, f, 4:12, 2 + f:6 + f] = 1.0                                         # a bar moving 1 px a frame
    assert judge.jump_rates(digit) == {"jump_rate": 0.0, "vanish_rate": 0.0}
    jumped = digit.clone()
    jumped[0, 8] = 0
    jumped[0, 8, 20:28, 20:24] = 1.0                                                 # frame 8: somewhere else
    assert judge.jump_rates(jumped) == pytest.approx({"jump_rate": 2 / 15, "vanish_rate": 2 / 15})  # there, back
    vanished = digit.clone()
    vanished[0, 8] = 0                                                               # frame 8: gone
    assert judge.jump_rates(vanished) == pytest.approx({"jump_rate": 1 / 15, "vanish_rate": 1 / 15})  # gone, back


def test_frechet_distance():
    torch.manual_seed(0)
    a = torch.randn(2000, 4)
    assert abs(judge.frechet_distance(a, a)) < 1e-6
    assert judge.frechet_distance(a, a + torch.tensor([3.0, 0, 0, 0])) == pytest.approx(9.0, abs=1e-3)
    assert judge.frechet_distance(a, 2 * a) == pytest.approx(4.0, rel=0.05)  # tr(Σ + 4Σ − 2·2Σ) = tr Σ ≈ 4


def test_eval_videos_prints_every_figure(cascade, tmp_path, capsys):
    folder = tmp_path / "with-judge"
    shutil.copytree(cascade, folder)
    for ext in ("safetensors", "json"):
        shutil.copy(os.path.join(SHIPPED, f"judge.{ext}"), folder)
    out = tmp_path / "eval.gif"
    evaluate.main(["--checkpoints", str(folder), "--num-samples", "3", "--stages", "video,interp",
                   "--steps", "2", "1", "--out", str(out)])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert EVAL_KEYS <= set(result) and result["n"] == 3 and result["frames"] == 76
    for part in ("full_rate", "ceiling", "baseline"):
        assert EVAL_KEYS <= set(result[part]), part
    assert result["ceiling"]["adherence"] > 0.6
    assert json.loads((tmp_path / "eval.json").read_text()) == result and out.exists()
    assert len((tmp_path / "eval.txt").read_text().split("\n")) == 4


@pytest.mark.parametrize("mode,keys", [("animate", {"animated", "real", "still"}),
                                       ("between", {"psnr", "psnr_linear_blend", "made"}),
                                       ("variation", {"rows"})])
def test_eval_modes_print_their_figures(cascade, tmp_path, capsys, mode, keys):
    assert not (cascade / "judge.json").exists()  # a train.py folder: the shipped judge scores it
    evaluate.main([mode, "--checkpoints", str(cascade), "--num-samples", "2", "--steps", "2"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert keys <= set(result) and result["n"] == 2
    if mode == "animate":
        assert result["still"]["motion"] == 0 and result["real"]["motion"] > 0.01 and result["animated"]["motion"] > 0
    if mode == "between":
        assert 5 < result["psnr_linear_blend"] < 40 and math.isfinite(result["psnr"])
        assert len(result["psnr_per_frame"]) == len(result["psnr_linear_blend_per_frame"]) == 14  # frames 1..14
    if mode == "variation":
        rows = result["rows"]
        assert [r["strength"] for r in rows] == [0.0, 0.4, 0.6, 0.8, 1.0]
        assert rows[0]["adherence_own_digits"] >= 0.5  # the input shows its own digits (the judge reads them)
        assert rows[1]["psnr_to_input"] > rows[-1]["psnr_to_input"]  # weaker noise, closer to the input


def test_every_docs_study_runs(cascade, tmp_path, monkeypatch, capsys):
    """Each script under docs/ at tiny settings, on the tiny cascade: it runs, and prints what it measures.
    (In this process, as `python docs/<script>` would run it: ten fresh interpreters cost ~25 s of imports.)"""
    c, docs = str(cascade), os.path.join(HERE, "docs")
    runs = [["solver_study.py", "video", "1", "ddim:2", "dpm++:2", "--checkpoints", c],
            ["solver_study.py", "sr", "1", "dpm++:2", "ddim:1", "--checkpoints", c],
            ["sr_judge_study.py", "--n", "2", "dpm++:1", "--checkpoints", c],
            ["noise_probe.py", c, "--clips", "2"],
            ["start_study.py", "sr", "1", "0.8:1", "--checkpoints", c],
            ["cascade_steps_study.py", "--n", "1", "1:1:0.8", "--checkpoints", c, "--results",
             str(tmp_path / "steps.jsonl"), "--base-cache", str(tmp_path / "steps" / "base.pt")],
            ["laptop_figures.py", c, "--out", str(tmp_path), "--other", c, "--steps", "1", "1", "1", "--prompts", "1"]]
    results = tmp_path / "ablations.jsonl"  # the curve's clock, given: bench.py's own test times steps
    results.write_text('{"row": "image stage", "step_s": 0.1, "minutes": 1.0}\n{"row": "video step", "step_s": 0.1}\n')
    ablations = ["--source", c, "--preset", "tiny", "--out", str(tmp_path / "abl"), "--results", str(results),
                 "--rows", "full", "--steps", "1", "--snapshots", "1", "--num-samples", "2",
                 "--curve-samples", "2", "--eval-steps", "1"]
    longer = [*ablations, "--steps", "2", "--out", str(tmp_path / "abl2")]  # the same row, a 2-step run beside
    runs += [["crossing_frames.py", "--videos", c, c, "--image-expert", "0", "0.5", "--cascade", c, "--steps", "2",
              "--out", str(tmp_path / "crossing.png")]]
    identity = ["--results", str(tmp_path / "identity.jsonl"), "--out", str(tmp_path / "identity")]
    runs += [["identity_study.py", "--checkpoints", c, "--rows", "shipped", "β 0.5, t ≤ 0.5", "--seeds", "0",
              "--num-samples", "2", "--eval-steps", "1", *identity], ["identity_study.py", "--table", *identity]]
    study = ["--results", str(tmp_path / "video_study.jsonl"), "--out", str(tmp_path / "vs")]
    runs += [["video_study.py", "--rows", "gpu-temporal", "--source", c, "--preset", "tiny", "--snapshots", "1", "2",
              "--seeds", "0", "--num-samples", "2", "--eval-steps", "1", "--image-expert", "gpu-temporal:2:0", *study],
             ["video_study.py", "--table", *study]]
    runs += [["modes_study.py", "--checkpoints", c, "--rows", "animate", "between-b0", "variation", "--seeds", "0",
              "--num-samples", "2", "--steps", "1", "--results", str(tmp_path / "modes.jsonl")],
             ["modes_study.py", "--table", "--results", str(tmp_path / "modes.jsonl")]]
    runs += [["ablations.py", *ablations], ["ablations.py", *longer],
             ["ablations.py", *ablations, "--figures", "--figures-out", str(tmp_path)]]
    scripts = {f for f in os.listdir(docs) if f.endswith(".py")} - {"study.py", "residual_init.py"}
    assert {run[0] for run in runs} == scripts  # every study: not the helper, nor residual_init.py (its own test)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(docs)  # as `python docs/<script>` has it
    sample_at_most_2_steps(monkeypatch)  # what a study draws at the default steps (its base clips, its strips)
    for script, *argv in runs:
        monkeypatch.setattr(sys, "argv", [os.path.join(docs, script), *argv])
        runpy.run_path(os.path.join(docs, script), run_name="__main__")
        assert capsys.readouterr().out.strip(), script
    assert (tmp_path / "laptop_loss.png").exists() and len(iio.imread(tmp_path / "laptop_vs_gpu.gif")) == 38
    scored = [json.loads(line) for line in results.read_text().splitlines()][2:]
    assert [(r["row"], r["run_steps"], r["step"]) for r in scored] == [("full", 1, 0), ("full", 1, 1),
                                                                       ("full", 2, 0), ("full", 2, 2)]
    assert (tmp_path / "ablations.png").exists() and len(iio.imread(tmp_path / "ablations.gif")) == mav.FRAMES
    assert iio.imread(tmp_path / "crossing.png").shape[:2] == (2 * 66, 16 * 66)  # 2 rows of 76 // 5 + 1 frames
    identity = [json.loads(line) for line in (tmp_path / "identity.jsonl").read_text().splitlines()]
    assert [(r["row"], r["beta"], r["until"]) for r in identity] == [("shipped", 0, 0), ("β 0.5, t ≤ 0.5", 0.5, 0.5)]
    study = [json.loads(line) for line in (tmp_path / "video_study.jsonl").read_text().splitlines()]
    assert [(r["row"], r["step"], r["image_expert"]) for r in study] == [("gpu-temporal", 1, 0.75),
                                                                        ("gpu-temporal", 2, 0.75),
                                                                        ("gpu-temporal", 2, 0.0)]
    assert all(r["train_minutes"] > 0 and 0 <= r["jump_rate"] <= 1 for r in study)
    assert (tmp_path / "video_study.png").exists()
    modes = [json.loads(line) for line in (tmp_path / "modes.jsonl").read_text().splitlines()]
    assert [(r["row"], r["eval"], r["image_expert"]) for r in modes] == [("animate", "animate", 0.75),
                                                                        ("between-b0", "between", 0.0),
                                                                        ("variation", "variation", 0.75)]


# --- bad input: one line and exit code 2, nothing lost, nothing broken saved or loaded ----------------------

def test_an_unknown_sampler_is_refused_before_any_step():
    calls = []
    model = lambda z, *a, **kw: calls.append(1) or torch.zeros_like(z)
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        mav.sample(model, (1, 1, 4, 4), fake_text(1), fake_text(1), steps=1, sampler="euler")
    assert not calls


def test_an_even_temporal_kernel_is_refused():
    with pytest.raises(ValueError, match="odd"):
        mav.replace(TINY, temporal_kernel=2)


def test_inflation_fails_loudly_on_weights_that_do_not_match():
    state = mav.UNet(TINY).state_dict()
    extra = {**state, "mystery.weight": torch.zeros(3)}
    with pytest.raises(ValueError, match="unused"):
        mav.inflate(extra, TINY)
    missing = dict(state)
    missing.pop("conv_in.spatial.weight")
    with pytest.raises(ValueError, match="conv_in.spatial.weight"):
        mav.inflate(missing, TINY)


def test_free_text_warns_but_samples(trained, tmp_path, capsys):
    out = tmp_path / "free.gif"
    sample.main(["--checkpoints", str(trained), "--steps", "2", "--prompt", "a cat", "--out", str(out)])
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert out.exists() and len(warnings) == 1 and "'a cat'" in warnings[0]


@pytest.mark.parametrize("argv,needle", [
    (["--checkpoints", "/nonexistent"], "train.py --stage video --out /nonexistent"),
    (["--checkpoints", os.path.join(HERE, "README.md")], "is a file, not a folder"),
    (["--steps", "0"], "--steps must be positive"),
    (["--num-samples", "-1"], "--num-samples must be positive"),
    (["--guidance", "-0.5"], "--guidance must be a number in 0 .. 100"),
    (["--sampler", "euler"], "invalid choice"),
    (["--device", "nonsense"], "not a device"),
    (["--precision", "fp8"], "invalid choice"),
])
def test_sample_bad_arguments(capsys, argv, needle):
    expect_one_line_error(capsys, sample.main, argv, needle)


@pytest.mark.parametrize("kind,extra,needle", [
    ("corrupt", [], "cannot read the video checkpoint"),
    ("other-stage", [], "is a 'image' checkpoint"),
    ("bad-guidance", [], "video.json records guidance 'strong': not a number in 0 .. 100"),
    ("json-list", [], "video.json is not a checkpoint's JSON"),
])
def test_sample_refuses_wrong_checkpoints(capsys, broken_checkpoints, kind, extra, needle):
    expect_one_line_error(capsys, sample.main, ["--checkpoints", broken_checkpoints(kind), *extra], needle)


def test_python_and_sample_py_refuse_two_text_encoders_in_the_same_line(capsys, broken_checkpoints):
    """A video model and its image expert trained with two text encoders: Pipeline.load and sample.py (one
    loader, pipeline.load_networks) refuse the folder in the same line."""
    folder = broken_checkpoints("two-encoders")
    with pytest.raises(pipeline.CheckpointError, match="were trained with different text encoders") as info:
        pipeline.Pipeline.load(folder)
    expect_one_line_error(capsys, sample.main, ["--checkpoints", folder], str(info.value))


def test_train_bad_arguments_are_one_line_errors(capsys, tmp_path):
    expect_one_line_error(capsys, train.main, ["--stage", "audio"], "invalid choice")
    expect_one_line_error(capsys, train.main, ["--stage", "image", "--steps", "0"], "--steps must be positive")
    expect_one_line_error(capsys, train.main, ["--stage", "video", "--preset", "small", "--out", str(tmp_path)],
                          "no image checkpoint")  # no shipped image model of that preset either


@pytest.mark.parametrize("argv,needle", [
    (["--stage", "image", "--model", "temporal_kernel=1"], "--model applies to the video and sr stages"),
    (["--stage", "interp", "--model", "temporal_attention=0"], "inherits the video model's"),
    (["--stage", "video", "--model", "temporal_kernel=2"], "an odd number of frames"),
    (["--stage", "video", "--model", "depth=3"], "not FIELD=VALUE with FIELD one of temporal_kernel"),
    (["--stage", "video", "--model", "temporal_attention=maybe"], "'maybe' is not a bool"),
    (["--stage", "video", "--resume", "--model", "temporal_kernel=1"], "--model builds a new network"),
    (["--stage", "all", "--model", "stride_embedding=0"], "--model applies to one stage"),
    (["--stage", "image", "--recipe", "scratch=1"], "apply to the video stage"),
    (["--stage", "video", "--recipe", "scratch=1", "--init", "checkpoints"], "choose one"),
    (["--stage", "video", "--unlabeled", "--recipe", "scratch=1"], "not from scratch"),
])
def test_train_refuses_ablations_that_cannot_be(capsys, tmp_path, argv, needle):
    expect_one_line_error(capsys, train.main, [*argv, "--out", str(tmp_path / "run")], needle)


def test_cli_error_has_no_traceback(tmp_path):
    run = subprocess.run([sys.executable, "sample.py", "--checkpoints", str(tmp_path)], cwd=HERE,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [run.stderr.strip()] and "python train.py" in run.stderr


@pytest.mark.parametrize("argv,needle", [
    (["--stages", "video,interp"], "no interp checkpoint"),
    (["--stages", "video,upscale"], "unknown stage 'upscale'"),
    (["--extend", "8"], "--extend makes frames with the masked interpolation network"),
])
def test_cascade_bad_requests(trained, capsys, argv, needle):
    expect_one_line_error(capsys, sample.main, ["--checkpoints", str(trained), *argv], needle)
    expect_one_line_error(capsys, evaluate.main, ["sr", "--checkpoints", str(trained)], "no sr checkpoint")


def test_resume_refuses_another_run(trained, tmp_path, capsys):
    folder = tmp_path / "refuse"
    shutil.copytree(trained, folder)
    image_state = str(folder / "image-train.pt")
    common = ["--out", str(folder), "--steps", "40"]
    expect_one_line_error(capsys, train.main, ["--stage", "video", "--preset", "tiny", "--resume", image_state, "--out",
                                               str(tmp_path / "new")], "is a run with stage 'image', not 'video'")
    expect_one_line_error(capsys, train.main, ["--stage", "image", "--preset", "small", "--resume", *common],
                          "preset 'tiny', not 'small'")
    expect_one_line_error(capsys, train.main, ["--stage", "interp", "--preset", "tiny", "--resume", *common],
                          "--resume: no")


def test_interrupted_write_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    model = randomized(mav.UNet(TINY))
    pipeline.save_checkpoint(str(tmp_path), "image", model, {"step": 1, "text_encoder": mav.DEFAULT_TEXT_ENCODER})
    good = (tmp_path / "image.safetensors").read_bytes()

    def dies_halfway(tensors, path, metadata=None):  # as if SIGKILL struck during the write
        with open(path, "wb") as fh:
            fh.write(b"\0" * 100)
        raise KeyboardInterrupt
    monkeypatch.setattr(pipeline, "save_file", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        pipeline.save_checkpoint(str(tmp_path), "image", mav.UNet(TINY), {"step": 2, "text_encoder": mav.DEFAULT_TEXT_ENCODER})
    assert (tmp_path / "image.safetensors").read_bytes() == good
    assert pipeline.load_checkpoint(str(tmp_path), "image")[1]["step"] == 1


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(cache_dir, tmp_path, monkeypatch, capsys):
    shutil.copytree(cache_dir, tmp_path / "nan")
    real_loss, calls = mav.diffusion_loss, []

    def goes_nan(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) >= 3 else loss
    monkeypatch.setattr(mav, "diffusion_loss", goes_nan)
    with pytest.raises(SystemExit) as exit_info:
        tiny_image_run(tmp_path / "nan", 10)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 1 and "loss is nan at step 3" in err[-1]
    assert pipeline.load_checkpoint(str(tmp_path / "nan"), "image")[1]["step"] == 2


def test_a_picture_unlike_the_training_data_warns_and_runs(cascade, pictures, tmp_path, capsys):
    sample.main(["--checkpoints", str(cascade), "--steps", "2", "--stages", "video",
                 "--image", str(pictures / "photo.png"), "--out", str(tmp_path / "p.gif")])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and "does not look like the training data" in warnings[0]
    assert (tmp_path / "p.gif").exists()


@pytest.mark.parametrize("argv,needle", [
    (["--image", "/nonexistent.png"], "no such file"),
    (["--image", "{pictures}/notes.png"], "cannot read"),
    (["--between", "{pictures}/first.png", "/nonexistent.png"], "no such file"),
    (["--variation", "{pictures}/short.gif"], "has 5 frames; --variation needs at least 16"),
    (["--variation", "{pictures}/first.png"], "has 1 frame;"),
    (["--variation", "{pictures}/clip.gif", "--strength", "0"], "--strength: strength="),
    (["--variation", "{pictures}/clip.gif", "--strength", "1.5"], "--strength: strength="),
    (["--strength", "0.5"], "--strength applies to --variation"),
    (["--image", "{pictures}/first.png", "--between", "{pictures}/first.png", "{pictures}/first.png"],
     "--image and --between are different modes"),
    (["--image", "{pictures}/first.png", "--variation", "{pictures}/clip.gif"],
     "--image and --variation are different modes"),
])
def test_bad_pictures_and_videos_are_one_line_errors(cascade, pictures, capsys, argv, needle):
    argv = [a.replace("{pictures}", str(pictures)) for a in argv]
    expect_one_line_error(capsys, sample.main, ["--checkpoints", str(cascade), "--steps", "1", *argv], needle)


def test_train_never_writes_over_a_checkpoint_unasked(cache_dir, tmp_path, capsys):
    assert train_setup.parse_args(["--stage", "image", "--preset", "tiny"]).out == os.path.join("runs", "tiny")
    out = tmp_path / "run"
    shutil.copytree(cache_dir, out)
    tiny_image_run(out, 1)
    before = (out / "image.safetensors").read_bytes()
    capsys.readouterr()
    expect_one_line_error(capsys, lambda argv: tiny_image_run(out, 2), None,
                          "exists: continue that run with --resume, start from its weights with --init")
    assert (out / "image.safetensors").read_bytes() == before
    tiny_image_run(out, 2, "--overwrite")
    assert pipeline.checkpoint_meta(str(out), "image")["step"] == 2
    (tmp_path / "file").write_text("x")
    capsys.readouterr()
    expect_one_line_error(capsys, train.main, ["--stage", "image", "--out", str(tmp_path / "file")],
                          "is a file, not a folder")


def test_weights_that_are_not_finite_are_never_saved(cache_dir, tmp_path, monkeypatch, capsys):
    shutil.copytree(cache_dir, tmp_path / "nan")
    real_loss = mav.diffusion_loss
    monkeypatch.setattr(mav, "diffusion_loss", lambda *a, **kw: real_loss(*a, **kw) * float("nan"))
    with pytest.raises(SystemExit) as exit_info:  # the loss is read every 4 steps, but a save every step
        tiny_image_run(tmp_path / "nan", 4, "--log-every", "4", "--save-every", "1")
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 1 and "not finite at step 1" in err and "no checkpoint of this run" in err
    assert not (tmp_path / "nan" / "image.safetensors").exists() and not (tmp_path / "nan" / "image-train.pt").exists()


@pytest.mark.parametrize("where,name,stage,value,accepted", list(number_cases()))
def test_every_number_is_checked_before_anything_is_built(tmp_path, capsys, where, name, stage, value, accepted):
    """Each recipe field, --model field and number flag of train.py given nan, inf, a negative, zero, a huge
    value, a word, or twice: refused in one line with exit 2 and no file written, or (where the value means
    something, as 0 = off) taken as documented. Nothing is built: parse_args alone decides."""
    out = tmp_path / "run"
    given = {"recipe": lambda v: ["--recipe", f"{name}={v}"], "model": lambda v: ["--model", f"{name}={v}"],
             "train": lambda v: [name, v]}[where]
    extra = given(1) + given(1)[1:] if value == "twice" else given(value)
    argv = ["--stage", stage, "--preset", "tiny", "--out", str(out), *extra]
    if accepted:
        train_setup.parse_args(argv)
    else:
        expect_one_line_error(capsys, train_setup.parse_args, argv, "")
    assert not out.exists()


@pytest.mark.parametrize("argv,needle", [
    (["--stage", "video", "--recipe", "batch=60000", "frames=256"], "GiB free"),    # refused by arithmetic
    (["--stage", "judge", "--recipe", "guidance=3"], "does nothing for the judge stage"),
    (["--stage", "judge", "--recipe", "min_snr=5"], "does nothing for the judge stage"),
    (["--stage", "image", "--recipe", "batch=2", "batch=3"], "batch is given twice"),
    (["--stage", "image", "--seed", "99999999999999999999999"], "--seed must be in 0 .. 2^63 - 1"),
    (["--stage", "image", "--out", "/proc/mav-run"], "cannot write in /proc"),
    (["--stage", "all", "--out", "/proc/mav-run"], "cannot write in /proc"),
])
def test_train_refuses_sizes_and_settings_that_cannot_run(capsys, argv, needle):
    expect_one_line_error(capsys, train_setup.parse_args, [*argv, "--preset", "tiny"], needle)


@pytest.mark.parametrize("main,argv,needle", [
    (lambda argv: evaluate.main(argv), ["interp", "--num-samples", "0"], "--num-samples must be in 1 .."),
    (lambda argv: evaluate.main(argv), ["--num-samples", "-3"], "--num-samples must be in 1 .."),
    (lambda argv: bench.main(argv), ["train", "--stage", "video", "--recipe", "batch=60000"], "GiB free"),
    (lambda argv: bench.main(argv), ["train", "--stage", "image", "--steps", "0"], "--steps must be in 1 .."),
    (lambda argv: bench.main(argv), ["sample", "--num-samples", "0"], "--num-samples must be positive"),
    (lambda argv: sample.main(argv), ["--guidance", "1e300"], "--guidance must be a number in 0 .. 100"),
    (lambda argv: sample.main(argv), ["--seed", str(2 ** 63)], "--seed must be in 0 .. 2^63 - 1"),
    (lambda argv: sample.main(argv), ["--image-expert", "nan"], "--image-expert must be a number in 0 .. 1"),
    (lambda argv: evaluate.main(argv), ["--image-expert", "1.5"], "--image-expert must be a number in 0 .. 1"),
    (lambda argv: bench.main(argv), ["sample", "--image-expert", "-1"], "--image-expert must be a number in 0 .."),
])
def test_other_scripts_refuse_numbers_out_of_range(capsys, main, argv, needle):
    expect_one_line_error(capsys, main, argv, needle)


def test_init_and_resume_never_write_over_another_runs_checkpoint(trained, tmp_path, capsys):
    """--init and --resume PATH keep the rule of a fresh run (an existing checkpoint of the stage in --out
    is replaced only with --overwrite), and --init from --out itself is refused even then."""
    out = tmp_path / "held"
    shutil.copytree(trained, out)
    before = (out / "image.safetensors").read_bytes()
    base = ["--stage", "image", "--preset", "tiny", "--out", str(out), "--steps", "1", "--sample-every", "0"]
    for argv, needle in [(["--init", str(trained)], "exists: continue that run with --resume"),
                         (["--resume", str(trained / "image-train.pt")], "exists: continue that run with --resume"),
                         (["--init", str(out), "--overwrite"], "is --out itself")]:
        expect_one_line_error(capsys, train.main, [*base, *argv], needle)
    assert (out / "image.safetensors").read_bytes() == before


@pytest.mark.parametrize("content,needle", [([1, 2], "is a list, not the training state"),
                                            ({"stage": "image"}, "is a dict without config")])
def test_a_resume_file_of_the_wrong_shape_is_named(tmp_path, capsys, content, needle):
    torch.save(content, tmp_path / "state.pt")
    expect_one_line_error(capsys, train.main, ["--stage", "image", "--preset", "tiny", "--out", str(tmp_path / "run"),
                                               "--resume", str(tmp_path / "state.pt")], needle)


def test_weights_past_fp16s_range_are_never_saved_and_broken_checkpoints_never_loaded(trained, tmp_path, capsys):
    """fp32 weights of 1e5 are finite but inf in the fp16 checkpoint: the run stops before writing it. A
    checkpoint holding inf, or a JSON without its text encoder, is refused as it loads, in one line."""
    out = tmp_path / "big"
    shutil.copytree(trained, out)
    (out / "image-train.pt").unlink()
    (out / "image.safetensors").unlink()
    args = train_setup.parse_args(["--stage", "image", "--preset", "tiny", "--out", str(out)])
    trainer = train.Trainer(args, "image", pipeline.RECIPES["image"])
    with torch.no_grad():
        next(trainer.ema.parameters()).fill_(1e5)
    with pytest.raises(SystemExit) as exit_info:
        trainer.save()
    assert exit_info.value.code == 1 and "fp16" in capsys.readouterr().err and not (out / "image.safetensors").exists()
    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    weights = safetensors.torch.load_file(broken / "video.safetensors")
    next(iter(weights.values())).fill_(float("inf"))
    safetensors.torch.save_file(weights, broken / "video.safetensors")
    with pytest.raises(pipeline.CheckpointError, match="not finite"):
        pipeline.load_checkpoint(str(broken), "video")
    expect_one_line_error(capsys, sample.main, ["--checkpoints", str(broken), "--stages", "video",
                                                "--out", str(tmp_path / "x.gif")], "not finite")
    meta = json.loads((broken / "image.json").read_text())
    del meta["text_encoder"]
    (broken / "image.json").write_text(json.dumps(meta))
    expect_one_line_error(capsys, sample.main, ["--checkpoints", str(broken), "--stages", "image",
                                                "--out", str(tmp_path / "x.png")], "names no text_encoder")
    assert not (tmp_path / "x.gif").exists() and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("argv,needle", [
    (["--recipe", "warmup=-1"], "warmup=-1 is outside 0 .. 1e+06"),
    (["--recipe", "batch=0"], "batch=0 is outside 1 .. 65536"),
    (["--recipe", "batch=2.5"], "'2.5' is not a int"),
    (["--recipe", "speed=3"], "not FIELD=VALUE with FIELD one of batch, frames"),
    (["--recipe", "lr"], "not FIELD=VALUE"),
    (["--recipe", "frames=8"], "the image stage trains on single frames (frames=1)"),
    (["--recipe", "joint_images=4"], "apply to the video stage"),
    (["--recipe", "cooldown=1"], "cooldown=1.0 is outside 0 .. 0.99"),
    (["--time-limit", "-1"], "--time-limit must be a positive number"),
    (["--sample-every", "-1"], "--sample-every must be >= 0"),
    (["--recipe", "lr=nan"], "lr=nan is outside"),
    (["--recipe", "lr=inf"], "lr=inf is outside"),
    (["--unlabeled"], "--unlabeled applies to the video stage"),
])
def test_train_refuses_values_that_make_rubbish(capsys, argv, needle):
    expect_one_line_error(capsys, train.main, ["--stage", "image", *argv], needle)


@pytest.mark.parametrize("argv,needle", [
    (["--guidance", "nan"], "--guidance must be a number"),
    (["--guidance", "inf"], "--guidance must be a number"),
    (["--out", "vid.png"], "must end in .gif or .mp4"),
    (["--out", "vid.avi"], "must end in .gif or .mp4"),
    (["--out", "noext"], "must end in .gif or .mp4"),
    (["--out", "{junk}"], "is a folder"),
    (["--out", "{junk}/a_file/x.gif"], "cannot write there"),
    (["--out", "/proc/x.gif"], "cannot write there"),
    (["--out", "x" * 300 + ".gif"], "cannot write there"),
    (["--stages", "image", "--out", "x.gif"], "must end in .png"),
    (["--seed", "-1"], "--seed must be in 0 .. 2^63 - 1"),
    (["--seed", "99999999999999999999999"], "--seed must be in 0 .. 2^63 - 1"),
    (["--steps", "1000000000000"], "over its limit"),
    (["--scale", "100000"], "over its limit"),
    (["--frames", "1000"], "over its limit"),
    (["--extend", "1000000"], "over its limit"),
    (["--stages", "interp"], "add video"),
    (["--stages", "sr"], "add video"),
    (["--image", "{junk}"], "is a folder"),
    (["--prompt-file", "{junk}/binary.txt"], "is not UTF-8 text"),
])
def test_sample_refuses_bad_requests_before_any_work(capsys, junk, argv, needle):
    argv = [a.replace("{junk}", str(junk)) for a in argv]
    expect_one_line_error(capsys, sample.main, argv, needle)
    assert not os.path.exists("vid.png") and not os.path.exists("noext")


def test_ctrl_c_while_sampling_is_one_line_and_leaves_no_file(trained, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(mav, "sample", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--checkpoints", str(trained), "--out", str(tmp_path / "x.gif")])
    assert exit_info.value.code == 130 and capsys.readouterr().err.strip() == "interrupted"
    assert os.listdir(tmp_path) == []


def test_checkpoint_errors_name_the_key_and_shapes(trained, tmp_path):
    folder = tmp_path / "shapes"
    shutil.copytree(trained, folder)
    meta = json.loads((folder / "image.json").read_text())
    meta["config"]["channels"] = [24, 32]
    (folder / "image.json").write_text(json.dumps(meta))
    with pytest.raises(pipeline.CheckpointError, match=r"logsnr_embed.0.weight is \(64, 16\) in the file, "
                                                  r"\(96, 24\) in the model"):
        pipeline.load_checkpoint(str(folder), "image")
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(folder / "image.safetensors").st_mode & 0o777 == 0o666 & ~umask


def test_a_broken_text_cache_is_rebuilt_in_training_and_only_read_around_in_sampling(cache_dir, tmp_path, capsys):
    """Training's own folder gets its cache made again; sampling embeds in memory and leaves the folder it
    reads as it was. Either way one line of warning, and the same embeddings as the encoder's."""
    shutil.copytree(cache_dir, tmp_path / "c")
    path = pipeline.text_cache_path(str(tmp_path / "c"), mav.DEFAULT_TEXT_ENCODER)
    with open(path, "r+b") as fh:
        fh.truncate(100)
    original = pipeline.load_text_cache(str(cache_dir))
    in_memory = pipeline.load_text_cache(str(tmp_path / "c"), write=False)
    assert os.path.getsize(path) == 100 and torch.equal(in_memory.text.pooled, original.text.pooled)
    rebuilt = pipeline.load_text_cache(str(tmp_path / "c"))
    assert os.path.getsize(path) > 100 and torch.equal(rebuilt.text.pooled, original.text.pooled)
    warned = capsys.readouterr().err.strip().splitlines()
    assert len(warned) == 2 and "in memory" in warned[0] and "rebuilding it" in warned[1]


def test_chain_refuses_another_runs_folder(cache_dir, tmp_path, capsys):
    out = tmp_path / "other"
    shutil.copytree(cache_dir, out)
    tiny_image_run(out, 1)  # a single-stage run, not a chain
    capsys.readouterr()
    assert pipeline.checkpoint_meta(str(out), "image")["guidance"] == pipeline.RECIPES["image"].guidance  # one recipe
    assert sample.parse_args(["--checkpoints", str(out), "--stages", "image"]).guidance == pipeline.RECIPES["image"].guidance
    expect_one_line_error(capsys, tiny_chain, out, "already holds image.json: continue that chain with --resume")
    with pytest.raises(SystemExit) as exit_info:
        tiny_chain(out, "--resume")
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "holds no chain to continue" in err, err
    pipeline.atomic_write_json(dict(stage="chain", preset="small", seed=0, steps={}, done={}),
                          train_setup.chain_path(str(out)))
    with pytest.raises(SystemExit):
        tiny_chain(out, "--resume")
    assert "has preset 'small', not 'tiny'" in capsys.readouterr().err
    for flag in (["--recipe", "lr=1e-3"], ["--init", "checkpoints"], ["--unlabeled"]):
        expect_one_line_error(capsys, train.main, ["--stage", "all", *flag],
                              f"{flag[0]} applies to one stage: --stage all trains every stage by its recipe")


def test_resume_refuses_a_state_that_would_run_code(cache_dir, tmp_path, capsys):
    out = tmp_path / "crafted"
    shutil.copytree(cache_dir, out)
    tiny_image_run(out, 1)
    state = torch.load(out / "image-train.pt", weights_only=True)  # what train.py writes loads as plain data
    marker = tmp_path / "it-ran"
    torch.save({**state, "optimizer": RunsCode(marker)}, out / "image-train.pt")
    capsys.readouterr()
    expect_one_line_error(capsys, lambda argv: tiny_image_run(out, 2, "--resume"), None,
                          "holds more than tensors and plain values; refused")
    assert not marker.exists()


# --- issue 52: no file of another's written over, no hang, one run per folder, whole saves -----------------

def spoiled(folder, kind):
    """The path a case of OUTPUT_CASES needs made in `folder` before the command runs."""
    if kind == "txt-alone":
        (folder / "requirements.txt").write_text("torch\n")
    elif kind == "not-a-gif":
        (folder / "notes.gif").write_text("my notes\n")
    elif kind == "fifo":
        os.mkfifo(folder / "pipe.gif")
    elif kind == "txt-folder":
        (folder / "grid.gif").write_bytes(b"GIF89a")
        (folder / "grid.txt").mkdir()
    elif kind == "json-folder":
        (folder / "eval.gif").write_bytes(b"GIF89a")
        (folder / "eval.json").mkdir()


OUTPUT_CASES = [  # (main, argv with {t}: the test's folder and {c}: the checkpoints, what to spoil, the words)
    ("evaluate", ["--checkpoints", "{c}", "--stages", "video", "--num-samples", "1", "--out", "{c}/video.gif"], None,
     "a checkpoint folder this command reads"),
    ("sample", ["--checkpoints", "{c}", "--prompt", "1 and 2", "--prompt", "3 and 4", "--out", "{t}/requirements.gif"],
     "txt-alone", "requirements.txt exists, and this command writes its .txt beside"),
    ("sample", ["--checkpoints", "{c}", "--prompt", "1 and 2", "--out", "{t}/notes.gif"], "not-a-gif",
     "exists and is not a GIF file"),
    ("sample", ["--checkpoints", "{c}", "--prompt", "1 and 2", "--out", "{t}/pipe.gif"], "fifo",
     "is not a regular file"),
    ("sample", ["--checkpoints", "{c}", "--prompt", "1 and 2", "--prompt", "3 and 4", "--out", "{t}/grid.gif"],
     "txt-folder", "grid.txt is not a regular file"),
    ("evaluate", ["--checkpoints", "{c}", "--stages", "video", "--num-samples", "1", "--out", "{t}/eval.gif"],
     "json-folder", "eval.json is not a regular file"),
    ("sample", ["--checkpoints", "{c}", "--prompt", "1 and 2", "--out", "{c}/clip.gif"], None,
     "a checkpoint folder this command reads"),
]


@pytest.mark.parametrize("script,argv,kind,needle", OUTPUT_CASES, ids=[f"{c[0]}-{c[2]}" for c in OUTPUT_CASES])
def test_nothing_is_written_over_a_file_the_project_did_not_make(trained, tmp_path, capsys, script, argv, kind,
                                                                  needle):
    folder = tmp_path / "ckpt"
    shutil.copytree(trained, folder)
    spoiled(tmp_path, kind)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    main = {"sample": sample.main, "evaluate": evaluate.main}[script]
    expect_one_line_error(capsys, main, [a.format(t=tmp_path, c=folder) for a in argv], needle)
    assert before == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}


def test_a_refused_sample_makes_no_folder(tmp_path, capsys):
    expect_one_line_error(capsys, sample.main, ["--checkpoints", str(tmp_path / "none"), "--prompt", "1 and 2",
                                                "--out", str(tmp_path / "new" / "clip.gif")], "no video checkpoint")
    assert not (tmp_path / "new").exists()


def test_init_through_a_link_to_out_is_refused(trained, tmp_path, capsys):
    os.symlink(trained, tmp_path / "link")
    expect_one_line_error(capsys, train.main, ["--stage", "video", "--preset", "tiny", "--init", str(trained),
                                               "--out", str(tmp_path / "link"), "--overwrite"], "is --out itself")


def test_no_read_blocks_or_never_ends(trained, tmp_path, capsys):
    """A FIFO or a device where a file is read is refused at once; a JSON's sizes are checked by arithmetic."""
    expect_one_line_error(capsys, sample.main, ["--prompt-file", "/dev/zero"], "is not a regular file")
    fifo = tmp_path / "fifo"
    shutil.copytree(trained, fifo)
    os.remove(fifo / "video.json")
    os.mkfifo(fifo / "video.json")
    expect_one_line_error(capsys, sample.main, ["--checkpoints", str(fifo), "--prompt", "1 and 2", "--stages", "video",
                                                "--out", str(tmp_path / "a.gif")], "video.json is not a regular file")
    zero = tmp_path / "zero"
    shutil.copytree(trained, zero)
    os.remove(zero / "video.json")
    os.symlink("/dev/zero", zero / "video.json")
    expect_one_line_error(capsys, sample.main, ["--checkpoints", str(zero), "--prompt", "1 and 2", "--stages", "video",
                                                "--out", str(tmp_path / "b.gif")], "video.json is not a regular file")
    huge = tmp_path / "huge"
    shutil.copytree(trained, huge)
    meta = pipeline.checkpoint_meta(str(huge), "video")
    pipeline.atomic_write_json({**meta, "config": {**meta["config"], "res_blocks": 100000}}, str(huge / "video.json"))
    expect_one_line_error(capsys, sample.main, ["--checkpoints", str(huge), "--prompt", "1 and 2", "--stages", "video",
                                                "--out", str(tmp_path / "c.gif")], "res_blocks=100000 is outside")
    (tmp_path / "logged").mkdir()
    os.mkfifo(tmp_path / "logged" / "image.log")
    expect_one_line_error(capsys, train.main, ["--stage", "image", "--preset", "tiny", "--out",
                                               str(tmp_path / "logged")], "image.log is not a regular file")
    os.mkfifo(tmp_path / "state.pt")
    expect_one_line_error(capsys, train.main, ["--stage", "image", "--preset", "tiny", "--out", str(tmp_path / "run"),
                                               "--resume", str(tmp_path / "state.pt")], "is not a regular file")


def test_one_run_per_folder(cache_dir, tmp_path, capsys):
    """A live run's lock refuses a second run into its folder; a dead run's lock is taken over in one line, and
    the half-written files of its last save are removed."""
    out = tmp_path / "run"
    shutil.copytree(cache_dir, out)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / "train.lock").write_text(f"{sleeper.pid}\n")
        expect_one_line_error(capsys, lambda argv: tiny_image_run(*argv), [out, 2],
                              f"being written by another run (pid {sleeper.pid}")
    finally:
        sleeper.kill()
        sleeper.wait()
    (out / "image-train.pt.tmp").write_bytes(b"half")
    tiny_image_run(out, 2)
    err = capsys.readouterr().err
    assert f"its run (pid {sleeper.pid}) is gone; taking the folder over" in err
    assert not (out / "train.lock").exists() and not list(out.glob("*.tmp"))


def test_a_save_that_runs_out_of_room_keeps_the_last_pair(cache_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "full"
    shutil.copytree(cache_dir, out)
    tiny_image_run(out, 2)
    pair = {n: (out / n).read_bytes() for n in ("image.safetensors", "image.json", "image-train.pt")}
    real = pipeline.checkpoint_files

    def disk_fills(folder, *args):  # the state is written, the weights are not
        real(folder, *args)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(pipeline, "checkpoint_files", disk_fills)
    with pytest.raises(SystemExit) as info:
        tiny_image_run(out, 4, "--resume")
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert info.value.code == 1 and len(err) == 1 and "No space left on device" in err[0]
    assert "cannot save step 4" in err[0] and "last good checkpoint (step 2)" in err[0]
    assert pair == {n: (out / n).read_bytes() for n in pair} and not list(out.glob("*.tmp"))


def test_resume_states_are_checked_like_checkpoints(trained, tmp_path, capsys):
    state = torch.load(trained / "video-train.pt", weights_only=True)
    wide = mav.UNetConfig(**{**state["config"], "channels": [24, 48]})
    nan_model = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state["model"].items()}
    cases = [({"config": asdict_of(wide)}, "do not fit its config"), ({"config": "tiny"}, "a config of type str"),
             ({"model": nan_model}, "model weights that are not finite"), ({"step": -5}, "has step -5"),
             ({"rng_cpu": [torch.zeros(3, dtype=torch.uint8)]}, "no usable RNG state")]
    for change, needle in cases:
        torch.save({**state, **change}, tmp_path / "state.pt")
        expect_one_line_error(capsys, train.main, ["--stage", "video", "--preset", "tiny", "--out",
                                                   str(tmp_path / "run"), "--resume", str(tmp_path / "state.pt")],
                              needle)


def asdict_of(cfg):
    from dataclasses import asdict
    return asdict(cfg)


def test_text_caches_and_checkpoints_are_checked(cache_dir, trained, tmp_path, capsys):
    """A cache with rows missing or NaN values is made again (sampling embeds in memory); a checkpoint naming a
    text encoder not on this machine, or holding int8 weights, is refused in one line."""
    original = pipeline.load_text_cache(str(cache_dir))
    for spoil in ("short", "nan"):
        folder = tmp_path / spoil
        shutil.copytree(cache_dir, folder)
        path = pipeline.text_cache_path(str(folder), mav.DEFAULT_TEXT_ENCODER)
        t = safetensors.torch.load_file(path)
        t = {k: v[:5] for k, v in t.items()} if spoil == "short" else {**t, "tokens": t["tokens"] * float("nan")}
        safetensors.torch.save_file(t, path)
        read = pipeline.load_text_cache(str(folder), write=False)
        assert torch.equal(read.text.pooled, original.text.pooled) and "in memory" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    shutil.copytree(trained, foreign)
    meta = pipeline.checkpoint_meta(str(foreign), "video")
    pipeline.atomic_write_json({**meta, "text_encoder": "someone/else-v1"}, str(foreign / "video.json"))
    expect_one_line_error(capsys, sample.main, ["--checkpoints", str(foreign), "--prompt", "1 and 2", "--stages",
                                                "video", "--out", str(tmp_path / "f.gif")], "refused, not downloaded")
    ints = tmp_path / "ints"
    shutil.copytree(trained, ints)
    w = safetensors.torch.load_file(ints / "video.safetensors")
    name = next(iter(w))
    safetensors.torch.save_file({**w, name: w[name].to(torch.int8)}, ints / "video.safetensors")
    expect_one_line_error(capsys, sample.main, ["--checkpoints", str(ints), "--prompt", "1 and 2", "--stages", "video",
                                                "--out", str(tmp_path / "i.gif")], "is stored as torch.int8")


@pytest.mark.parametrize("main,argv", [(evaluate.main, ["--stages", "image"]),
                                       (bench.main, ["sample", "--stages", "image"])])
def test_scripts_that_make_videos_refuse_the_image_stage_alone(capsys, main, argv):
    expect_one_line_error(capsys, main, argv, "--stages image: single frames of the image model are sample.py's")
