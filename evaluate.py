"""
Score the cascade: the judge's figures of its videos, and each stage beside a simple baseline.

    python evaluate.py                        # 100 videos: judge scores beside real clips and the image model
    python evaluate.py --checkpoints checkpoints/cpu --stages video
    python evaluate.py interp                 # PSNR on held-out clips vs linear blending
    python evaluate.py sr                     # PSNR on held-out clips vs bicubic
    python evaluate.py animate | between | variation   # cli.py's picture modes on held-out clips

Each prints one JSON line; `videos` also writes a GIF of its first 16 videos, their prompts and the JSON
(output/eval_<stages>.gif, .txt, .json). What the figures mean: docs/EVALUATION.md. The judge that reads the
videos is judge.py's, trained like the cascade's networks: python train.py --stage judge.
"""
import json
import os
import time

import torch
import torch.nn.functional as F
from einops import rearrange
from tqdm import tqdm

import cli
import mav
import pipeline
from judge import PAIRS, Judge, build_judge, pair_index, score_videos


def load_judge(folder: str, device="cpu") -> Judge:
    """The judge of a checkpoint folder, or the shipped one where the folder has none of its own (a train.py
    run's folder, say). A one-line error where neither can be read."""
    if not os.path.exists(os.path.join(folder, "judge.json")):
        folder = cli.SHIPPED
    try:
        return pipeline.load_checkpoint(folder, "judge", device, build=build_judge)[0]
    except pipeline.CheckpointError as e:
        cli.die(str(e))


MODES = ["videos", "interp", "sr", "animate", "between", "variation"]


def parse_args(argv=None):
    p = cli.ArgumentParser(description="Score the Make-A-Video cascade on seeded prompts and held-out clips.",
                           formatter_class=cli.HelpFormatter)
    p.add_argument("what", nargs="?", default="videos", choices=MODES,
                   help="videos: judge scores of the cascade's samples beside real held-out clips and the image "
                        "model frame by frame; interp / sr: PSNR on held-out clips beside a simple baseline; "
                        "animate / between / variation: cli.py's picture modes on held-out clips")
    p.add_argument("--num-samples", type=int, default=None, help="videos or clips scored (default interp / sr 32, "
                                                                 "the others 100)")
    p.add_argument("--seed", type=int, default=0, help="prompts and clips are drawn from it")
    p.add_argument("--out", default=None, help="videos: the GIF of the first 16 (default output/eval_<stages>.gif)")
    cli.add_cascade_arguments(p.add_argument_group("the cascade"), stages_help="videos: comma-separated subset "
                                 "of video,interp,sr (default: every stage with a checkpoint)")
    cli.add_device_arguments(p.add_argument_group("hardware"))
    args = p.parse_args(argv)
    if args.num_samples is not None and not 1 <= args.num_samples <= cli.LIMITS["num_samples"]:
        p.error(f"--num-samples must be in 1 .. {cli.LIMITS['num_samples']}, got {args.num_samples}")
    args.num_samples = args.num_samples or {"interp": 32, "sr": 32}.get(args.what, 100)
    cli.check_cascade(p, args, needs_video=args.what == "videos", image_alone=False)
    if args.what == "videos" and args.out:
        try:
            check_out(args.out, args)
        except cli.InputError as e:
            p.error(str(e))
    args.device, args.precision, args.precision_why = cli.device_and_precision(args.device, args.precision, p.error)
    return args


def check_out(out: str, args):
    """The GIF of `videos` and its .txt and .json beside it: never over another's file, never in the folder read."""
    cli.check_output_path(out, cli.VIDEO_EXTS, sides=(".txt", ".json"), reading=(args.checkpoints, cli.SHIPPED))


def seeded_text(cache, labels, g, device):
    """Prompts naming `labels`, each digit a numeral or a word, and as many empty prompts."""
    n = len(labels)
    return cache(mav.prompt_ids(labels, g)).to(device), cache(torch.full((n,), mav.NULL_PROMPT)).to(device)


