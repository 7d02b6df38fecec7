"""The whole-frame interp and SR networks shipped until 7 Dec, as the first weights of today's residual ones
(docs/TRAINING.md, "How the shipped interp and SR were made").

Until 7 Dec the GPU-trained interp and SR made whole frames: interp from 2 conditioning channels (the known
frames, the mask), SR from a bilinear upsampling, and the stride embedding was stored as `fps_embed`. Today's
make the difference to a guess (interp gets the blend as a third channel; SR's guess is bicubic). This writes
today's network with the old one's weights: the keys renamed, interp's input convolution given a zero weight
for the blend channel; a short CPU run (train.py --init) then teaches it the difference. It reads the files
themselves, so it needs nothing of the old format in the code:

    mkdir -p runs/old && for f in interp sr; do for e in safetensors json; do
        git show 02c3de8:checkpoints/$f.$e > runs/old/$f.$e; done; done
    python docs/residual_init.py runs/old runs/residual_init
    python train.py --stage sr --preset base --init runs/residual_init --out runs/residual --steps 1300 \\
        --recipe lr=5e-4 warmup=50
"""
import argparse
import os

import torch
from safetensors.torch import load_file

import study  # noqa: E402,F401  (the repository on the import path)
import mav  # noqa: E402
import pipeline  # noqa: E402


def residual_weights(old: dict, model: mav.UNet) -> dict:
    """An old whole-frame network's state dict -> `model`'s: fps_embed.* named stride_embed.*, and an input
    convolution with fewer conditioning channels padded with zero weights (a channel it never read)."""
    state = {("stride_embed." + k[len("fps_embed."):] if k.startswith("fps_embed.") else k): v.float()
             for k, v in old.items()}
    key = "conv_in.spatial.weight"                          # (out, z + conditioning channels, 3, 3)
    old_in, new_in = state[key], model.state_dict()[key]
    state[key] = torch.cat([old_in, old_in.new_zeros(new_in.shape[0], new_in.shape[1] - old_in.shape[1], 3, 3)], 1)
    return state


def convert(source: str, out: str, stage: str):
    meta = pipeline.read_json(os.path.join(source, stage + ".json"))
    model = pipeline.network({**meta["config"], "cond_channels": mav.STAGES[stage].unet["cond_channels"]})
    pipeline.load_weights(model, residual_weights(load_file(os.path.join(source, stage + ".safetensors")), model))
    kept = {k: meta[k] for k in ("preset", "text_encoder") if k in meta}
    pipeline.save_checkpoint(out, stage, model, {**kept, "step": 0, "made_from": f"{source}/{stage}, whole frames, "
                                                 f"{meta.get('step', 0) + meta.get('init_step', 0)} steps"})
    weights = sum(p.numel() for p in model.parameters())
    print(f"{stage}: {source}/{stage} -> {out}/{stage} ({weights / 1e6:.2f}M parameters)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="a folder with the old interp and SR checkpoints")
    p.add_argument("out", help="where today's networks are written")
    p.add_argument("--stages", nargs="+", default=["interp", "sr"], choices=["interp", "sr"])
    args = p.parse_args(argv)
    for stage in args.stages:
        convert(args.source, args.out, stage)


if __name__ == "__main__":
    main()
