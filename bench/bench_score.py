"""Does the box score rank boxes, and does it flag images without the object? (issue 10, item 3)

Generates ``--n`` synthetic images with a bird and ``--n`` background-only images (the same renderer,
no bird; ``--without`` keeps fewer of them, e.g. 30 for a collection with 17% empty images), labels
all of them with a training-free labeler exactly as ``coloc label`` does (the fitted model's map →
the stored uint8 heatmap → SPEC §6 box at the model's τ → ``box_score``), and reports:

- on the images with a bird: Spearman(score, IoU) and CorLoc@0.5 of the top- and bottom-scored halves;
- over all images: the ROC AUC of the score for "has a bird" (0.5 = no better than chance), and the
  median score of each group;
- the same for the score's terms alone (``compactness_``: the score before issue 10;
  ``stability_``), for their product, and for the score without the typicality term
  (``no_typicality_``: the score before 2026-12-01).

The fitted labelers' score has the typicality term: the collection's box sizes are measured as the
fit does (``pipelines.label_fit.typical_box``: at most 200 images spread evenly over the collection,
boxes at τ); CAAM has none.

    python bench/bench_score.py --method ddt --n 150 --seed 0
    python bench/bench_score.py --method selftrain --n 150 --without 30 --seed 0

The DDT/RPS statistics (and the self-trained head's) are fitted on all images, with and without birds, as ``coloc label`` would on
such a mixed collection. No Ray: this measures the score, not the pipeline. Its head is the Lite0 head
at 224 (no seed); the product's default head (EfficientNet-Lite2 seeded by Lite0's DDT, fit at 320,
labels at 480) is measured through the product's own commands instead: ``--write`` puts the same
collection in a folder as image files, and ``--predictions`` scores a labeling run over it::

    python bench/bench_score.py --n 150 --seed 0 --write /tmp/empty
    coloc train --data /tmp/empty/images --format folder --run.storage_path=/tmp/R --run.name=empty
    coloc label --model /tmp/R/empty/model.pt --images /tmp/empty/images --out /tmp/O
    python bench/bench_score.py --n 150 --seed 0 --write /tmp/empty --predictions /tmp/O
"""

from __future__ import annotations

import argparse
import functools
import json
import operator
import sys
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from coloc_core.box_score import (
    TYPICAL_BOX_IMAGES,
    box_area_share,
    box_compactness,
    box_score,
    box_size_statistics,
    box_stability,
    evenly_spread,
)
from coloc_core.boxes import (
    SCOREMAP_SIZE,
    boxes_from_scoremap,
    iou_matrix,
    resize_boxes,
    scoremap_from_attention,
)
from coloc_core.datasets import BOXES_CSV_COLUMNS
from coloc_core.fits import (
    class_statistics,
    ddt_from_statistics,
    feature_statistics,
    fit_selftrain,
    rps_from_statistics,
)
from coloc_core.heatmap import dequantize_heatmap, quantize_heatmap
from coloc_core.localizer import (
    DEFAULT_THRESHOLDS,
    CAAMLocalizer,
    baseline_payload,
    localizer_from_payload,
)
from coloc_core.model import normalize_images
from coloc_core.synthetic import render_synthetic_sample