def evaluate_videos(args):
    """Judge scores of the cascade's samples, beside real held-out clips (the ceiling) and the
    image model sampled frame by frame with independent noise (the baseline)."""
    stages = cli.choose_stages(args)
    out = args.out or os.path.join("output", f"eval_{'_'.join(stages)}.gif")
    try:
        check_out(out, args)
    except cli.InputError as e:
        cli.die(str(e))
    models = cli.load_models(args, stages)
    judge = load_judge(args.checkpoints, args.device)
    n, chunk = args.num_samples, 16
    g = torch.Generator().manual_seed(args.seed)
    labels = torch.randint(10, (n, 2), generator=g)
    ids = mav.prompt_ids(labels, g)
    run = cli.cascade(args, models, stages)
    cache = run.cache
    text, null = cache(ids).to(args.device), cache(torch.full((n,), mav.NULL_PROMPT)).to(args.device)
    t0 = time.time()
    with cli.autocast(args.device, args.precision):
        made = [run.generate(text[i:i + chunk], null[i:i + chunk], g, **cli.cascade_options(args, quiet=True))
                for i in tqdm(range(0, n, chunk), desc=f"sampling {n} videos ({'+'.join(stages)})", leave=False)]
    fps = made[0][1]
    videos = torch.cat([mav.to_pixels(x)[:, 0] for x, _ in made]).cpu()
    seconds = time.time() - t0
    result = {"stages": "+".join(stages), "n": n, "frames": videos.shape[1], "size": videos.shape[-1],
              "steps": args.steps, "guidance": args.guidance,
              "image_expert": run.effective_image_expert(args.image_expert)}
    figures, real_features = judge_figures(args, judge, videos, labels, "interp" in stages)
    result.update(figures)
    if os.path.exists(os.path.join(args.checkpoints, "image.json")):  # 16 unrelated frames per "video"
        image_model = run.models["image"] if "image" in run.models else cli.load(args, "image")[0]  # loaded once
        result["baseline"] = image_model_baseline(args, judge, image_model, text, null, labels, g, real_features)
    result["seconds"] = round(seconds, 1)
    cli.write_video(out, cli.video_grid(videos[:16]), fps=fps)
    cli.write_text(os.path.splitext(out)[0] + ".txt", "\n".join(cache.prompts[i] for i in ids[:16].tolist()) + "\n")
    cli.write_text(os.path.splitext(out)[0] + ".json", json.dumps(result, indent=2))
    print(json.dumps(result))


def judge_figures(args, judge, videos, labels, interp: bool) -> tuple[dict, torch.Tensor]:
    """The judge's figures of `videos` (n f h w) at the base rate (and the full rate, after interp), beside
    real held-out clips at the same rate and size (the ceiling); FD against another draw of real clips
    (whose judge features are returned too)."""
    n = len(videos)
    base_rate = lambda v: v[:, ::mav.INTERP_FACTOR] if interp else v  # temporal figures comparable across stages
    data = mav.MovingMNIST("test")

    def real(seed):
        v, lab = data.sample(n, frames=videos.shape[1], stride=1 / mav.INTERP_FACTOR if interp else 1.0,
                             generator=torch.Generator().manual_seed(seed))
        return (v if videos.shape[-1] == mav.CANVAS else mav.area_downsample(v))[:, 0], lab

    reference = base_rate(real(args.seed + 2)[0])
    _, ref_feats = judge.read(reference.reshape(-1, 1, *reference.shape[-2:]))
    score = lambda v, lab: score_videos(judge, v, lab, ref_feats)[0]
    result = score(base_rate(videos), labels)
    if interp:  # the same figures at the full frame rate
        result["full_rate"] = score(videos, labels)
    ceiling, ceiling_labels = real(args.seed + 1)
    result["ceiling"] = score(base_rate(ceiling), ceiling_labels)
    return result, ref_feats


def image_model_baseline(args, judge, image_model, text, null, labels, g, real_features, chunk=16) -> dict:
    """The image model's frames, drawn independently (16 per prompt), scored as videos."""
    f, n = args.frames, len(labels)
    per_frame = lambda t: t[torch.arange(len(t)).repeat_interleave(f)]
    with cli.autocast(args.device, args.precision):
        frames = [mav.sample(image_model, (len(t) * f, 1, mav.BASE, mav.BASE), per_frame(t), per_frame(u),
                             steps=args.steps, guidance=args.guidance, sampler=args.sampler, generator=g)
                  for t, u in ((text[i:i + chunk], null[i:i + chunk]) for i in range(0, n, chunk))]
    videos = mav.to_pixels(torch.cat(frames).float()).view(n, f, mav.BASE, mav.BASE).cpu()
    return score_videos(judge, videos, labels, real_features)[0]


def in_chunks(fn, n: int, size: int, *tensors):
    """Run fn on slices of the batch (the first dim of every tensor and Text), then concatenate."""
    return torch.cat([fn(*(t[i:i + size] for t in tensors)) for i in range(0, n, size)])


def held_out_clips(stage: str, n: int, g, frames: int = mav.FRAMES):
    """n clips of held-out (test) digits as `stage` meets them, drawn from `g` -> (truth, given, labels), in
    [-1, 1]: interp: (frames - 1)·5 + 1 frames at 5x the rate, at 32², every 5th given; sr: frames at 64², given
    at 32²; otherwise (the video model, the picture modes): frames at 32², given as they are."""
    data = mav.MovingMNIST("test")
    if stage == "interp":
        video, labels = data.sample(n, frames=(frames - 1) * mav.INTERP_FACTOR + 1, stride=1.0 / mav.INTERP_FACTOR,
                                    generator=g)
        truth = mav.to_model(mav.area_downsample(video))
        return truth, truth[:, :, ::mav.INTERP_FACTOR], labels
    video, labels = data.sample(n, frames=frames, generator=g)
    low = mav.to_model(mav.area_downsample(video))
    return (mav.to_model(video), low, labels) if stage == "sr" else (low, low, labels)


