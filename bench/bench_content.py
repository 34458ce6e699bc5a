"""What the content term of the box score costs when labeling: one model file with and without it.

    .venv/bin/python bench/bench_content.py --model RUNS/raccoon/model.pt \
        --images ../shared/data/cub100-unboxed/images --n 300 --out /tmp/bench-content
    .venv/bin/python bench/bench_content.py --compare pick ...   # the box of the best-scored region

``--compare pick`` measures the default ``--pick=score`` (every region of the mask scored, and the
crop of each region that could still win encoded) against ``--pick=largest`` (the single largest contour's crop only), the same
model file with its content term in both runs; the runs are named ``largest`` and ``score``.

Both runs are the product's ``coloc label --model`` path (``pipelines.label.run_labeling``) over the
same first ``n`` images (sorted) of the folder, on one local Ray cluster of ``--cpus`` CPUs, in the
order given by ``--order``. The baseline is the same model file with its ``box_contents`` removed
(written to ``OUT/plain.pt``): the same boxes, scores without the content term, so no crop is encoded
(``coloc_core.box_content``); both runs at ``--pick=largest``, one crop per image. The model file must
store ``box_contents`` (a fit since 2026-12-02: ``coloc train``, or ``coloc label --method ddt|rps|selftrain``'s ``_model.pt``). Reported per run:
wall time, images per second, the peak summed PSS of the driver's process tree
(``bench_label.PeakSampler``); and the ratios content / plain. The first run also starts the
cluster's workers: run both orders. Prints one JSON object.

``--compare halves`` measures the content term as it is (each box encoded with its two halves: three
crops per box) against the same model file with ``box_contents.halves`` set to false (``OUT/whole.pt``:
one crop per box), both at the default ``--pick=score``; the runs are named ``whole`` and ``halves``.

``--compare repeats`` measures the repetition term of the score (``coloc_core.box_score.box_repetition``:
the actor keeps each forward pass's features and measures every scored box on them) against the same
model file with ``box_sizes.repeats`` removed (``OUT/norepeats.pt``: no features kept, no term), both
at the default ``--pick=score``; the runs are named ``norepeats`` and ``repeats``. The model file must
store ``box_sizes.repeats`` (a fitted labeler since 2026-12-03).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_label import add_pool_arguments, paired_report, timed_labeling  # noqa: E402


def run_one(
    model: str, images: str, out: str, args: argparse.Namespace, pick: str = "score"
) -> dict[str, float]:
    from pipelines.config import LabelJobConfig  # noqa: PLC0415

    shutil.rmtree(out, ignore_errors=True)
    cfg = LabelJobConfig(
        model=model,
        images=images,
        out=out,
        limit=args.n,
        num_actors=args.num_actors,
        actor_cpus=args.actor_cpus,
        decode_cpus=args.decode_cpus,
        pick=pick,
    )
    return timed_labeling(cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a model file that stores box_contents")
    ap.add_argument("--images", required=True)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--out", required=True, help="scratch folder (a model file, two predictions folders)")
    add_pool_arguments(ap)
    ap.add_argument("--order", default="", help="which run goes first (default: the baseline)")
    ap.add_argument(
        "--compare",
        choices=("content", "pick", "halves", "repeats"),
        default="content",
        help="what is measured",
    )
    args = ap.parse_args()
    base, new = {
        "content": ("plain", "content"),
        "pick": ("largest", "score"),
        "halves": ("whole", "halves"),
        "repeats": ("norepeats", "repeats"),
    }[args.compare]

    import ray  # noqa: PLC0415

    from coloc_core.checkpoint import read_model_payload, save_model_file  # noqa: PLC0415

    order = [s.strip() for s in (args.order or f"{base},{new}").split(",")]
    if sorted(order) != sorted([base, new]):
        ap.error(f"--order must name {base} and {new} once each")
    payload = read_model_payload(Path(args.model).read_bytes())
    if not payload.get("box_contents"):
        ap.error(f"{args.model} stores no box_contents: fit it again (coloc train) to measure the term")
    os.makedirs(args.out, exist_ok=True)
    model = os.path.abspath(args.model)
    if args.compare == "content":
        plain = os.path.join(args.out, "plain.pt")
        with open(plain, "wb") as fh:
            save_model_file(fh, {**payload, "box_contents": None})
        runs_of = {"content": (model, "largest"), "plain": (plain, "largest")}
    elif args.compare == "halves":
        whole = os.path.join(args.out, "whole.pt")
        with open(whole, "wb") as fh:
            save_model_file(fh, {**payload, "box_contents": {**payload["box_contents"], "halves": False}})
        runs_of = {"halves": (model, "score"), "whole": (whole, "score")}
    elif args.compare == "repeats":
        sizes = dict(payload.get("box_sizes") or {})
        if sizes.get("repeats") is None:
            ap.error(f"{args.model} stores no box_sizes.repeats: fit it again to measure the term")
        sizes.pop("repeats")
        norepeats = os.path.join(args.out, "norepeats.pt")
        with open(norepeats, "wb") as fh:
            save_model_file(fh, {**payload, "box_sizes": sizes})
        runs_of = {"repeats": (model, "score"), "norepeats": (norepeats, "score")}
    else:
        runs_of = {"largest": (model, "largest"), "score": (model, "score")}
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    runs = {
        key: run_one(runs_of[key][0], args.images, os.path.join(args.out, key), args, pick=runs_of[key][1])
        for key in order
    }
    ray.shutdown()
    result = paired_report("bench_content.py", runs, base, new)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
