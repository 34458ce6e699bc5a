"""What the scripts that derive a boxed set from another share (``closeup_set.py``, ``banner_set.py``).

Each reads a boxed set with one of ``coloc_core.datasets``' readers, writes new photos under
``OUT/images/`` and their boxes to ``OUT/boxes.csv`` in the ``boxes_csv`` reader's layout
(``path,width,height,x0,y0,x1,y1``), so that the product's commands read the result with
``--format boxes_csv --split all``. Not a script of its own.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageOps

from coloc_core.datasets import BOXES_CSV_COLUMNS, DATASET_KINDS, ImageRecord, read_dataset
from coloc_core.decode import to_rgb


def add_source_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--data``, ``--format``, ``--split`` (the set read) and ``--out`` (the ``what`` written)."""
    parser.add_argument("--data", required=True, help="the boxed set's folder")
    parser.add_argument("--format", default="boxes_csv", choices=DATASET_KINDS, help="its reader")
    parser.add_argument("--split", default="all", help="its split")
    parser.add_argument("--out", required=True, help=f"folder of the {what} (images/ and boxes.csv)")


def records_by_path(data: str, fmt: str, split: str) -> list[ImageRecord]:
    """The records of ``data`` (its ``fmt`` reader, ``split``), in path order."""
    return sorted(read_dataset(fmt, data, split), key=lambda r: r.path)


def displayed_photo(path: str) -> Image.Image | None:
    """The photo at ``path`` in RGB as displayed (EXIF orientation applied); None where it does not decode."""
    try:
        with Image.open(path) as im:
            return to_rgb(ImageOps.exif_transpose(im))
    except OSError:
        return None


def write_boxes_csv(root: Path, rows: Sequence[Sequence[object]]) -> None:
    """``root/boxes.csv`` with the ``boxes_csv`` reader's header and ``rows``."""
    with open(root / "boxes.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(BOXES_CSV_COLUMNS)
        writer.writerows(rows)
