"""An Ultralytics YOLO dataset: label files, image links, list files, ``data.yaml``.

A box is the line ``0 cx cy w h`` with ``cx = (x0 + w/2) / W``, ``cy = (y0 + h/2) / H``, ``w/W``,
``h/H`` (``w``, ``h`` those of the COCO box, package docstring), 6 decimals.

**YOLO dataset layout.** Ultralytics finds an image's label file by its path alone: the last
``/images/`` component of the image path becomes ``/labels/`` and the extension ``.txt``. An image
under ``/data/photos/a/x.jpg`` therefore has no place for its labels outside the image folder, so the
export builds the pair itself, without copying an image::

    <out>/data.yaml          path: <out>, train: train.txt, val: val.txt (or train.txt), names: {0: category}
    <out>/train.txt          ./images/<relative path>, one line per image of the train split
    <out>/val.txt            the same for the val split (only with val_fraction > 0)
    <out>/images/<relative path>   a symbolic link to the original image (local images and folder)
    <out>/labels/<relative path>.txt   its boxes, where Ultralytics' rule looks for them
    <out>/classes.txt        the category (class 0), for other YOLO readers

``<relative path>`` is the image's path below ``images_root`` (when it has an ``images`` folder of
its own, the label file goes where the rule then looks: below that last ``images``, ``labels``
replacing it). Ultralytics resolves the ``./`` of a
list line against the list file's folder, so ``yolo train data=<out>/data.yaml`` reads the linked
images and their labels. Images on S3 (or an ``s3://`` output folder) get no link: copy or sync the
images to ``<out>/images/`` (the listed paths) before training; ``data.yaml``'s ``path`` is the
output folder as given, so after syncing an ``s3://`` folder down set it to the local folder. The
split is deterministic: an image is in ``val`` when the SHA-256 of its relative path, read as a
number in ``[0, 1)``, is below ``val_fraction`` (default 0: every image in ``train``, and ``val:``
names ``train.txt``, as Ultralytics requires a ``val`` entry).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from contextlib import ExitStack
from typing import Any

from coloc_core.errors import InvalidInputError
from pipelines import schema, storage
from pipelines.export.common import (
    ExportSummary,
    export_per_image,
    export_summary,
    image_file_name,
    images_root_of,
    log_filters,
    pixel_box,
    select_rows,
)

log = logging.getLogger("pipelines.export")  # every part logs as the export stage


def yolo_line(row: dict[str, Any], box: dict[str, Any] | None = None) -> str:
    """``0 cx cy w h`` (normalised, 6 decimals) of a box (default the row's single box)."""
    x, y, w, h = pixel_box(row, box)
    width, height = float(row[schema.WIDTH]), float(row[schema.HEIGHT])
    return f"0 {(x + w / 2) / width:.6f} {(y + h / 2) / height:.6f} {w / width:.6f} {h / height:.6f}"


def ultralytics_label_path(image_path: str) -> str:
    """Where Ultralytics looks for an image's label file (its ``img2label_paths`` rule, ``/`` paths).

    The last ``/images/`` component becomes ``/labels/`` and everything after the last ``.`` becomes
    ``txt``: ``/d/images/a/x.jpg`` → ``/d/labels/a/x.txt``.

    Raises:
        InvalidInputError: (a ``ValueError``) the path has no ``/images/`` component (Ultralytics
            would find no label file).
    """
    head, sep, tail = image_path.rpartition("/images/")
    if not sep:
        raise InvalidInputError(f"{image_path} has no /images/ component")
    return f"{head}/labels/{tail}".rsplit(".", 1)[0] + ".txt"


def yolo_split(name: str, val_fraction: float) -> str:
    """``"val"`` or ``"train"`` for an image of the YOLO dataset, by a hash of its relative path.

    ``val`` when the first 8 bytes of the SHA-256 of ``name`` (UTF-8), read as a fraction of 2**64, are
    below ``val_fraction``: deterministic, independent of the table's order and of the other images.
    """
    if val_fraction <= 0:
        return "train"
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def _is_local(uri: str) -> bool:
    return storage.scheme_of(uri) == "file"


def _link(target: str, link: str) -> None:
    """Make ``link`` a symbolic link to ``target`` (replacing what is there, atomically)."""
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.islink(link) and os.readlink(link) == target:
        return
    staged = f"{link}.coloc-tmp-{os.getpid()}"
    if os.path.lexists(staged):
        os.remove(staged)
    os.symlink(target, staged)
    os.replace(staged, link)


def _yaml_str(text: str) -> str:
    """A YAML double-quoted scalar (a JSON string is one)."""
    return json.dumps(text, ensure_ascii=False)


def yolo_data_yaml(path: str, category: str, val_list: str) -> str:
    """The Ultralytics ``data.yaml`` text of an exported dataset rooted at ``path``."""
    return (
        f"# Ultralytics YOLO dataset of coloc pseudo-labels: yolo train data=<this file>\n"
        f"path: {_yaml_str(path)}\n"
        f"train: train.txt\n"
        f"val: {val_list}\n"
        f"names:\n"
        f"  0: {_yaml_str(category)}\n"
    )


def export_yolo(
    predictions: str,
    out: str,
    category: str,
    images_root: str | None = None,
    min_score: float | None = None,
    top_k: int = 0,
    val_fraction: float = 0.0,
) -> ExportSummary:
    """Write an Ultralytics YOLO dataset: labels, image links, ``train.txt``/``val.txt``, ``data.yaml``.

    The layout (module docstring): ``<out>/labels/<relative path>.txt`` (one line per box; an empty file
    for an image without a box), ``<out>/images/<relative path>`` (a link to the original image, local
    images only), the list files of ``./images/<relative path>`` lines, ``data.yaml`` and
    ``classes.txt``. An image whose row is an error or filtered out gets no label file, link or line.

    Args:
        predictions: predictions folder.
        out: output folder (local or ``s3://``).
        category: the collection's name (class 0).
        images_root: root the image and label paths are relative to; None = the manifest's ``images``.
        min_score: keep boxes with ``score >= min_score``; None = all.
        top_k: keep the ``top_k`` highest-scored boxes; 0 = all.
        val_fraction: about this fraction of the images goes to ``val.txt`` (split by a hash of the
            relative path, :func:`yolo_split`); 0 = every image in ``train.txt``, no ``val.txt``.
    """
    if not category:
        raise ValueError("category (the collection's name) is required")
    if not (0.0 <= val_fraction < 1.0):
        raise ValueError(f"val_fraction={val_fraction} must be in [0, 1)")
    root = images_root_of(predictions) if images_root is None else images_root
    selection = select_rows(predictions, min_score, top_k)
    local_out = _is_local(out)
    base = os.path.abspath(storage.strip_scheme(out)) if local_out else out
    counts = {"train": 0, "val": 0}
    links = 0
    with ExitStack() as stack:
        lists = {"train": stack.enter_context(storage.atomic_write(storage.join(out, "train.txt"), "w"))}
        if val_fraction > 0:
            lists["val"] = stack.enter_context(storage.atomic_write(storage.join(out, "val.txt"), "w"))

        def visit(row: dict[str, Any]) -> None:
            nonlocal links
            name = image_file_name(row[schema.PATH], root)
            split = yolo_split(name, val_fraction)
            lists[split].write(f"./images/{name}\n")
            counts[split] += 1
            if local_out and _is_local(row[schema.PATH]):
                target = os.path.abspath(storage.strip_scheme(row[schema.PATH]))
                _link(target, os.path.join(base, "images", *name.split("/")))
                links += 1

        images, boxes = export_per_image(
            predictions,
            out,
            selection,
            lambda row: ultralytics_label_path("/images/" + image_file_name(row[schema.PATH], root))[1:],
            lambda row, kept: "\n".join(yolo_line(row, b) for b in kept),
            visit,
        )
    val_list = "val.txt"
    if val_fraction > 0 and not counts["val"]:
        log.warning(
            "export: val_fraction=%g put no image in val.txt; data.yaml validates on train", val_fraction
        )
        val_list = "train.txt"
    elif not val_fraction:
        val_list = "train.txt"
    storage.write_text_atomic(storage.join(out, "data.yaml"), yolo_data_yaml(base, category, val_list))
    storage.write_text_atomic(storage.join(out, "classes.txt"), category + "\n")
    if images > links:
        log.warning(
            "export: %d of %d images are not local files and have no link under %s: copy them there "
            "(the paths in train.txt/val.txt) before training",
            images - links,
            images,
            storage.join(out, "images"),
        )
    log_filters(selection, min_score, top_k)
    log.info(
        "export: YOLO dataset %s: %d label files (train %d, val %d), %d boxes, %d error rows skipped",
        out,
        images,
        counts["train"],
        counts["val"],
        boxes,
        selection.errors,
    )
    return export_summary(out, images, boxes, selection)
