"""Export a predictions table: ``python jobs/export.py --predictions=... --out=labels.json --category=bird``.

    python jobs/export.py --predictions s3://bucket/labels/birds --to coco \
        --out s3://bucket/birds.coco.json --category bird
    python jobs/export.py --predictions /data/labels/birds --to yolo --out /data/birds-yolo --category bird

COCO writes one JSON file, YOLO a folder of ``.txt`` files plus ``classes.txt``; error rows are skipped.
Needs no Ray. Exit code 0 on success, 1 on failure, 2 on a bad command line.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass

from pipelines.config import build_config

log = logging.getLogger("jobs.export")


@dataclass
class ExportJobConfig:
    """Export job.

    Attributes:
        predictions: predictions folder (local or ``s3://``).
        out: COCO JSON file or YOLO folder (local or ``s3://``).
        category: the collection's name (the one class).
        to: ``coco`` or ``yolo``.
        images_root: root that exported file names are relative to ("" = the table's manifest).
    """

    predictions: str = ""
    out: str = ""
    category: str = ""
    to: str = "coco"
    images_root: str = ""


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = build_config(ExportJobConfig, sys.argv[1:] if argv is None else argv)
        missing = [k for k in ("predictions", "out", "category") if not getattr(cfg, k)]
        if missing:
            raise ValueError(f"required: {', '.join('--' + k for k in missing)}")
        if cfg.to not in ("coco", "yolo"):
            raise ValueError(f"--to={cfg.to!r} is not coco or yolo")
    except (KeyError, ValueError) as err:
        log.error("bad arguments: %s", err)
        return 2
    from pipelines.export import run_export  # noqa: PLC0415 - imports pyarrow and torch

    try:
        summary = run_export(cfg.predictions, cfg.out, cfg.category, cfg.to, cfg.images_root or None)
    except Exception:
        log.exception("export failed")
        return 1
    print(json.dumps(summary.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
