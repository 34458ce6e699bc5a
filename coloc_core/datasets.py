"""Dataset readers (SPEC §7): every format becomes one list of :class:`ImageRecord`.

Formats: CUB-200-2011, Stanford Cars, FGVC-Aircraft, Stanford Dogs, image folders and ``boxes.csv``
folders.

Readers only parse annotation files and list images; they never decode an image (the ingest stage does,
and fills in ``width``/``height`` where the annotations do not give them). Class labels are never read:
co-localization is unsupervised, and no split depends on them.

File access goes through a :class:`FileSystemLike`: any object with fsspec-like ``open(path, mode)`` and
``find(path)``. Pipelines pass an ``fsspec``/``s3fs`` filesystem so a dataset can live on ``s3://``;
``fs=None`` means :class:`LocalFS`. Record paths are ``root`` joined with the file's relative path by
``/``, so they keep ``root``'s form (``s3://bucket/prefix/...``, ``file:///...`` or a plain path).

Box convention: ``(x0, y0, x1, y1)`` in the original image's pixel coordinates, 0-based (the top-left
pixel is (0, 0)). Per data set:

| kind | boxes as stored | conversion |
|---|---|---|
| cub | ``id x y w h`` (floats) | ``(x, y, x + w, y + h)``, as wsolevaluation and PsyNet use them |
| cars | ``bbox_x1 bbox_y1 bbox_x2 bbox_y2``, 1-based | subtract 1 |
| aircraft | ``name xmin ymin xmax ymax``, 1-based | subtract 1 |
| dogs | VOC XML ``<bndbox>`` (from ImageNet) | unchanged, as PsyNet used them |
| boxes_csv | ``x0,y0,x1,y1`` | unchanged |

A coordinate that a 1-based file gives as 0 (an annotation slip) is clamped to 0 after the conversion.
"""

from __future__ import annotations

import csv as _csv
import io
import logging
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, Protocol, runtime_checkable

import numpy as np

from coloc_core.errors import InvalidInputError, MissingInputError

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]

SPLITS = ("train", "test", "val", "all")
# GIF: the first frame is labelled (an animation is one image).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
DATASET_KINDS = ("cub", "cars", "aircraft", "dogs", "folder", "boxes_csv")
BOXES_CSV_COLUMNS = ("path", "width", "height", "x0", "y0", "x1", "y1")
# FGVC-Aircraft images carry a copyright banner in their bottom rows; its README gives its height.
AIRCRAFT_BANNER_PX = 20


def default_crop_bottom(kind: str) -> int:
    """Rows the jobs cut off each image's bottom by default for a reader ``kind`` (``crop_bottom=-1``).

    FGVC-Aircraft's banner (:data:`AIRCRAFT_BANNER_PX`); 0 for every other kind. Left in, the banner
    is a pattern every image shares: it pulled DDT's component away from the animals of a collection
    given such a banner (docs/RESULTS.md).
    """
    return AIRCRAFT_BANNER_PX if kind == "aircraft" else 0


# Concurrent reads of many small files (one XML per image for Stanford Dogs): latency-bound on S3.
_READ_THREADS = 16


