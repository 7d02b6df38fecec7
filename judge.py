"""
The judge: a small digit-count classifier that reads generated frames, and the figures it reads off a video.

Trained like the cascade's networks (python train.py --stage judge), on real single frames of training
digits; evaluate.py scores the cascade with it. What the figures mean: docs/EVALUATION.md.
"""
import itertools
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

import mav

# The paper scores with FVD and CLIP similarity; on Moving MNIST we can ask the
# question directly: does the video show the two digits its prompt names, and
# do they stay the same digits as they move? A small CNN, the judge, is
# trained on real single frames (training digits only) to say, for each digit
# class, how many copies (0, 1 or 2) a 32x32 frame holds. The pair a frame
# shows is the unordered pair with the highest joint probability under those
# counts. Light augmentation (intensity, noise, blur) lets it read imperfect
# generated frames fairly; 64² frames are area-downsampled first, so one judge
# scores every stage.
#
# From the per-frame reads (score_videos):
#   adherence       the video's majority pair equals the prompt's pair
#   frame_accuracy  a frame's pair equals the prompt's pair
#   consistency     fraction of a video's frames that agree with its majority
#   switch_rate     consecutive frames whose read pair differs (identity kept?),
#                   split into momentary_switch_rate (the read leaves its pair for 1-2
#                   frames and returns: a blur where digits cross) and lasting_switch_rate
#                   (every other switch: the pair stays changed, a digit became another)
#   motion          mean |x(t+1) − x(t)| over pixels in [0, 1] (0: a still)
#   motion_lag_ratio  motion ÷ mean |x(t+8) − x(t)|: smooth motion ≪ 1,
#                   a flickering slideshow ≈ 1
#   jump_rate       consecutive frames where ink appears farther from all of the
#                   frame before's ink than a real digit moves in a frame (a digit
#                   jumped, or appeared from nothing)
#   vanish_rate     consecutive frames where ink of a frame has none of the next
#                   frame's ink that near (a digit jumped away, or vanished)
#   fd              Fréchet distance between judge features of the frames and
#                   of real held-out frames
# A majority vote alone cannot tell 16 unrelated frames from a video; the
# switch rate and the lag ratio can. Neither sees a model that draws good
# frames but places its digits anew in each: the jump and vanish rates do.

PAIRS = [(a, b) for a in range(10) for b in range(a, 10)]  # the 55 unordered digit pairs


def pair_counts(pairs: torch.Tensor) -> torch.Tensor:
    """(n 2) digit pairs -> (n 10) how many of each digit."""
    return F.one_hot(pairs, 10).sum(1)


PAIR_COUNTS = pair_counts(torch.tensor(PAIRS))  # 55 10


def pair_index(pairs: torch.Tensor) -> torch.Tensor:
    """(n 2) digit pairs, any order -> (n,) index into PAIRS."""
    a, b = pairs.min(1).values, pairs.max(1).values
    return a * 10 - a * (a - 1) // 2 + (b - a)


@dataclass
class JudgeConfig:
    width: int = 32       # channels of the first block (x2, x4 in the next two)
    features: int = 128   # width of the feature vector (what the Fréchet distance compares)