def linear_blend(clip: torch.Tensor, factor: int = mav.INTERP_FACTOR) -> torch.Tensor:
    """The baseline interpolation: each in-between frame a cross-fade of its two known neighbours."""
    a, b = clip[:, :, :-1], clip[:, :, 1:]
    w = torch.arange(factor, device=clip.device, dtype=clip.dtype) / factor        # 0, 0.2, ..., 0.8
    mixed = a.unsqueeze(3) * (1 - w.view(1, 1, 1, -1, 1, 1)) + b.unsqueeze(3) * w.view(1, 1, 1, -1, 1, 1)
    mixed = rearrange(mixed, 'b c f k h w -> b c (f k) h w')                        # known frame, then 4 blends
    return torch.cat([mixed, clip[:, :, -1:]], dim=2)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of images in [0, 1], one value per batch entry."""
    mse = ((x - y) ** 2).flatten(1).mean(1).clamp(min=1e-10)
    return -10 * torch.log10(mse)


def evaluate_stage(args):
    """PSNR of interp or SR on held-out clips against the truth, beside its simple baseline."""
    stage = args.what
    model, meta = cli.load(args, stage)
    cache = pipeline.load_text_cache(args.checkpoints, meta["text_encoder"], write=False)
    n, dev = args.num_samples, args.device
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    truth, given, labels = held_out_clips(stage, n, g, args.frames)
    truth, given, (text, null) = truth.to(dev), given.to(dev), seeded_text(cache, labels, g, dev)
    if stage == "interp":  # 76 true frames at 5x the rate; every 5th is given, 60 are made
        made = in_chunks(lambda k, t, u: mav.interpolate(model, k, t, u, steps=args.interp_steps,
                                                         sampler=args.sampler, generator=g), n, 8, given, text, null)
        baseline = linear_blend(given)
        between = torch.arange(truth.shape[2]) % mav.INTERP_FACTOR != 0
        score = lambda x: psnr(mav.to_pixels(x[:, :, between]).cpu(), mav.to_pixels(truth[:, :, between]).cpu())
        names = ("psnr", "psnr_linear_blend")
        extra = {"frames": int(truth.shape[2]), "in_between_frames": int(between.sum()), "steps": args.interp_steps}
    else:  # 64² truth, its 32² area-downsampled version in, 64² out
        low = given
        made = in_chunks(lambda lo, t, u: mav.super_resolve(model, lo, t, u, framewise=args.sr == "framewise",
                                                            steps=args.sr_steps, sampler=args.sampler, generator=g),
                         n, 4, low, text, null)
        f = low.shape[2]
        bicubic = F.interpolate(rearrange(low, 'b c f h w -> (b f) c h w'), scale_factor=mav.SR_SCALE,
                                mode="bicubic", align_corners=False)
        baseline = rearrange(bicubic, '(b f) c h w -> b c f h w', f=f).clamp(-1, 1)
        score = lambda x: psnr(mav.to_pixels(x).cpu(), mav.to_pixels(truth).cpu())
        names = ("psnr", "psnr_bicubic")
        extra = {"frames": f, "mode": args.sr, "steps": args.sr_steps}
    result = {"eval": stage, "n": n, names[0]: round(score(made).mean().item(), 2),
              names[1]: round(score(baseline).mean().item(), 2), **extra, "preset": meta.get("preset"),
              "trained_steps": meta.get("step"), "seconds": round(time.time() - t0, 1)}
    print(json.dumps(result))


def evaluate_modes(args):
    """animate | between | variation on real held-out clips (base rate, 32²), each beside a baseline:
      animate    the first frame of a clip + its prompt -> judge scores and motion (mean |frame t+1 - frame t|),
                 beside the real clips and the first frame held still
      between    its first and last frames -> PSNR of the made middle frames against the true ones,
                 beside a linear cross-fade of the two ends
      variation  the clip with a prompt naming other digits, at strength 0.4 / 0.6 / 0.8 / 1 -> adherence to
                 the new prompt, to the clip's own digits, and PSNR to the input: the trade-off, row by row"""
    mode = args.what
    model, meta = cli.load(args, "video" if mode == "variation" else "interp")
    image_expert = args.image_expert if os.path.exists(os.path.join(args.checkpoints, "image.json")) else 0.0
    if image_expert:  # the image model as each made frame's expert, as the cascade samples (mav.py §10)
        model = mav.ImageExpert(model, cli.load(args, "image")[0], image_expert)
    judge = load_judge(args.checkpoints, args.device)
    cache = pipeline.load_text_cache(args.checkpoints, meta["text_encoder"], write=False)
    n, dev, f = args.num_samples, args.device, args.frames
    g = torch.Generator().manual_seed(args.seed)
    real, _, labels = held_out_clips(mode, n, g, f)
    real = real.to(dev)                                                      # n 1 f 32 32
    null = cache(torch.full((n,), mav.NULL_PROMPT)).to(dev)
    pixels = lambda x: mav.to_pixels(x.float())[:, 0].cpu()                 # n f h w in [0, 1]
    fp32 = lambda: torch.autocast(torch.device(dev).type, enabled=False)  # the judge reads as in `videos`

    def score(x, lab):
        with fp32():
            return score_videos(judge, pixels(x), lab)[0]
    mean_psnr = lambda x, y: round(psnr(pixels(x), pixels(y)).mean().item(), 2)
    kw = dict(steps=args.steps, guidance=args.guidance, sampler=args.sampler, generator=g)
    t0 = time.time()
    result = {"eval": mode, "n": n, "frames": f, "steps": args.steps, "guidance": args.guidance,
              "image_expert": image_expert, "seed": args.seed}
    with cli.autocast(args.device, args.precision):
        if mode == "variation":
            result["rows"] = variation_rows(model, cache, real, labels, null, score, mean_psnr, g, **kw)
        else:
            text = cache(mav.prompt_ids(labels, g)).to(dev)
            result.update(animated_figures(mode, model, real, labels, text, null, score, mean_psnr, **kw))
    result.update(preset=meta.get("preset"), trained_steps=meta.get("step"), seconds=round(time.time() - t0, 1))
    print(json.dumps(result))