def render_samples(n: int, seed: int) -> list:
    """The 2n rendered samples, birds at even indices and bird-free backgrounds at odd ones."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(2 * n):
        w, h = int(rng.integers(160, 321)), int(rng.integers(160, 321))
        samples.append(render_synthetic_sample(rng, w, h, with_object=i % 2 == 0))
    return samples


def render(n: int, seed: int, size: int = 224) -> tuple[torch.Tensor, list, np.ndarray]:
    images, boxes, has = [], [], []
    for i, sample in enumerate(render_samples(n, seed)):
        with_object = i % 2 == 0
        w, h = sample.image.size
        images.append(np.asarray(sample.image.resize((size, size))))
        boxes.append(resize_boxes(np.asarray([sample.box]), (h, w), SCOREMAP_SIZE) if with_object else None)
        has.append(with_object)
    return torch.from_numpy(np.stack(images)), boxes, np.asarray(has)


def write_collection(folder: str, n: int, without: int, seed: int) -> None:
    """Write the collection as image files for the product's commands (``--write``).

    ``images/bird_NNNN.png`` and ``images/none_NNNN.png`` (the render's index), and ``boxes.csv``
    with the birds' boxes (the ``boxes_csv`` reader's layout).
    """
    root = Path(folder)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = [",".join(BOXES_CSV_COLUMNS)]
    for i, sample in enumerate(render_samples(n, seed)):
        if i % 2 == 1 and i // 2 >= without:
            continue
        name = f"images/{'bird' if i % 2 == 0 else 'none'}_{i:04d}.png"
        sample.image.save(root / name)
        if i % 2 == 0:
            w, h = sample.image.size
            lines.append(",".join(str(v) for v in (name, w, h, *sample.box)))
    (root / "boxes.csv").write_text("\n".join(lines) + "\n")


def read_predictions(predictions: str, folder: str) -> dict[str, float | int]:
    """The score's ranking and bird-vs-background AUC of a ``coloc label`` run over a ``--write`` folder."""
    from pipelines import schema  # noqa: PLC0415
    from pipelines.evaluate import path_key, read_ground_truth  # noqa: PLC0415
    from pipelines.predictions import part_files  # noqa: PLC0415

    truth = read_ground_truth(folder, "boxes_csv", "all").boxes  # the birds' boxes, by path_key
    scores, ious, has = [], [], []
    for uri in part_files(predictions):
        for row in schema.read_table(uri).to_pylist():
            name = Path(row[schema.PATH]).name
            if row[schema.ERROR] is not None or not name.startswith(("bird_", "none_")):
                continue
            scores.append(float(row[schema.SCORE]))
            has.append(name.startswith("bird_"))
            if not has[-1]:
                ious.append(np.nan)
            elif row[schema.X0] is None:  # no box (a constant map): a miss
                ious.append(0.0)
            else:
                box = np.array([[row[c] for c in schema.BOX_COLUMNS]], dtype=np.float64)
                gt = np.asarray(truth[path_key(row[schema.PATH])], dtype=np.float64).reshape(-1, 4)
                ious.append(float(iou_matrix(box, gt).max()))
    has_a, ious_a = np.asarray(has), np.asarray(ious)
    return {
        "images_with_bird": int(has_a.sum()),
        "images_without": int((~has_a).sum()),
        "corloc@0.5": round(100 * float((ious_a[has_a] >= 0.5).mean()), 2),
        **ranking(np.asarray(scores), ious_a, has_a, ""),
    }


def candidates(stability: float, compactness: float) -> dict[str, float]:
    """The other scores measured beside ``box_score`` (= stability + compactness)."""
    return {"stability": stability, "stability_x_1plus_compactness": stability * (1.0 + compactness)}


