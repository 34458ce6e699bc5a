"""The ``coloc`` command: one entry point for every job.

    coloc train-cub --data s3://bucket/CUB_200_2011 ...   (= python jobs/train_cub.py ...)
    coloc train --format=cars --data ...                  (= python jobs/train.py ...)
    coloc label --model ... --images ... --out ...        (= python jobs/label.py ...)
    coloc evaluate ... | coloc calibrate ... | coloc export ...
    coloc render --predictions ... --out DIR              (one overlay PNG per image, for review)
    coloc demo                                            (= python jobs/demo.py)
    coloc generate --out DIR --num_images N               (a synthetic CUB-layout data set)

``coloc <command> --help`` lists the command's options; ``coloc --version`` (or ``coloc <command>
--version``) prints the version. Both, and every bad command line (exit code 2), answer before Ray or
torch is imported: the jobs import them only once their options are known to be good.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": (
        "jobs.train",
        "train on any supported dataset format: the self-trained head (default) or CAML (--method=caml)",
    ),
    "train-cub": ("jobs.train_cub", "train, on a CUB-200-2011-layout dataset"),
    "label": ("jobs.label", "bulk pseudo-labeling of an image collection to Parquet"),
    "evaluate": ("jobs.evaluate", "CorLoc / MaxBoxAccV2 of a predictions table + picture sheet"),
    "calibrate": ("jobs.calibrate", "pick τ on a labelled subset and store it with the model"),
    "export": (
        "jobs.export",
        "predictions → COCO (dataset or results) JSON, YOLO dataset, Pascal VOC XML, Label Studio tasks",
    ),
    "render": ("jobs.render", "one overlay PNG (heatmap + boxes) per image of a predictions table"),
    "demo": ("jobs.demo", "end-to-end demo on generated data (local Ray, CPU)"),
    "generate": ("jobs.generate", "write a synthetic CUB-layout dataset with known boxes"),
}


def usage() -> str:
    lines = [
        "usage: coloc <command> [--key=value ...]",
        "       coloc <command> --help     (the command's options, with defaults)",
        "       coloc --version",
        "",
        "commands:",
    ]
    lines += [f"  {name:<10} {desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        from pipelines.config import version_text  # noqa: PLC0415

        print(version_text())
        return 0
    if args[0] not in COMMANDS:
        print(f"coloc: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[args[0]][0])
    return int(module.main(args[1:]))


if __name__ == "__main__":
    sys.exit(main())
