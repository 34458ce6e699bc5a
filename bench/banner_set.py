"""A copy of a boxed set with a copyright banner under every photo, as FGVC-Aircraft's photos have.

FGVC-Aircraft's photos carry a 20-pixel line of copyright text along their bottom. This derives, from
any set with boxes, one whose photos look like that, with the same boxes, so the cost of leaving such a
banner in (and what ``--crop_bottom`` gives back) can be measured without FGVC-Aircraft itself:

1. each photo is scaled to ``--width`` pixels wide (1024: FGVC-Aircraft's photos are about that wide),
   its boxes with it;
2. ``--banner`` rows (20) are appended under it: a ``--style`` ``dark`` strip (near-black, light text)
   or a ``light`` one (white, dark text), the text a photographer's name on the left and a site's on
   the right, taken in turn from a short list; ``--banner 0`` writes the scaled photos alone, the
   control;
3. the image is written as a JPEG (quality 92) under ``OUT/images/``, its boxes to ``OUT/boxes.csv``
   (the ``boxes_csv`` reader's layout: ``path,width,height,x0,y0,x1,y1``).

Images that do not decode are skipped and counted. The output does not depend on any seed::

    python bench/banner_set.py --data ../shared/data/kangaroo --out /tmp/kangaroo_banner
    coloc label --method ddt --images /tmp/kangaroo_banner --format boxes_csv --split all \\
        --crop_bottom=0 --out /tmp/O_kept
    coloc label --method ddt --images /tmp/kangaroo_banner --format boxes_csv --split all \\
        --crop_bottom=20 --out /tmp/O_cut
    coloc evaluate --predictions /tmp/O_cut --gt /tmp/kangaroo_banner --format boxes_csv --split all

Measured in docs/RESULTS.md (issue 10: "A banner under every photo").
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))
from derived_set import add_source_arguments, displayed_photo, records_by_path, write_boxes_csv  # noqa: E402

NAMES = (
    "© J. Smith",
    "© Airliners Spotter",
    "© M. Rossi - AirTeam",
    "© K. Tanaka",
    "© P. Dupont Photography",
)
SITE = "airliners"
STYLES = {"dark": ((0, 0, 0), (230, 230, 230)), "light": ((255, 255, 255), (20, 20, 20))}


@dataclass
class BannerSummary:
    """What :func:`derive_banner_set` wrote."""

    images: int
    boxes: int
    unreadable: int

    def line(self) -> str:
        """One line for the console."""
        return f"{self.images} images, {self.boxes} boxes written ({self.unreadable} unreadable skipped)"


def with_banner(
    image: Image.Image, width: int, banner: int, style: str, name: str
) -> tuple[Image.Image, float]:
    """``image`` scaled to ``width`` wide with ``banner`` rows of ``style`` appended; and the scale."""
    if style not in STYLES:
        raise ValueError(f"style {style!r} is not one of {', '.join(STYLES)}")
    if width < 1 or banner < 0:
        raise ValueError(f"need width >= 1 and banner >= 0, got {width} and {banner}")
    scale = width / image.width
    height = max(1, round(image.height * scale))
    background, ink = STYLES[style]
    out = Image.new("RGB", (width, height + banner), background)
    out.paste(image.resize((width, height), Image.Resampling.BICUBIC), (0, 0))
    if banner:
        draw, font = ImageDraw.Draw(out), ImageFont.load_default()
        top = height + max(0, (banner - 11) // 2)
        draw.text((6, top), name, fill=ink, font=font)
        draw.text((max(6, width - 120), top), SITE, fill=ink, font=font)
    return out, scale


def derive_banner_set(
    data: str,
    fmt: str,
    out: str,
    split: str = "all",
    width: int = 1024,
    banner: int = 20,
    style: str = "dark",
) -> BannerSummary:
    """Write the banner copy of ``data`` to ``out`` (see the module docstring).

    Raises:
        ValueError: a bad width, banner or style, or a set without a readable image with boxes.
    """
    root = Path(out)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows: list[list[object]] = []
    summary = BannerSummary(images=0, boxes=0, unreadable=0)
    for record in records_by_path(data, fmt, split):
        if not record.boxes:
            continue
        image = displayed_photo(record.path)
        if image is None:
            summary.unreadable += 1
            continue
        names = NAMES[(summary.images + summary.unreadable) % len(NAMES)]
        framed, scale = with_banner(image, width, banner, style, names)
        name = f"images/{summary.images:06d}_{PurePosixPath(record.path).stem}.jpg"
        framed.save(root / name, quality=92)
        for box in record.boxes:
            rows.append([name, framed.width, framed.height, *(f"{float(v) * scale:.1f}" for v in box)])
        summary.images += 1
        summary.boxes += len(record.boxes)
    if not rows:
        raise ValueError(f"{data} has no readable image with boxes")
    write_boxes_csv(root, rows)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_source_arguments(p, "banner set")
    p.add_argument("--width", type=int, default=1024, help="width every photo is scaled to")
    p.add_argument("--banner", type=int, default=20, help="rows of banner under each photo (0: none)")
    p.add_argument("--style", default="dark", choices=sorted(STYLES), help="the banner's colours")
    args = p.parse_args(argv)
    try:
        summary = derive_banner_set(
            args.data, args.format, args.out, args.split, args.width, args.banner, args.style
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"banner_set: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {summary.line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