def ranking(scores: np.ndarray, ious: np.ndarray, has: np.ndarray, prefix: str) -> dict[str, float]:
    from scipy.stats import spearmanr

    s_obj, i_obj = scores[has], ious[has]
    order = np.argsort(-s_obj, kind="stable")
    half = (len(order) + 1) // 2
    hit = i_obj >= 0.5
    return {
        f"{prefix}spearman_score_iou": round(float(spearmanr(s_obj, i_obj).statistic), 3),
        f"{prefix}corloc@0.5_top_half": round(100 * float(hit[order[:half]].mean()), 2),
        f"{prefix}corloc@0.5_bottom_half": round(100 * float(hit[order[half:]].mean()), 2),
        f"{prefix}auc_bird_vs_background": round(auc(scores, has), 3),
        f"{prefix}median_score_bird": round(float(np.median(s_obj)), 3),
        f"{prefix}median_score_background": round(float(np.median(scores[~has])), 3),
    }


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", default="ddt", choices=["ddt", "rps", "selftrain", "caam"])
    parser.add_argument("--n", type=int, default=150, help="images with a bird (and as many without)")
    parser.add_argument(
        "--without",
        type=int,
        default=None,
        help="images without a bird in the collection (default: --n; fewer = the first of those rendered)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--write",
        default="",
        metavar="FOLDER",
        help="write the collection as image files (and boxes.csv) for the product's commands, then stop",
    )
    parser.add_argument(
        "--predictions",
        default="",
        metavar="OUT",
        help="score a `coloc label` run over the --write FOLDER (give both) instead of labeling here",
    )
    args = parser.parse_args(argv)
    without = args.n if args.without is None else args.without
    if not 1 <= without <= args.n:
        parser.error(f"--without must be between 1 and --n ({args.n}), got {without}")
    command = "python bench/bench_score.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.predictions:
        if not args.write:
            parser.error("--predictions needs --write FOLDER: the folder the run labelled")
        print(json.dumps({"command": command, **read_predictions(args.predictions, args.write)}, indent=1))
        return 0
    if args.write:
        write_collection(args.write, args.n, without, args.seed)
        print(f"wrote {args.n} + {without} images to {args.write}; label it with the product, e.g.")
        print(
            f"  coloc train --data {args.write}/images --format folder --run.storage_path=R --run.name=empty"
        )
        print(f"  coloc label --model R/empty/model.pt --images {args.write}/images --out OUT")
        print(f"  python bench/bench_score.py --write {args.write} --predictions OUT")
        return 0
    torch.manual_seed(args.seed)
    images, boxes, has = render(args.n, args.seed)
    keep = np.flatnonzero(has | (np.arange(len(has)) // 2 < without))  # the same images as the full render
    images, boxes, has = images[keep], [boxes[i] for i in keep], has[keep]
    fitted = args.method in ("ddt", "rps", "selftrain")
    options: dict[str, Any] = {
        "feature_layer": "pre_head" if fitted else "output",
        "dilate": False if fitted else None,
    }
    caam = cast(CAAMLocalizer, localizer_from_payload(baseline_payload("caam", **options)))
    with torch.inference_mode():
        feats = torch.cat(
            [
                caam.features(normalize_images(images[i : i + 32], caam.mean, caam.std))
                for i in range(0, len(images), 32)
            ]
        )
    stats = feature_statistics(feats)
    state = {k[len("backbone.") :]: v for k, v in caam.state_dict().items() if k.startswith("backbone.")}
    if args.method == "ddt":
        mean, vector = ddt_from_statistics(stats)
        payload = baseline_payload("ddt", backbone_state=state, ddt_mean=mean, ddt_vector=vector, **options)
    elif args.method == "selftrain":
        chunks = feats.split(32)

        def class_pass(weight: torch.Tensor, bias: float, level: float) -> dict[str, torch.Tensor]:
            parts = [class_statistics(chunk, weight, bias, level) for chunk in chunks]
            return {key: functools.reduce(operator.add, (part[key] for part in parts)) for key in parts[0]}

        weight, bias, square, _ = fit_selftrain(stats, class_pass)
        payload = baseline_payload(
            "selftrain",
            backbone_state=state,
            head_weight=weight,
            head_bias=bias,
            head_quadratic=square,
            **options,
        )
    elif args.method == "rps":
        w = rps_from_statistics(
            stats["sum_gap"], int(stats["images"]), stats["sum_unit"], int(stats["count"])
        )
        payload = baseline_payload("rps", backbone_state=state, rps_vector=w, **options)
    else:
        payload = baseline_payload("caam", **options)
    localizer = localizer_from_payload(payload)
    tau = DEFAULT_THRESHOLDS[args.method]
    with torch.inference_mode():
        maps = torch.cat(
            [
                localizer(normalize_images(images[i : i + 32], localizer.mean, localizer.std))
                for i in range(0, len(images), 32)
            ]
        )
    scoremaps = [scoremap_from_attention(dequantize_heatmap(quantize_heatmap(a))) for a in maps.numpy()]
    cut = [np.asarray(boxes_from_scoremap(s, tau)).reshape(-1, 4)[:1] for s in scoremaps]
    sizes = None
    if fitted:  # the fit's typical-box pass: at most TYPICAL_BOX_IMAGES images spread evenly
        picks = evenly_spread(len(cut), TYPICAL_BOX_IMAGES)
        sizes = box_size_statistics([box_area_share(cut[i][0], scoremaps[i].shape) for i in picks])
    scores, legacy, ious = [], [], []
    extra: dict[str, list[float]] = {}
    for scoremap, box, gt in zip(scoremaps, cut, boxes, strict=True):
        scores.append(box_score(scoremap, box[0], tau, sizes))
        extra.setdefault("no_typicality", []).append(box_score(scoremap, box[0], tau))
        legacy.append(box_compactness(scoremap, box[0]))
        for name, value in candidates(box_stability(scoremap, tau), legacy[-1]).items():
            extra.setdefault(name, []).append(value)
        ious.append(float(iou_matrix(box, gt).max()) if gt is not None else np.nan)
    scores_a, ious_a = np.asarray(scores), np.asarray(ious)
    result = {
        "command": command,
        "method": args.method,
        "tau": tau,
        "box_sizes": sizes,
        "images_with_bird": int(has.sum()),
        "images_without": int((~has).sum()),
        "corloc@0.5": round(100 * float((ious_a[has] >= 0.5).mean()), 2),
        **ranking(scores_a, ious_a, has, ""),
        **ranking(np.asarray(legacy), ious_a, has, "compactness_"),
    }
    for name, values in extra.items():
        result.update(ranking(np.asarray(values), ious_a, has, f"{name}_"))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