@dataclass(frozen=True)
class ImageRecord:
    """One image of a data set, as listed by a reader.

    Attributes:
        path: URI or path of the image file, as it should be opened: the reader's ``root`` joined with
            the file's relative path by ``/``.
        split: ``"train"``, ``"test"``, ``"val"`` or ``"all"`` (a folder without splits).
        width: original width in pixels when the annotations give it, else None (filled by ingest).
        height: original height in pixels when the annotations give it, else None.
        boxes: ground-truth boxes ``(x0, y0, x1, y1)`` in original pixel coordinates, 0-based; ``()``
            when unknown. Several boxes are allowed (any of them counts as a hit in CorLoc).

    Raises:
        ValueError: on an unknown split, a non-positive size, or a box with non-finite coordinates,
            ``x1 < x0`` or ``y1 < y0``.
    """

    path: str
    split: str
    width: int | None = None
    height: int | None = None
    boxes: tuple[Box, ...] = ()

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise InvalidInputError(f"{self.path}: split {self.split!r} is not one of {SPLITS}")
        for name, size in (("width", self.width), ("height", self.height)):
            if size is not None and size <= 0:
                raise InvalidInputError(f"{self.path}: {name}={size} must be positive")
        for box in self.boxes:
            if len(box) != 4 or not all(math.isfinite(v) for v in box):
                raise InvalidInputError(f"{self.path}: box {box} must be 4 finite numbers (x0, y0, x1, y1)")
            if box[2] < box[0] or box[3] < box[1]:
                raise InvalidInputError(f"{self.path}: box {box} has x1 < x0 or y1 < y0")


@runtime_checkable
class FileSystemLike(Protocol):
    """The two filesystem calls the readers use; ``fsspec`` filesystems (``s3fs`` included) have them.

    ``open(path, mode)`` returns a file object (``"rb"`` and ``"r"`` are used) and raises
    ``FileNotFoundError`` for a missing file. ``find(path)`` lists every file (not folder) under
    ``path`` recursively, as paths that contain ``path`` with its scheme (``s3://``) possibly removed.
    """

    def open(self, path: str, mode: str = "rb") -> IO[Any]:
        """Open one file."""
        ...

    def find(self, path: str) -> list[str]:
        """List all files under ``path`` recursively."""
        ...


class LocalFS:
    """:class:`FileSystemLike` on the local disk; accepts plain paths and ``file://`` URIs."""

    def open(self, path: str, mode: str = "rb") -> IO[Any]:
        """Open a local file (``mode`` as for :func:`open`)."""
        return open(_strip_file_scheme(path), mode)

    def find(self, path: str) -> list[str]:
        """All files under ``path`` recursively, sorted, each ``path`` + ``/`` + relative path.

        A missing folder gives an empty list, as fsspec's ``find`` does.
        """
        local = _strip_file_scheme(path)
        base = path.rstrip("/")
        found = []
        for dirpath, _dirnames, filenames in os.walk(local):
            rel_dir = os.path.relpath(dirpath, local).replace(os.sep, "/")
            for name in filenames:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                found.append(f"{base}/{rel}")
        return sorted(found)