def animated_figures(mode, model, real, labels, text, null, score, mean_psnr, **kw) -> dict:
    """animate: the clips made from their first frames; between: from their first and last frames."""
    n, f = len(real), real.shape[2]
    if mode == "animate":
        made = in_chunks(lambda first, t, u: mav.animate(model, first, t, u, frames=f, **kw),
                         n, 16, real[:, :, 0], text, null)
        return dict(animated=score(made, labels), real=score(real, labels),
                    still=score(real[:, :, :1].expand_as(real), labels))
    made = in_chunks(lambda first, last, t, u: mav.animate(model, first, t, u, frames=f, last=last, **kw),
                     n, 16, real[:, :, 0], real[:, :, -1], text, null)
    w = torch.linspace(0, 1, f, device=real.device).view(1, 1, f, 1, 1)
    blend = real[:, :, :1] * (1 - w) + real[:, :, -1:] * w
    middle = slice(1, f - 1)
    per_frame = lambda x: [mean_psnr(x[:, :, i:i + 1], real[:, :, i:i + 1]) for i in range(1, f - 1)]
    return dict(psnr=mean_psnr(made[:, :, middle], real[:, :, middle]),
                psnr_linear_blend=mean_psnr(blend[:, :, middle], real[:, :, middle]),
                psnr_per_frame=per_frame(made), psnr_linear_blend_per_frame=per_frame(blend),
                made=score(made, labels), real=score(real, labels))


def variation_rows(model, cache, real, labels, null, score, mean_psnr, g, **kw) -> list[dict]:
    """Each clip with a prompt naming another pair of digits than its own (so following the prompt means
    changing the clip), at strength 0 (the input) / 0.4 / 0.6 / 0.8 / 1 (a fresh sample)."""
    n = len(real)
    shift = torch.randint(1, len(PAIRS), (n,), generator=g)
    other = torch.tensor(PAIRS)[(pair_index(labels) + shift) % len(PAIRS)]
    text = cache(mav.prompt_ids(other, g)).to(real.device)
    stride = torch.ones(n, device=real.device)
    rows = [{"strength": 0.0, "adherence_new_prompt": score(real, other)["adherence"],
             "adherence_own_digits": score(real, labels)["adherence"], "psnr_to_input": None}]
    for strength in (0.4, 0.6, 0.8, 1.0):
        made = in_chunks(lambda x, t, u, r: mav.sample(model, x.shape, t, u, init=x, strength=strength,
                                                       stride=r, **kw), n, 16, real, text, null, stride)
        new, own = score(made, other), score(made, labels)
        rows.append({"strength": strength, "adherence_new_prompt": new["adherence"],
                     "adherence_own_digits": own["adherence"], "psnr_to_input": mean_psnr(made, real),
                     "switch_rate": new["switch_rate"], "motion": new["motion"]})
    return rows


def main(argv=None):
    args = parse_args(argv)
    print(f"device: {args.device}, precision: {args.precision} ({args.precision_why})")
    if args.what == "videos":
        return evaluate_videos(args)
    return evaluate_stage(args) if args.what in ("interp", "sr") else evaluate_modes(args)


if __name__ == "__main__":
    main()