class Judge(nn.Module):
    """A 32² frame -> for each digit class, the logits of it appearing 0, 1 or 2 times."""

    def __init__(self, cfg: JudgeConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        block = lambda i, o: [nn.Conv2d(i, o, 3, padding=1), mav.group_norm(o), nn.SiLU(),
                              nn.Conv2d(o, o, 3, padding=1), mav.group_norm(o), nn.SiLU(), nn.MaxPool2d(2)]
        self.body = nn.Sequential(*block(1, w), *block(w, 2 * w), *block(2 * w, 4 * w),   # 32 -> 4
                                  nn.Flatten(), nn.Linear(4 * w * 16, cfg.features), nn.SiLU())
        self.head = nn.Linear(cfg.features, 10 * 3)

    def features(self, frames):  # (n 1 32 32) in [0, 1] -> (n features)
        return self.body(frames * 2 - 1)

    def forward(self, frames):   # -> (n 10 3) logits
        return rearrange(self.head(self.features(frames)), 'n (d k) -> n d k', k=3)

    @torch.no_grad()
    def read(self, frames, batch: int = 1024):
        """(n 1 h w) in [0, 1], 32² or 64² -> (pair index (n,), features (n feat))."""
        if frames.shape[-1] != mav.BASE:
            frames = mav.area_downsample(frames)
        device = next(self.parameters()).device
        pairs, feats = [], []
        onehot = F.one_hot(PAIR_COUNTS, 3).float().to(device)                       # 55 10 3
        for chunk in frames.split(batch):
            f = self.features(chunk.to(device))
            logp = self.head(f).view(-1, 10, 3).float().log_softmax(-1)
            pairs.append(torch.einsum('ndk,pdk->np', logp, onehot).argmax(1).cpu())  # most likely pair
            feats.append(f.float().cpu())
        return torch.cat(pairs), torch.cat(feats)


def augment(frames: torch.Tensor) -> torch.Tensor:
    """Judge training: random intensity, slight blur and noise on (n 1 h w) frames in [0, 1]."""
    n = len(frames)
    gain = 0.6 + 0.6 * torch.rand(n, 1, 1, 1, device=frames.device)
    k = torch.tensor([1.0, 2.0, 1.0], device=frames.device)
    kernel = (k[:, None] * k[None]) / 16
    blurred = F.conv2d(F.pad(frames, (1, 1, 1, 1), mode="replicate"), kernel.view(1, 1, 3, 3))
    blur = (torch.rand(n, 1, 1, 1, device=frames.device) < 0.5).float() * torch.rand(n, 1, 1, 1, device=frames.device)
    x = (frames * (1 - blur) + blurred * blur) * gain
    x = x + torch.randn_like(x) * 0.08 * torch.rand(n, 1, 1, 1, device=frames.device)
    return x.clamp(0, 1)


def training_loss(judge: Judge, data: mav.MovingMNIST, recipe, text=None, unlabeled=False):
    """train.py's loss of the judge stage, with the cascade's stages' signature (mav.STAGE_LOSSES): a fresh
    batch of real single frames, augmented; it reads no text."""
    video, labels = data.sample(recipe.batch, frames=1)
    return judge_loss(judge, augment(mav.area_downsample(video)[:, :, 0]), labels)


def judge_loss(judge: Judge, frames: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the digit counts, for frames (n 1 32 32) in [0, 1] and labels (n 2)."""
    logits = judge(frames)
    return F.cross_entropy(logits.reshape(-1, 3).float(), pair_counts(labels).reshape(-1))


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||μa − μb||² + tr(Σa + Σb − 2 (Σa Σb)^½) between feature sets (n d), in float64."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    vals, vecs = torch.linalg.eigh(cov_a)
    root_a = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()  # tr (Σa Σb)^½
    return ((mu_a - mu_b) ** 2).sum().item() + (cov_a.trace() + cov_b.trace() - 2 * cross).item()


def score_videos(judge: Judge, videos: torch.Tensor, pairs: torch.Tensor, real_features=None) -> dict:
    """videos (n f h w) in [0, 1], prompt pairs (n 2) -> the figures above (fd if real_features given)."""
    n, f = videos.shape[:2]
    read, feats = judge.read(rearrange(videos, 'n f h w -> (n f) 1 h w'))
    read = read.view(n, f).cpu()
    target = pair_index(pairs.cpu())
    majority = read.mode(dim=1).values
    diff = lambda lag: (videos[:, lag:] - videos[:, :-lag]).abs().mean().item()
    result = {
        "adherence": (majority == target).float().mean().item(),
        "frame_accuracy": (read == target[:, None]).float().mean().item(),
        "consistency": (read == majority[:, None]).float().mean().item(),
        "switch_rate": (read[:, 1:] != read[:, :-1]).float().mean().item(),
        **switch_kinds(read),
        **jump_rates(videos),
        "motion": diff(1),
        "motion_lag_ratio": diff(1) / max(diff(8), 1e-8) if f > 8 else float("nan"),
        "n": n,
    }
    if real_features is not None:
        result["fd"] = frechet_distance(feats, real_features)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}, feats


def switch_kinds(read: torch.Tensor, blip: int = 2) -> dict:
    """read (n f): the pair read off each frame -> the switch rate split in two. A run of at most `blip`
    frames between two runs of one same pair is a momentary excursion: both switches around it are
    momentary (a switch between two such runs, as in A B A B A, is counted once). Every other switch is
    lasting. The two rates add up to switch_rate."""
    momentary = 0
    for seq in read.tolist():
        runs = [(value, len(list(group))) for value, group in itertools.groupby(seq)]  # run-length code
        starts = list(itertools.accumulate([0] + [length for _, length in runs]))   # where each run begins
        momentary += len({switch for k in range(1, len(runs) - 1)                  # a switch: where a run begins
                          if runs[k][1] <= blip and runs[k - 1][0] == runs[k + 1][0]
                          for switch in (starts[k], starts[k + 1])})
    switches, pairs = (read[:, 1:] != read[:, :-1]).sum().item(), read[:, 1:].numel()
    return {"momentary_switch_rate": momentary / pairs, "lasting_switch_rate": (switches - momentary) / pairs}


# A real digit moves 1-2 pixels a frame at 32² (MovingMNIST's 2-4 at 64²): ink of one frame always lies within
# JUMP_RADIUS pixels (a square neighbourhood) of ink of the frame before. INK is where a pixel counts as ink, and
# JUMP_SHARE the share of a frame's ink that must break the rule for the pair of frames to count (blur and specks
# of a sampled frame stay below it).
JUMP_RADIUS, INK, JUMP_SHARE = 3, 0.5, 0.2


def jump_rates(videos: torch.Tensor) -> dict:
    """videos (n f h w) in [0, 1] -> jump_rate and vanish_rate (see the figures above), read at 32²."""
    ink = (mav.area_downsample(videos) if videos.shape[-1] != mav.BASE else videos) > INK          # n f 32 32
    near = F.max_pool2d(ink.float(), 2 * JUMP_RADIUS + 1, stride=1, padding=JUMP_RADIUS) > 0        # dilated ink
    stray = lambda ink_of, near_of: ((ink_of & ~near_of).sum((-2, -1))
                                     > JUMP_SHARE * ink_of.sum((-2, -1)).clamp(min=1))              # n f-1
    return {"jump_rate": stray(ink[:, 1:], near[:, :-1]).float().mean().item(),    # new ink far from the old
            "vanish_rate": stray(ink[:, :-1], near[:, 1:]).float().mean().item()}  # old ink far from the new


def judge_accuracy(judge: Judge, videos: int = 200, frames: int = 16, seed: int = 0, device="cpu") -> dict:
    """The judge on real held-out clips: pair accuracy per frame and per video (majority vote)."""
    video, labels = mav.MovingMNIST("test", device).sample(videos, frames, generator=torch.Generator(device).manual_seed(seed))
    scores, _ = score_videos(judge.eval(), mav.area_downsample(video)[:, 0], labels)
    return {"frame_accuracy": scores["frame_accuracy"], "video_accuracy": scores["adherence"]}


def build_judge(config: dict) -> Judge:
    """The judge a checkpoint's config describes (pipeline.load_checkpoint's `build`)."""
    return Judge(JudgeConfig(**config))