def _strip_file_scheme(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


def _join(root: str, *parts: str) -> str:
    """``root`` and relative parts joined by ``/`` (keeps ``s3://`` and ``file://`` roots intact)."""
    pieces = [root.rstrip("/")] + [p.strip("/") for p in parts if p]
    return "/".join(pieces)


def _read_bytes(fs: FileSystemLike, path: str, what: str) -> bytes:
    try:
        with fs.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as e:
        raise MissingInputError(f"{what}: expected file {path} was not found") from e
    return bytes(data)


def _read_text(fs: FileSystemLike, path: str, what: str) -> str:
    return _read_bytes(fs, path, what).decode("utf-8-sig")


def _read_many(fs: FileSystemLike, paths: Sequence[str], read: Callable[[str], bytes]) -> list[bytes]:
    """``read`` over many paths, concurrently (order kept): many small S3 GETs are latency-bound."""
    if len(paths) <= 1 or isinstance(fs, LocalFS):
        return [read(p) for p in paths]
    with ThreadPoolExecutor(max_workers=_READ_THREADS) as pool:
        return list(pool.map(read, paths))


_SEP = re.compile(r"\s*,\s*|\s+")


def _table_rows(text: str, num_fields: int, path: str) -> Iterable[list[str]]:
    """Rows of a space- or comma-separated table; the last field takes the rest of the line.

    Raises:
        ValueError: on a line with fewer than ``num_fields`` fields (names the file and line).
    """
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        fields = _SEP.split(line, maxsplit=num_fields - 1)
        if len(fields) < num_fields:
            raise InvalidInputError(f"{path}:{lineno}: expected {num_fields} fields, got {line!r}")
        yield fields


def _check_split(split: str, allowed: Sequence[str], kind: str) -> None:
    if split not in allowed:
        raise InvalidInputError(f"{kind}: split {split!r} is not one of {tuple(allowed)}")


def _from_one_based(x0: float, y0: float, x1: float, y1: float) -> Box:
    return (max(x0 - 1.0, 0.0), max(y0 - 1.0, 0.0), max(x1 - 1.0, 0.0), max(y1 - 1.0, 0.0))


# --------------------------------------------------------------------------------------------- CUB


def read_cub(
    root: str, split: str = "train", fs: FileSystemLike | None = None, *, require_boxes: bool = False
) -> list[ImageRecord]:
    """Read CUB-200-2011 (Wah et al., 2011) or any data set in its layout.

    Files (space- or comma-separated; both occur): ``images.txt`` (``id path``), ``train_test_split.txt``
    (``id is_train``, 1 = train, 0 = test), ``bounding_boxes.txt`` (``id x y w h``, floats; one box per
    image, converted to ``(x, y, x + w, y + h)``); images under ``root/images/``. ``bounding_boxes.txt``
    may be missing (e.g. an unlabelled collection in CUB layout): the images then get no boxes, unless
    ``require_boxes``. CUB gives no image sizes.

    Args:
        root: data set folder (local path, ``file://`` or ``s3://`` URI).
        split: ``train``, ``test`` or ``all``.
        fs: filesystem; None = local.
        require_boxes: raise if ``bounding_boxes.txt`` is missing.

    Returns:
        The records of the split, in ``images.txt`` order.

    Raises:
        ValueError: on an unknown split or a malformed line.
        FileNotFoundError: naming the missing annotation file.
    """
    _check_split(split, ("train", "test", "all"), "cub")
    fs = fs or LocalFS()
    images_txt = _join(root, "images.txt")
    split_txt = _join(root, "train_test_split.txt")
    boxes_txt = _join(root, "bounding_boxes.txt")
    images = [(i, p) for i, p in _table_rows(_read_text(fs, images_txt, "cub"), 2, images_txt)]
    is_train = {i: int(v) for i, v in _table_rows(_read_text(fs, split_txt, "cub"), 2, split_txt)}
    boxes: dict[str, Box] = {}
    try:
        boxes_text = _read_text(fs, boxes_txt, "cub")
    except FileNotFoundError:
        if require_boxes:
            raise
        log.warning("cub: %s not found; images get no boxes", boxes_txt)
        boxes_text = ""
    for fields in _table_rows(boxes_text, 5, boxes_txt):
        try:
            x, y, w, h = (float(v) for v in fields[1:5])
        except ValueError as e:
            raise InvalidInputError(
                f"{boxes_txt}: image id {fields[0]}: expected x y w h, got {fields[1:]}"
            ) from e
        boxes[fields[0]] = (x, y, x + w, y + h)
    records = []
    for image_id, rel in images:
        if image_id not in is_train:
            raise InvalidInputError(f"{split_txt}: image id {image_id} of {images_txt} has no split")
        rec_split = "train" if is_train[image_id] == 1 else "test"
        if split != "all" and rec_split != split:
            continue
        box = boxes.get(image_id)
        records.append(
            ImageRecord(
                path=_join(root, "images", rel),
                split=rec_split,
                boxes=(box,) if box is not None else (),
            )
        )
    return records


# ------------------------------------------------------------------------------------ Stanford Cars


def _load_mat(fs: FileSystemLike, path: str, what: str) -> dict[str, Any]:
    import scipy.io  # only the .mat readers need scipy

    data: dict[str, Any] = scipy.io.loadmat(io.BytesIO(_read_bytes(fs, path, what)))
    return data


def _mat_field(mat: dict[str, Any], name: str, path: str) -> np.ndarray:
    if name not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise InvalidInputError(f"{path}: no variable {name!r} (has {keys})")
    return np.asarray(mat[name])


def _mat_scalar(value: Any) -> float:
    return float(np.asarray(value).ravel()[0])


def _mat_str(value: Any) -> str:
    return str(np.asarray(value).ravel()[0])


def _read_cars_annos(
    fs: FileSystemLike, root: str, candidates: Sequence[str], folder: str
) -> list[ImageRecord]:
    split = "train" if folder == "cars_train" else "test"
    mat: dict[str, Any] | None = None
    path = ""
    for rel in candidates:
        path = _join(root, rel)
        try:
            mat = _load_mat(fs, path, "cars")
            break
        except FileNotFoundError:
            continue
    if mat is None:
        tried = ", ".join(_join(root, rel) for rel in candidates)
        raise MissingInputError(f"cars: expected one of {tried} for the {split} split; none was found")
    annos = _mat_field(mat, "annotations", path).ravel()
    names = annos.dtype.names or ()
    missing = [f for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "fname") if f not in names]
    if missing:
        raise InvalidInputError(f"{path}: 'annotations' lacks fields {missing} (has {list(names)})")
    records = []
    for a in annos:
        box = _from_one_based(*(_mat_scalar(a[f]) for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")))
        records.append(ImageRecord(path=_join(root, folder, _mat_str(a["fname"])), split=split, boxes=(box,)))
    return records


def read_cars(root: str, split: str = "train", fs: FileSystemLike | None = None) -> list[ImageRecord]:
    """Read Stanford Cars (Krause et al., 2013).

    Layout: images in ``cars_train/`` and ``cars_test/``; annotations ``devkit/cars_train_annos.mat`` and,
    for test, the first found of ``devkit/cars_test_annos_withlabels.mat``,
    ``cars_test_annos_withlabels.mat`` and ``devkit/cars_test_annos.mat`` (labels are never read, so the
    box-only file is enough). Each holds a 1×N struct array ``annotations`` with fields ``bbox_x1``,
    ``bbox_y1``, ``bbox_x2``, ``bbox_y2`` (1-based, inclusive pixel coordinates; 1 is subtracted to make
    them 0-based) and ``fname``. No image sizes.

    Args:
        root: data set folder (local path, ``file://`` or ``s3://`` URI).
        split: ``train``, ``test`` or ``all`` (train then test).
        fs: filesystem; None = local.

    Raises:
        ValueError: on an unknown split or a .mat file without the expected fields.
        FileNotFoundError: naming the missing annotation file(s).
    """
    _check_split(split, ("train", "test", "all"), "cars")
    fs = fs or LocalFS()
    records: list[ImageRecord] = []
    if split in ("train", "all"):
        records += _read_cars_annos(fs, root, ["devkit/cars_train_annos.mat"], "cars_train")
    if split in ("test", "all"):
        test_files = [
            "devkit/cars_test_annos_withlabels.mat",
            "cars_test_annos_withlabels.mat",
            "devkit/cars_test_annos.mat",
        ]
        records += _read_cars_annos(fs, root, test_files, "cars_test")
    return records


# ------------------------------------------------------------------------------------ FGVC-Aircraft


def read_aircraft(root: str, split: str = "train", fs: FileSystemLike | None = None) -> list[ImageRecord]:
    """Read FGVC-Aircraft (Maji et al., 2013).

    Layout: ``data/images_{train,val,test}.txt`` (one image name per line; ``data/images_trainval.txt``
    is their union and not needed), ``data/images_box.txt`` (``name xmin ymin xmax ymax``, 1-based; 1 is
    subtracted), images ``data/images/<name>.jpg``. No image sizes.

    Every image has a copyright banner in its bottom ``AIRCRAFT_BANNER_PX`` (20) rows. The boxes are in
    the full image's coordinates and the banner is left in the records; the jobs cut it off after
    decoding (:func:`default_crop_bottom`; the boxes stay valid, as they never reach into it).

    Args:
        root: data set folder (local path, ``file://`` or ``s3://`` URI), the one holding ``data/``.
        split: ``train``, ``val``, ``trainval`` (records keep their own ``train``/``val`` split),
            ``test`` or ``all``.
        fs: filesystem; None = local.

    Raises:
        ValueError: on an unknown split, a malformed line or an image without a box.
        FileNotFoundError: naming the missing annotation file.
    """
    _check_split(split, ("train", "val", "trainval", "test", "all"), "aircraft")
    fs = fs or LocalFS()
    parts = {"trainval": ("train", "val"), "all": ("train", "val", "test")}.get(split, (split,))
    box_txt = _join(root, "data", "images_box.txt")
    boxes: dict[str, Box] = {}
    for name, coords in _table_rows(_read_text(fs, box_txt, "aircraft"), 2, box_txt):
        values = _SEP.split(coords)
        if len(values) != 4:
            raise InvalidInputError(f"{box_txt}: image {name}: expected 4 coordinates, got {coords!r}")
        boxes[name] = _from_one_based(*(float(v) for v in values))
    records = []
    for part in parts:
        list_txt = _join(root, "data", f"images_{part}.txt")
        for line in _read_text(fs, list_txt, "aircraft").splitlines():
            name = line.strip()
            if not name:
                continue
            if name not in boxes:
                raise InvalidInputError(f"{box_txt}: no box for image {name} listed in {list_txt}")
            records.append(
                ImageRecord(
                    path=_join(root, "data", "images", f"{name}.jpg"), split=part, boxes=(boxes[name],)
                )
            )
    return records


# ------------------------------------------------------------------------------------- Stanford Dogs


def _parse_voc(xml: bytes, path: str) -> tuple[int | None, int | None, tuple[Box, ...]]:
    """Image size (None when absent or 0) and every ``<object><bndbox>`` of a VOC XML annotation."""
    try:
        tree = ET.fromstring(xml)
    except ET.ParseError as e:
        raise InvalidInputError(f"{path}: not a valid XML annotation: {e}") from e

    def size(tag: str) -> int | None:
        text = tree.findtext(f"size/{tag}")
        value = int(float(text)) if text and text.strip() else 0
        return value if value > 0 else None

    boxes = []
    for bndbox in tree.iter("bndbox"):
        try:
            box = tuple(float(bndbox.findtext(t) or "") for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as e:
            raise InvalidInputError(f"{path}: <bndbox> without numeric xmin/ymin/xmax/ymax") from e
        boxes.append((box[0], box[1], box[2], box[3]))
    return size("width"), size("height"), tuple(boxes)


def read_dogs(root: str, split: str = "train", fs: FileSystemLike | None = None) -> list[ImageRecord]:
    """Read Stanford Dogs (Khosla et al., 2011).

    Layout: ``train_list.mat`` / ``test_list.mat`` with N×1 cell arrays ``file_list`` (image paths
    relative to ``Images/``) and ``annotation_list`` (annotation paths relative to ``Annotation/``, no
    extension; ``<entry>.xml`` is tried too); one VOC XML per image with ``<size>`` and one
    ``<object><bndbox>`` per dog. **All** boxes are kept (PsyNet kept only the first); coordinates are
    used as stored (ImageNet's boxes, which wsolevaluation and PsyNet take as 0-based).

    Args:
        root: data set folder (local path, ``file://`` or ``s3://`` URI).
        split: ``train``, ``test`` or ``all`` (train then test).
        fs: filesystem; None = local. The XML files are read concurrently on remote filesystems.

    Raises:
        ValueError: on an unknown split, mismatched lists or a malformed XML file.
        FileNotFoundError: naming the missing list or annotation file.
    """
    _check_split(split, ("train", "test", "all"), "dogs")
    fs_: FileSystemLike = fs or LocalFS()
    records: list[ImageRecord] = []
    for part in ("train", "test") if split == "all" else (split,):
        list_path = _join(root, f"{part}_list.mat")
        mat = _load_mat(fs_, list_path, "dogs")
        files = [_mat_str(v) for v in _mat_field(mat, "file_list", list_path).ravel()]
        annos = [_mat_str(v) for v in _mat_field(mat, "annotation_list", list_path).ravel()]
        if len(files) != len(annos):
            raise InvalidInputError(f"{list_path}: {len(files)} files but {len(annos)} annotations")
        xml_paths = [_join(root, "Annotation", a) for a in annos]

        def read_xml(path: str) -> bytes:
            try:
                return _read_bytes(fs_, path, "dogs")
            except FileNotFoundError:
                return _read_bytes(fs_, path + ".xml", "dogs")

        for rel, xml_path, xml in zip(files, xml_paths, _read_many(fs_, xml_paths, read_xml), strict=True):
            width, height, boxes = _parse_voc(xml, xml_path)
            records.append(
                ImageRecord(
                    path=_join(root, "Images", rel), split=part, width=width, height=height, boxes=boxes
                )
            )
    return records


# ------------------------------------------------------------------------------ folders and boxes.csv


def _relative_to(found: str, root: str) -> str:
    """The part of a listed path below ``root``.

    Filesystems list paths in their own form (s3fs lists ``s3://b/p`` as ``b/p/...``, fsspec's local and
    memory filesystems as absolute paths), so scheme and leading slashes are ignored in the comparison.
    """

    def bare(path: str) -> str:
        return path.split("://", 1)[-1].strip("/")

    prefixes = [bare(root)]
    if "://" not in root:
        prefixes.append(bare(os.path.abspath(root).replace(os.sep, "/")))
    found_bare = bare(found)
    for prefix in prefixes:
        if found_bare.startswith(prefix + "/"):
            return found_bare[len(prefix) + 1 :]
    raise InvalidInputError(f"listed file {found} is not under {root}")


def read_image_folder(root: str, fs: FileSystemLike | None = None) -> list[ImageRecord]:
    """List every image under ``root`` recursively: split ``all``, no boxes, no sizes.

    Image files are those ending in one of ``IMAGE_EXTENSIONS`` (case-insensitive); others are skipped.
    Hidden files and folders (name starting with ``.``) are skipped too.

    Args:
        root: folder (local path, ``file://`` or ``s3://`` URI).
        fs: filesystem; None = local.

    Returns:
        Records sorted by path.

    Raises:
        FileNotFoundError: when no image file is found under ``root`` (missing or empty folder).
    """
    fs = fs or LocalFS()
    rels = []
    for found in fs.find(root):
        rel = _relative_to(found, root)
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        if os.path.splitext(rel)[1].lower() in IMAGE_EXTENSIONS:
            rels.append(rel)
    if not rels:
        raise MissingInputError(
            f"folder: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {root}"
        )
    return [ImageRecord(path=_join(root, rel), split="all") for rel in sorted(rels)]


def _optional_number(value: str | None) -> float | None:
    return float(value) if value is not None and value.strip() else None


def read_boxes_csv(root: str, csv: str = "boxes.csv", fs: FileSystemLike | None = None) -> list[ImageRecord]:
    """Read a folder described by a CSV of boxes: the images listed in it, split ``all``.

    The CSV has the header ``path,width,height,x0,y0,x1,y1`` (other columns are ignored) and one row per
    box; an image with several boxes has several rows. ``path`` is relative to ``root`` (an absolute
    path or URI is kept as is). Only images listed in the CSV are returned (an image file in the folder
    without a row is not part of the set); a row whose box fields are all empty lists an image without a
    box. ``width``/``height`` may be empty (unknown); they must agree across an image's rows. Boxes are
    0-based pixel coordinates, used as stored.

    Args:
        root: folder holding the CSV (local path, ``file://`` or ``s3://`` URI).
        csv: CSV file name, relative to ``root``.
        fs: filesystem; None = local.

    Returns:
        One record per distinct path, in order of first appearance, boxes in row order.

    Raises:
        FileNotFoundError: naming the missing CSV.
        ValueError: on missing columns, non-numeric or partial boxes, or inconsistent sizes.
    """
    fs = fs or LocalFS()
    csv_path = _join(root, csv)
    reader = _csv.DictReader(io.StringIO(_read_text(fs, csv_path, "boxes_csv")))
    missing = [c for c in BOXES_CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InvalidInputError(
            f"{csv_path}: missing columns {missing}; expected header {','.join(BOXES_CSV_COLUMNS)}"
        )
    sizes: dict[str, tuple[int | None, int | None]] = {}
    boxes: dict[str, list[Box]] = {}
    for lineno, row in enumerate(reader, start=2):
        where = f"{csv_path}:{lineno}"
        rel = (row["path"] or "").strip()
        if not rel:
            raise InvalidInputError(f"{where}: empty path")
        try:
            w, h = (_optional_number(row[c]) for c in ("width", "height"))
            coords = [_optional_number(row[c]) for c in ("x0", "y0", "x1", "y1")]
        except ValueError as e:
            raise InvalidInputError(f"{where}: non-numeric field: {e}") from e
        size = (int(w) if w is not None else None, int(h) if h is not None else None)
        if sizes.setdefault(rel, size) != size:
            raise InvalidInputError(
                f"{where}: size {size} of {rel} differs from an earlier row's {sizes[rel]}"
            )
        image_boxes = boxes.setdefault(rel, [])
        if all(c is None for c in coords):
            continue
        if any(c is None for c in coords):
            raise InvalidInputError(f"{where}: partial box {coords}")
        x0, y0, x1, y1 = (float(c) for c in coords if c is not None)
        image_boxes.append((x0, y0, x1, y1))
    records = []
    for rel, image_boxes in boxes.items():
        path = rel if rel.startswith("/") or "://" in rel else _join(root, rel)
        try:
            records.append(
                ImageRecord(
                    path=path,
                    split="all",
                    width=sizes[rel][0],
                    height=sizes[rel][1],
                    boxes=tuple(image_boxes),
                )
            )
        except ValueError as e:
            raise InvalidInputError(f"{csv_path}: {e}") from e
    return records


# ------------------------------------------------------------------------------------------ dispatch


def read_dataset(
    kind: str, root: str, split: str = "train", fs: FileSystemLike | None = None
) -> list[ImageRecord]:
    """Read a data set of one of ``DATASET_KINDS``.

    ``folder`` and ``boxes_csv`` have no splits: one collection is both the training and the
    evaluation set of co-localization, so every split name returns all its images (split ``all``).

    Args:
        kind: ``cub``, ``cars``, ``aircraft``, ``dogs``, ``folder`` or ``boxes_csv``.
        root: data set folder (local path, ``file://`` or ``s3://`` URI).
        split: ``train``, ``test``, ``val`` (aircraft), ``trainval`` (aircraft) or ``all``.
        fs: filesystem; None = local.

    Raises:
        ValueError: on an unknown kind or split.
        FileNotFoundError: naming a missing annotation file.
    """
    if kind == "cub":
        return read_cub(root, split, fs)
    if kind == "cars":
        return read_cars(root, split, fs)
    if kind == "aircraft":
        return read_aircraft(root, split, fs)
    if kind == "dogs":
        return read_dogs(root, split, fs)
    if kind in ("folder", "boxes_csv"):
        _check_split(split, (*SPLITS, "trainval"), kind)
        return read_image_folder(root, fs) if kind == "folder" else read_boxes_csv(root, fs=fs)
    raise InvalidInputError(f"unknown dataset kind {kind!r}; expected one of {DATASET_KINDS}")
