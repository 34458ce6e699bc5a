"""A close-up copy of a boxed set: do the boxes follow objects that fill the frame? (issue 10, item 5)

In the boxed photo sets at hand the largest object of an image covers a median 31% (kangaroo) to 52%
(raccoon) of it; collections such as cars or aircraft are shot closer. This derives, from any set with boxes,
one where every object covers a large share of its image, with exact boxes, so a labeler's defaults
(τ above all) can be measured on frame-filling objects without new annotations:

1. only images with exactly one box are kept (a crop around one of several would cut the others);
2. each is cropped around its box so that the box covers a share drawn uniformly from
   [``--min-share``, ``--max-share``] of the crop (higher where the image is too small to give
   the margin), the margin split between the two sides of each axis at random;
3. the crop is written as a JPEG (quality 95) under ``OUT/images/``, its box to ``OUT/boxes.csv``
   (the ``boxes_csv`` reader's layout: ``path,width,height,x0,y0,x1,y1``).

Images that do not decode are skipped and counted. The same ``--seed`` gives the same set::

    python bench/closeup_set.py --data ../shared/data/raccoon --format boxes_csv --out /tmp/raccoon_close
    coloc train --data /tmp/raccoon_close --format boxes_csv --dataset.train_split=all \\
        --dataset.test_split= --run.storage_path=/tmp/R --run.name=close
    coloc label --model /tmp/R/close/model.pt --images /tmp/raccoon_close --format boxes_csv \\
        --split all --out /tmp/O
    coloc evaluate --predictions /tmp/O --gt /tmp/raccoon_close --format boxes_csv --split all

Measured in docs/RESULTS.md (issue 10: "Objects that fill the frame").
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

sys.path.insert(0, str(Path(__file__).resolve().parent))
from derived_set import add_source_arguments, displayed_photo, records_by_path, write_boxes_csv  # noqa: E402


@dataclass
class CloseupSummary:
    """What :func:`derive_closeup` wrote: image count, what it skipped, and the box shares."""

    several_boxes: int
    unreadable: int
    shares: list[float]

    @property
    def images(self) -> int:
        """Images written: one box share each."""
        return len(self.shares)

    def line(self) -> str:
        """One line for the console."""
        s = sorted(self.shares)
        spread = f"; box share median {s[len(s) // 2]:.2f}, {s[0]:.2f}-{s[-1]:.2f}" if s else ""
        return (
            f"{self.images} images written ({self.several_boxes} with several boxes and "
            f"{self.unreadable} unreadable skipped){spread}"
        )


def crop_window(
    box: tuple[float, float, float, float], size: tuple[int, int], share: float, rng: random.Random
) -> tuple[int, int, int, int]:
    """The crop (x0, y0, x1, y1), exclusive far corner, in which ``box`` covers about ``share``.

    Each side of the crop is the box's side over √share, at most the image's; the margin is split
    between the two sides at random, and the crop is shifted to stay inside the image. The box
    (pixel-inclusive) always lies inside the crop.
    """
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must be in (0, 1], got {share}")
    width, height = size
    x0, y0, x1, y1 = box
    out: list[int] = []
    for lo, hi, side in ((x0, x1, width), (y0, y1, height)):
        extent = hi - lo + 1
        crop = min(float(side), extent / math.sqrt(share))
        start = min(max(0.0, lo - rng.random() * (crop - extent)), side - crop)
        first = max(0, min(int(math.floor(start)), int(lo)))
        last = min(side, max(int(math.ceil(start + crop)), int(math.ceil(hi)) + 1))
        out += [first, last]
    return out[0], out[2], out[1], out[3]


def derive_closeup(
    data: str,
    fmt: str,
    out: str,
    split: str = "all",
    min_share: float = 0.55,
    max_share: float = 0.9,
    seed: int = 0,
) -> CloseupSummary:
    """Write the close-up copy of ``data`` to ``out`` (see the module docstring).

    Raises:
        ValueError: shares outside (0, 1] or in the wrong order, or a set without one-box images.
    """
    if not 0.0 < min_share <= max_share <= 1.0:
        raise ValueError(f"need 0 < min_share <= max_share <= 1, got {min_share}, {max_share}")
    rng = random.Random(seed)
    root = Path(out)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows: list[list[object]] = []
    summary = CloseupSummary(several_boxes=0, unreadable=0, shares=[])
    for record in records_by_path(data, fmt, split):
        if len(record.boxes) != 1:  # a crop around one of several boxes would cut the others
            summary.several_boxes += len(record.boxes) > 1
            continue
        image = displayed_photo(record.path)
        if image is None:
            summary.unreadable += 1
            continue
        x0, y0, x1, y1 = (float(v) for v in record.boxes[0])
        window = crop_window((x0, y0, x1, y1), image.size, rng.uniform(min_share, max_share), rng)
        crop = image.crop(window)
        name = f"images/{len(rows):06d}_{PurePosixPath(record.path).stem}.jpg"
        crop.save(root / name, quality=95)
        w, h = crop.size
        nx0, ny0 = max(0, round(x0) - window[0]), max(0, round(y0) - window[1])
        nx1, ny1 = min(w - 1, round(x1) - window[0]), min(h - 1, round(y1) - window[1])
        rows.append([name, w, h, nx0, ny0, nx1, ny1])
        summary.shares.append((nx1 - nx0 + 1) * (ny1 - ny0 + 1) / (w * h))
    if not rows:
        raise ValueError(f"{data} has no readable image with exactly one box")
    write_boxes_csv(root, rows)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_source_arguments(p, "close-up set")
    p.add_argument("--min-share", type=float, default=0.55, help="smallest share of the crop the box covers")
    p.add_argument("--max-share", type=float, default=0.9, help="largest share")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        summary = derive_closeup(
            args.data, args.format, args.out, args.split, args.min_share, args.max_share, args.seed
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"closeup_set: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {summary.line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
