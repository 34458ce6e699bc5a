"""Benchmark: MaxBoxAccV2 over the protocol's 1,000 thresholds, straightforward loop vs fast path.

The straightforward implementation runs one contour search per threshold (1,000 per image); the fast
one searches each distinct mask once, on the mask's bounding rectangle (``coloc_core.boxes``). Both
must give identical counts; the script asserts it and prints seconds per image and the speed ratio.

Score maps are made like the real pipeline makes them: an attention map at feature resolution
(14x14 or 28x28: one to three Gaussian blobs on a non-negative noisy background) goes through
``scoremap_from_attention`` (bicubic to 224x224, min-max). GT boxes surround the strongest blob,
jittered. ``--noise`` sets the background texture; the default runs a smooth and a textured family.

    .venv/bin/python bench/bench_eval.py --n 200
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from coloc_core.boxes import scoremap_from_attention
from coloc_core.metrics import MaxBoxAccAccumulator


def make_data(n: int, noise: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    data = []
    for i in range(n):
        res = 14 if i % 2 == 0 else 28
        yy, xx = np.mgrid[:res, :res].astype(np.float64)
        attn = np.abs(rng.normal(0.0, noise, (res, res)))
        peaks = []
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(1, res - 2, 2)
            sigma = rng.uniform(res / 14, res / 4)
            amp = rng.uniform(0.4, 1.0)
            attn += amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
            peaks.append((amp, cy, cx, sigma))
        amp, cy, cx, sigma = max(peaks)
        scale = 224 / res
        half = 2 * sigma * scale * rng.uniform(0.8, 1.2, 2)
        x0, y0 = (cx + 0.5) * scale - half[0], (cy + 0.5) * scale - half[1]
        x1, y1 = (cx + 0.5) * scale + half[0], (cy + 0.5) * scale + half[1]
        gt = np.clip(np.array([[x0, y0, x1, y1]]), 0, 223).astype(np.int64)
        data.append((scoremap_from_attention(attn.astype(np.float32)), gt))
    return data


def run(
    data: list[tuple[np.ndarray, np.ndarray]], multi: bool, repeat: int
) -> tuple[MaxBoxAccAccumulator, MaxBoxAccAccumulator, float, float]:
    """Accumulate all images with both implementations; return them and their summed times.

    The two run interleaved, image by image, and each image is timed ``repeat`` times per
    implementation with the fastest run kept, so that other processes on a shared host distort the
    ratio as little as possible.
    """
    slow = MaxBoxAccAccumulator(multi_contour=multi, fast=False)
    fast = MaxBoxAccAccumulator(multi_contour=multi, fast=True)
    slow_total = fast_total = 0.0
    for scoremap, gt in data:
        best = {False: float("inf"), True: float("inf")}
        for r in range(repeat):
            for is_fast, acc in ((False, slow), (True, fast)):
                probe = acc if r == 0 else MaxBoxAccAccumulator(multi_contour=multi, fast=is_fast)
                start = time.perf_counter()
                probe.update(scoremap, gt)
                best[is_fast] = min(best[is_fast], time.perf_counter() - start)
        slow_total += best[False]
        fast_total += best[True]
    return slow, fast, slow_total, fast_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="images per family")
    parser.add_argument(
        "--noise", type=float, nargs="*", default=[0.02, 0.08], help="background noise levels"
    )
    parser.add_argument("--single", action="store_true", help="largest-contour boxes (V1) instead of V2")
    parser.add_argument("--repeat", type=int, default=3, help="time each image this often, keep the fastest")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    multi = not args.single
    print(
        f"MaxBoxAcc{'V2' if multi else ''}: {args.n} images per family, 1000 thresholds, 224x224 maps, "
        f"best of {args.repeat} runs per image"
    )
    for noise in args.noise:
        data = make_data(args.n, noise, args.seed)
        slow_acc, fast_acc, slow_s, fast_s = run(data, multi=multi, repeat=args.repeat)
        assert np.array_equal(slow_acc.num_correct, fast_acc.num_correct), "fast path disagrees"
        assert slow_acc.compute() == fast_acc.compute()
        result = fast_acc.compute()
        print(
            f"noise={noise:<5g} straightforward {slow_s / args.n:.4f} s/img  fast {fast_s / args.n:.4f} s/img"
            f"   speed-up {slow_s / fast_s:.1f}x   identical counts, maxboxaccv2={result['maxboxaccv2']:.2f}"
        )


if __name__ == "__main__":
    main()
