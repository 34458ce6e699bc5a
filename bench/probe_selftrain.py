"""Probe: does a head trained on the training-free maps' pseudo-masks beat those maps? (issue 10, item 2)

Self-training in the spirit of PSOL (Zhang et al., CVPR 2020): the frozen ImageNet EfficientNet-Lite0
features at the training-free labelers' setting (last MBConv block, plain stride 16, 14x14 at 224), the
DDT and RPS maps of the collection, and a 1x1-conv (linear) head trained on their pseudo-masks with
binary cross-entropy (Adam, lr 1e-3, weight decay 1e-4, 300 steps of 64 images, horizontal flips
on every other step). Rows:

- ``ddt`` / ``rps``: the training-free maps themselves (the floor), at their default τ;
- ``self_ddt``: head trained on DDT's sign (foreground = projection > 0), pixels with |projection| below
  half its standard deviation ignored; map = ReLU(logit);
- ``self_fused``: head trained where DDT and RPS agree (both above 15% of their image's maximum = 1,
  both at zero = 0, the rest ignored); map = sigmoid(logit).
- ``lda_l{λ}_r{R}``: the product's self-trained head (``coloc_core.fits.fit_selftrain``): Fisher's
  discriminant with shrinkage λ, R rounds, ±0.5σ band; map = ReLU(w·F + b). Deterministic (the seeds
  do not change it).
- ``qda_l1_r3``: the product's default since the quadratic last round: two linear rounds, then the
  quadratic discriminant on the second head's labels; map = √ReLU(FᵀQF + w·F + b).

Each row reports CorLoc@0.5 at τ ∈ {0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5} and MaxBoxAccV2 (SPEC §6, on the
stored uint8 heatmap). Not a product path: it measures whether this route is worth building.

    python bench/probe_selftrain.py --set raccoon --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch
import torch.nn.functional as F
from experiments import load_set

from coloc_core.backbones import build_backbone
from coloc_core.boxes import boxes_at_thresholds, iou_matrix, scoremap_from_attention
from coloc_core.config import CAM_CURVE_INTERVAL, IOU_THRESHOLDS
from coloc_core.fits import (
    class_statistics,
    ddt_from_statistics,
    feature_statistics,
    fit_selftrain,
    rps_from_statistics,
)
from coloc_core.heatmap import dequantize_heatmap, quantize_heatmap
from coloc_core.metrics import MaxBoxAccAccumulator
from coloc_core.model import normalize_images

TAUS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


def evaluate(maps: torch.Tensor, gts: list[np.ndarray]) -> dict[str, float]:
    maxbox = MaxBoxAccAccumulator(IOU_THRESHOLDS, CAM_CURVE_INTERVAL, multi_contour=True)
    hits = np.zeros(len(TAUS))
    for attn, gt in zip(maps.numpy(), gts, strict=True):
        scoremap = scoremap_from_attention(dequantize_heatmap(quantize_heatmap(attn)))
        maxbox.update(scoremap, gt)
        for t, box in enumerate(boxes_at_thresholds(scoremap, TAUS, multi_contour=False)):
            hits[t] += iou_matrix(np.asarray(box).reshape(-1, 4)[:1], gt).max() >= 0.5
    out = {f"corloc@0.5_tau{t:g}": float(100 * h / len(gts)) for t, h in zip(TAUS, hits, strict=True)}
    out["maxboxaccv2"] = maxbox.compute()["maxboxaccv2"]
    return out


def train_head(x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = torch.nn.Conv2d(x.shape[1], 1, 1)
    opt = torch.optim.Adam(head.parameters(), 1e-3, weight_decay=1e-4)
    for step in range(300):
        idx = torch.randperm(len(x), generator=gen)[:64]
        xb, tb, wb = x[idx], target[idx], weight[idx]
        if step % 2:
            xb, tb, wb = xb.flip(-1), tb.flip(-1), wb.flip(-1)
        loss = (F.binary_cross_entropy_with_logits(head(xb)[:, 0], tb, reduction="none") * wb).sum()
        opt.zero_grad()
        (loss / wb.sum().clamp_min(1)).backward()
        opt.step()
    with torch.no_grad():
        return head(x)[:, 0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--set", default="raccoon", help="raccoon | kangaroo, or a name for --data")
    parser.add_argument("--data", default="", help="any boxed set instead (read with --format/--split)")
    parser.add_argument("--format", default="boxes_csv")
    parser.add_argument("--split", default="all")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    if args.data:
        data = load_set(args.set, 224, root=args.data, fmt=args.format, split=args.split)
    else:
        data = load_set(args.set, 224)
    net = build_backbone("efficientnet_lite0", dilate=False).eval()
    with torch.inference_mode():
        feats = torch.cat(
            [
                net.features_at(normalize_images(data.images[i : i + 32], net.mean, net.std), "pre_head")
                for i in range(0, len(data.images), 32)
            ]
        ).float()
    st = feature_statistics(feats)
    mean, vector = ddt_from_statistics(st)
    proj = torch.einsum("bchw,c->bhw", feats - mean.view(1, -1, 1, 1), vector)
    w = rps_from_statistics(st["sum_gap"], int(st["images"]), st["sum_unit"], int(st["count"]))
    cos = torch.einsum("bchw,c->bhw", F.normalize(feats, dim=1), w)
    x = (feats - feats.mean(dim=(0, 2, 3), keepdim=True)) / (feats.std(dim=(0, 2, 3), keepdim=True) + 1e-6)
    rows: dict[str, list[dict[str, float]]] = {
        "ddt": [evaluate(proj.clamp_min(0), data.gt_224)],
        "rps": [evaluate(cos.clamp_min(0), data.gt_224)],
    }
    dn = proj.clamp_min(0) / proj.clamp_min(0).amax(dim=(1, 2), keepdim=True).clamp_min(1e-6)
    rn = cos.clamp_min(0) / cos.clamp_min(0).amax(dim=(1, 2), keepdim=True).clamp_min(1e-6)
    both = (dn > 0.15) & (rn > 0.15)
    for seed in (int(s) for s in args.seeds.split(",")):
        logit = train_head(x, (proj > 0).float(), (proj.abs() > 0.5 * proj.std()).float(), seed)
        rows.setdefault("self_ddt", []).append(evaluate(logit.clamp_min(0), data.gt_224))
        logit = train_head(x, both.float(), (both | ((dn <= 0) & (rn <= 0.05))).float(), seed)
        rows.setdefault("self_fused", []).append(evaluate(torch.sigmoid(logit), data.gt_224))
    chunks = feats.split(32)

    def summed(parts):  # noqa: ANN001, ANN202
        out: dict[str, torch.Tensor] = {}
        for part in parts:
            for key, value in part.items():
                out[key] = value if key not in out else out[key] + value
        return out

    def class_pass(weight, bias, level):  # noqa: ANN001, ANN202
        return summed(class_statistics(chunk, weight, bias, level) for chunk in chunks)

    for shrinkage in (0.1, 1.0):
        for rounds in (1, 2, 3, 4):
            weight, bias, _, _ = fit_selftrain(
                st, class_pass, rounds=rounds, shrinkage=shrinkage, quadratic=False
            )
            head_map = torch.relu(torch.einsum("bchw,c->bhw", feats, weight) + bias)
            rows[f"lda_l{shrinkage:g}_r{rounds}"] = [evaluate(head_map, data.gt_224)]
    weight, bias, square, _ = fit_selftrain(st, class_pass)
    assert square is not None  # the quadratic fit is the default
    pixels = feats.permute(0, 2, 3, 1)
    llr = ((pixels @ square) * pixels).sum(-1) + pixels @ weight + bias
    rows["qda_l1_r3"] = [evaluate(torch.sqrt(torch.relu(llr)), data.gt_224)]
    summary = {
        name: {
            k: f"{np.mean([r[k] for r in runs]):.2f}"
            + (f" ± {np.std([r[k] for r in runs], ddof=1):.2f}" if len(runs) > 1 else "")
            for k in runs[0]
        }
        for name, runs in rows.items()
    }
    print(
        json.dumps(
            {
                "command": "python bench/probe_selftrain.py "
                + " ".join(sys.argv[1:] if argv is None else argv),
                "set": args.set,
                "rows": summary,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
