"""Predict boxes in code: load a model once, then ``predict(image)`` (the labeling stage's own steps).

    from coloc_core import Predictor

    predictor = Predictor.load("runs/cub/model.pt")           # or Predictor.from_method("caam")
    p = predictor.predict("photo.jpg", all_boxes=True)         # a path, a PIL image or an HxWx3 uint8 array
    p.box, p.score, p.heatmap, p.boxes, p.scores               # boxes in the photo's own pixels

What runs, per image (the same functions as ``pipelines.label``, which calls them too):

1. :func:`prepare_image`: a file through the labeling stage's own decode (:mod:`coloc_core.decode`:
   a JPEG at a reduced DCT scale, the declared-size limit, the truncated-file check); EXIF orientation
   applied, RGB (transparency on white), bilinear resize to the model's square input
   (:func:`coloc_core.localizer.payload_input_size`: 224, or a CAML model's crop).
2. :func:`attention_maps`: normalise → the localizer's attention map (bf16 autocast on CUDA).
3. :func:`coloc_core.heatmap.quantize_heatmap`: the uint8 heatmap the predictions table stores.
4. :func:`locate` (:func:`cut_boxes`, then :func:`score_cut`): from that heatmap the SPEC §6 score
   map at 224, one box per region of the mask at τ
   (:func:`coloc_core.boxes.region_boxes_from_scoremap`), each with its
   :func:`coloc_core.box_score.box_score`; the image's box is the best-scored one (``pick="score"``,
   the default) or the single largest contour's (``pick="largest"``, SPEC §6); with ``all_boxes``
   every region's box is returned too; all mapped to the original image with
   :func:`coloc_core.boxes.boxes_to_original`. A model file that stores its
   collection's box contents adds each box's content term to its score: the box is cropped from the
   model's input and encoded by the backbone (:mod:`coloc_core.box_content`). A model file whose
   typical box stores ``repeats`` (the fitted labelers') subtracts each box's repetition excess too,
   from the features of step 2's forward pass (:func:`maps_and_features`,
   :func:`coloc_core.box_score.box_repetition`).

So ``predict`` on an image file gives the row ``coloc label`` writes for it with the same model file.

**Which models.** Any model file: a trained CAML network or the self-trained head that ``coloc train``
exports (``model.pt``), a calibrated one (``coloc calibrate``), or the ``_model.pt`` that ``coloc
label`` writes into its output folder for the methods it fits on the collection (``selftrain``,
``ddt``, ``rps``). The fitted methods need statistics of a whole collection, so they are not built
from a name: fit them with ``coloc train`` (or ``coloc label --method=...``) and load the file.
:meth:`Predictor.from_method` builds the two that need no fit, ``caam`` and ``full``.

A file that cannot be used raises what the labeling stage records as the row's error: e.g.
:class:`coloc_core.decode.ImageTooLargeError` for a header declaring more than
:data:`coloc_core.decode.MAX_PIXELS` pixels, :class:`coloc_core.decode.TruncatedImageError` for a JPEG
whose data ends early.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Union

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from coloc_core.box_content import CONTENT_BOUND, ContentScorer
from coloc_core.box_score import box_repetition, box_score, has_repeats, payload_box_sizes
from coloc_core.boxes import (
    boxes_from_scoremap,
    boxes_to_original,
    region_boxes_from_scoremap,
    scoremap_from_attention,
)
from coloc_core.checkpoint import read_model_payload
from coloc_core.decode import decode_image, resize_displayed
from coloc_core.heatmap import dequantize_heatmap, quantize_heatmap
from coloc_core.localizer import (
    CAAMLocalizer,
    Localizer,
    baseline_payload,
    localizer_from_payload,
    payload_input_size,
)
from coloc_core.model import normalize_images

ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray]
"""What :meth:`Predictor.predict` takes: a file path, a PIL image, or an (H, W, 3) uint8 RGB array."""

#: The training-free methods that need no collection statistics (:meth:`Predictor.from_method`).
UNFITTED_METHODS = ("caam", "full")
#: Methods fitted on a collection: load their model file instead (module docstring).
FITTED_METHODS = ("selftrain", "ddt", "rps")
#: Which box of the mask at τ is the image's box: ``score``, the region whose box scores highest
#: (:func:`coloc_core.box_score.box_score`, content term included: the region most like the collection's
#: object; the largest region on ties), or ``largest``, the single largest contour (SPEC §6, the paper's
#: and wsolevaluation's box, which ``coloc evaluate``'s CorLoc@δ measures). ``score`` scores every
#: region, so a model with the content term runs one more backbone pass per other region that could
#: still win (:func:`content_terms`; docs/RESULTS.md, issue 10: "The box of the best-scored region").
PICKS = ("score", "largest")
DEFAULT_PICK = "score"
#: With ``pick="score"``, a region whose box covers less than this share of the largest contour's box
#: is not a candidate for the image's box (nor is its crop encoded for that): most extra regions are
#: specks (about 80% of them under 1/8 of it on the boxed sets), and the smallest region the score
#: picked over the largest one covered 0.23 of it (docs/RESULTS.md, issue 10: "The box of the
#: best-scored region"). Labeling then takes about 1.1× the time of ``largest``, not 1.3-1.4×.
PICK_MIN_SHARE = 1.0 / 16.0


# ------------------------------------------------------------------------------------------ images


def prepare_image(
    image: ImageInput, size: int, crop_bottom: int = 0
) -> tuple[npt.NDArray[np.uint8], int, int]:
    """An image → (the model's input, original width, original height).

    A file is decoded by :func:`coloc_core.decode.decode_image` (the labeling stage's decode: JPEG
    draft mode, the declared-size limit, the truncated-file check); a PIL image or array is oriented,
    converted and resized by the same steps (:func:`coloc_core.decode.resize_displayed`).

    Args:
        image: a file path, a PIL image (EXIF orientation applied, as for files) or a NumPy array
            (H, W, 3) uint8 RGB (or (H, W) grey), taken as displayed.
        size: side of the square model input.
        crop_bottom: rows cut off the displayed image's bottom first (a banner, such as
            FGVC-Aircraft's 20-px copyright line; ``coloc_core.decode``).

    Returns:
        ``(pixels (size, size, 3) uint8, width, height)``; width/height of the displayed image, the
        height less ``crop_bottom``.

    Raises:
        ValueError: an array of another shape or dtype, a non-positive size, an empty file, or
            :class:`coloc_core.decode.ImageTooLargeError` (a file whose header declares more than
            :data:`coloc_core.decode.MAX_PIXELS` pixels).
        OSError: a file PIL cannot read, or :class:`coloc_core.decode.TruncatedImageError` (its data
            ends early).
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as fh:
            pixels, width, height = decode_image(fh.read(), size, crop_bottom=crop_bottom)
        return pixels, width, height
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise ValueError(
                f"an image array must be (H, W, 3) or (H, W) uint8, got {image.dtype} {image.shape}"
            )
        im = Image.fromarray(np.ascontiguousarray(image))  # no EXIF: taken as displayed
    elif isinstance(image, Image.Image):
        im = image
    else:
        raise TypeError(
            f"cannot predict on a {type(image).__name__}: pass a path, a PIL image or a uint8 array"
        )
    (pixels,), width, height = resize_displayed(im, (size,), crop_bottom=crop_bottom)
    return pixels, width, height


# ------------------------------------------------------------------------------------- the network


def _network_input(localizer: Localizer, images: npt.NDArray[np.uint8] | torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) images → the normalised float input on the localizer's device.

    channels_last on every device (:func:`inference_layout`). Call inside ``torch.inference_mode``.
    """
    device = next((p.device for p in localizer.parameters()), torch.device("cpu"))
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    x = normalize_images(x.to(device, non_blocking=True), localizer.mean, localizer.std)
    return x.contiguous(memory_format=torch.channels_last)


def inference_layout(localizer: Localizer, device: torch.device) -> Localizer:
    """The localizer made ready for forward passes only: eval mode, BatchNorm folded, channels_last.

    Each backbone that can (``fold_batchnorm``: EfficientNet-Lite0) folds its BatchNorms into the
    convolutions, 1.2x on the CPU, and the memory layout is channels_last on every device, another
    1.2-1.3x for EfficientNet-Lite0's depthwise convolutions on one core (docs/BENCHMARKS.md,
    labeling); the maps are equal to float rounding (< 1e-6). The result is for inference only: not
    to be trained or saved.
    """
    localizer = localizer.eval()
    for module in list(localizer.modules()):
        fold = getattr(module, "fold_batchnorm", None)
        if callable(fold):
            fold()
    return localizer.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload,no-any-return]


def attention_maps(
    localizer: Localizer, images: npt.NDArray[np.uint8] | torch.Tensor
) -> npt.NDArray[np.float32]:
    """Attention maps of a batch of uint8 images, on the localizer's device.

    The one inference path of the project: labeling actors, the Python API and training's per-epoch
    evaluation all call it. The input is channels_last; on CUDA the forward pass runs under bf16
    autocast.

    Shape:
        images: (B, H, W, 3) uint8 RGB. Returns (B, h, w) float32 (CPU NumPy).
    """
    with torch.inference_mode():
        x = _network_input(localizer, images)
        with _precision(x):
            maps = localizer(x)
        return np.asarray(maps.float().cpu().numpy(), dtype=np.float32)


def _precision(x: torch.Tensor) -> contextlib.AbstractContextManager[Any]:
    """The forward pass's precision: bf16 autocast on CUDA, full precision elsewhere."""
    if x.device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def feature_maps(localizer: CAAMLocalizer, images: npt.NDArray[np.uint8] | torch.Tensor) -> torch.Tensor:
    """The backbone features a fitted labeler reads (its layer), for a batch of uint8 images.

    The same input path as :func:`attention_maps`, in full precision (the collection statistics of
    DDT, RPS and the self-trained head are sums over millions of pixels).

    Shape:
        images: (B, H, W, 3) uint8 RGB. Returns (B, C, h, w) float32 (CPU).
    """
    with torch.inference_mode():
        return localizer.features(_network_input(localizer, images)).float().cpu()


def maps_and_features(
    localizer: Localizer, images: npt.NDArray[np.uint8] | torch.Tensor, features: bool = True
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
    """:func:`attention_maps`, and with ``features`` the features they were computed from, in one pass.

    The features are those of a :class:`coloc_core.localizer.CAAMLocalizer` (DDT, RPS, the
    self-trained head: the layer they read), for the repetition term of the scores
    (:func:`coloc_core.box_score.box_repetition`); None for other localizers or without
    ``features``. The maps are :func:`attention_maps`' own (the same forward pass, split in two).

    Shape:
        images: (B, H, W, 3) uint8. Returns (B, h, w) float32 and (B, C, h, w) float32 (CPU NumPy).
    """
    if not features or not isinstance(localizer, CAAMLocalizer):
        return attention_maps(localizer, images), None
    with torch.inference_mode():
        x = _network_input(localizer, images)
        with _precision(x):
            feats = localizer.features(x)
            maps = localizer.from_features(feats)
        return (
            np.asarray(maps.float().cpu().numpy(), dtype=np.float32),
            np.asarray(feats.float().cpu().numpy(), dtype=np.float32),
        )


def scores_repeats(localizer: Localizer, box_sizes: dict[str, Any] | None) -> bool:
    """Whether the scores take the repetition term.

    For a model whose typical box has ``repeats`` (the fitted labelers,
    :func:`coloc_core.box_score.repeat_statistic`) and whose features are at hand.
    """
    return isinstance(localizer, CAAMLocalizer) and has_repeats(box_sizes)


# ------------------------------------------------------------------------------------------- boxes


@dataclass
class Location:
    """Boxes of one stored heatmap, in original pixel coordinates (far corner inclusive).

    Attributes:
        box: the image's box at τ (:data:`PICKS`: the best-scored region's by default, or the single
            largest contour's). Shape: (4,) float32 ``[x0, y0, x1, y1]``.
        score: its :func:`coloc_core.box_score.box_score`.
        boxes: with ``all_boxes``, one box per region of the mask at τ, best score first
            (Shape: (N, 4) float32, N >= 0); else None.
        scores: their scores (Shape: (N,) float32); else None.
    """

    box: npt.NDArray[np.float32]
    score: float
    boxes: npt.NDArray[np.float32] | None = None
    scores: npt.NDArray[np.float32] | None = None


@dataclass
class Cut:
    """The boxes of one stored heatmap at τ, in the 224×224 score map's pixels, not yet scored.

    Attributes:
        scoremap: the SPEC §6 score map. Shape: (224, 224) float64.
        box: the single largest-contour box. Shape: (1, 4).
        regions: one box per region of the mask (Shape: (N, 4)), when they are needed (``all_boxes``,
            or ``pick="score"``); else None.
        pick: which box is the image's (:data:`PICKS`).
        report: whether the regions' boxes go into the :class:`Location` (``all_boxes``).
        grid: for the repetition term, ``(heat, features, τ)``: the dequantised heatmap (h, w), the
            model's features on its grid (C, h, w) and τ, when the features were given
            (:func:`cut_boxes`); else None.
    """

    scoremap: npt.NDArray[np.float64]
    box: npt.NDArray[np.float64]
    regions: npt.NDArray[np.float64] | None = None
    pick: str = "largest"
    report: bool = False
    grid: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], float] | None = None
    _repetitions: dict[tuple[float, ...], float] = field(default_factory=dict, init=False, repr=False)

    def repetition_of(self, box: npt.ArrayLike) -> float | None:
        """:func:`coloc_core.box_score.box_repetition` of a box (None without features).

        Measured when a score first needs it (a speck that is never scored costs nothing), then kept.
        """
        if self.grid is None:
            return None
        key = tuple(np.asarray(box, dtype=np.float64).reshape(4).tolist())
        if key not in self._repetitions:
            heat, features, threshold = self.grid
            self._repetitions[key] = box_repetition(heat, features, key, threshold, self.scoremap.shape)
        return self._repetitions[key]

    def candidates(self, boxes: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """Which ``boxes`` (N, 4) may be the image's box with ``pick="score"``.

        Those covering at least :data:`PICK_MIN_SHARE` of the largest contour's box (so the box itself).
        """
        return _box_areas(boxes) >= PICK_MIN_SHARE * _box_areas(self.box)[0]

    def all_boxes(self) -> npt.NDArray[np.float64]:
        """The box, then each region's box that differs from it: the boxes a content term is for.

        The largest region's box is usually the box itself, so it is listed once. Shape: (1 + M, 4).
        """
        if self.regions is None:
            return self.box
        regions = self.regions.reshape(-1, 4)
        other = regions[~(regions == self.box.reshape(1, 4)).all(axis=1)]
        return np.concatenate([self.box.reshape(1, 4), other])


def _box_areas(boxes: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return (b[:, 2] - b[:, 0] + 1.0) * (b[:, 3] - b[:, 1] + 1.0)


def content_terms(
    cuts: Sequence[Cut],
    threshold: float | Sequence[float],
    box_sizes: dict[str, Any] | None,
    encode: Callable[[list[int], list[npt.NDArray[np.float64]]], Sequence[npt.ArrayLike]],
) -> list[npt.NDArray[np.float64]]:
    """The content term of each box of each cut's :meth:`Cut.all_boxes`, NaN where it cannot matter.

    Two rounds of ``encode(positions, boxes)`` (the positions of cuts in ``cuts``, and one (k, 4) array
    of boxes each; it returns one array of k terms each: the images' crops encoded by
    :class:`coloc_core.box_content.ContentScorer`): first each cut's own box, then the other regions'
    boxes that need it. All of them when the cut returns its regions (``all_boxes``); with
    ``pick="score"`` only the candidates (:meth:`Cut.candidates`) whose score without the term, plus
    the most the term can add (:data:`coloc_core.box_content.CONTENT_BOUND`), beats the box's full
    score: the others cannot become the image's box, so their crops are not encoded (the same box as
    encoding all, for fewer backbone passes). ``threshold``: τ of all cuts, or one per cut.
    """
    taus = [float(threshold)] * len(cuts) if isinstance(threshold, (int, float)) else list(threshold)
    if len(taus) != len(cuts):
        raise ValueError(f"{len(taus)} thresholds for {len(cuts)} cuts")
    first = encode(list(range(len(cuts))), [cut.box.reshape(1, 4) for cut in cuts])
    out: list[npt.NDArray[np.float64]] = []
    later: list[int] = []
    later_boxes: list[npt.NDArray[np.float64]] = []
    later_rows: list[npt.NDArray[np.intp]] = []
    for pos, (cut, tau, term) in enumerate(zip(cuts, taus, first, strict=True)):
        boxes = cut.all_boxes()
        row = np.full(len(boxes), np.nan)
        row[0] = float(np.asarray(term, dtype=np.float64).reshape(-1)[0])
        need = np.zeros(len(boxes), dtype=bool)
        if cut.report:
            need[1:] = True
        elif cut.pick == "score" and len(boxes) > 1:
            full = box_score(cut.scoremap, cut.box[0], tau, box_sizes, row[0], cut.repetition_of(cut.box[0]))
            for j in np.flatnonzero(cut.candidates(boxes)):
                if j > 0:
                    repeat = cut.repetition_of(boxes[j])
                    bound = box_score(cut.scoremap, boxes[j], tau, box_sizes, 0.0, repeat)
                    need[j] = bound + CONTENT_BOUND > full
        if need.any():
            later.append(pos)
            later_boxes.append(boxes[need])
            later_rows.append(np.flatnonzero(need))
        out.append(row)
    if later:
        for pos, rows, terms in zip(later, later_rows, encode(later, later_boxes), strict=True):
            out[pos][rows] = np.asarray(terms, dtype=np.float64).reshape(-1)
    return out


def check_pick(pick: str) -> str:
    """``pick`` if it is one of :data:`PICKS`, else a ValueError naming them."""
    if pick not in PICKS:
        raise ValueError(f"pick={pick!r} is not one of {', '.join(PICKS)}")
    return pick


def cut_boxes(
    heatmap: npt.NDArray[np.uint8],
    threshold: float,
    all_boxes: bool = False,
    pick: str = DEFAULT_PICK,
    features: npt.NDArray[np.float32] | None = None,
) -> Cut:
    """The unscored boxes of a stored heatmap at τ (the first half of :func:`locate`).

    Score map S = :func:`coloc_core.boxes.scoremap_from_attention` of the dequantised heatmap
    (224×224, SPEC §6), its single box ``boxes_from_scoremap(S, τ)`` and, with ``all_boxes`` or
    ``pick="score"``, every box of :func:`coloc_core.boxes.region_boxes_from_scoremap` at τ. With
    ``features`` (the model's, (C, h, w) on the heatmap's grid: :func:`maps_and_features`), the cut
    measures each box's :func:`coloc_core.box_score.box_repetition` when its score needs it.

    Raises:
        ValueError: a bad heatmap shape or features of another grid, or an unknown ``pick``.
    """
    check_pick(pick)
    heat = dequantize_heatmap(heatmap)
    scoremap = scoremap_from_attention(heat)
    box = np.asarray(boxes_from_scoremap(scoremap, threshold, multi_contour=False), dtype=np.float64)
    regions = None
    if all_boxes or pick == "score":
        regions = np.asarray(region_boxes_from_scoremap(scoremap, threshold), dtype=np.float64).reshape(-1, 4)
    grid = None if features is None else (heat, features, float(threshold))
    return Cut(scoremap, box.reshape(-1, 4)[:1], regions, pick=pick, report=all_boxes, grid=grid)


def score_cut(
    cut: Cut,
    threshold: float,
    orig_wh: tuple[int, int],
    box_sizes: dict[str, Any] | None = None,
    content: npt.ArrayLike | None = None,
) -> Location:
    """Score a :class:`Cut`, pick the image's box, and map the boxes to the original image's pixels.

    Each box gets ``box_score(S, box, τ, box_sizes, content, repetition)`` (the stability term is the
    map's, the compactness term the box's own; the repetition when the cut has it); the regions are
    sorted by score (ties: larger region first). With ``cut.pick == "score"`` the image's box is the
    best-scored candidate region's (:meth:`Cut.candidates`; the largest contour's when it scores as
    high: on ties and when the mask has no region), else the largest contour's.
    Boxes are mapped with :func:`coloc_core.boxes.boxes_to_original`.

    Args:
        cut: what :func:`cut_boxes` cut.
        threshold: τ the boxes were cut at.
        orig_wh: (width, height) of the original image.
        box_sizes: the model's typical box (:func:`locate`).
        content: the content term of each box of ``cut.all_boxes()`` (:func:`content_terms`); NaN for
            a region that cannot become the image's box (not when the cut returns its regions);
            None = without the term.

    Raises:
        ValueError: a bad image size, or content terms that do not match the boxes.
    """
    width, height = int(orig_wh[0]), int(orig_wh[1])
    encoded = cut.all_boxes()
    terms = np.zeros(len(encoded)) if content is None else np.asarray(content, dtype=np.float64).reshape(-1)
    if len(terms) != len(encoded):
        raise ValueError(f"{len(terms)} content terms for {len(encoded)} boxes")
    if np.isnan(terms[0]) or (cut.report and np.isnan(terms).any()):
        raise ValueError("a content term is missing for a box that is scored")
    term_of = {tuple(b): float(t) for b, t in zip(encoded.tolist(), terms.tolist(), strict=True)}
    repeat_of = cut.repetition_of
    best = cut.box[0]
    score = float(box_score(cut.scoremap, best, threshold, box_sizes, terms[0], repeat_of(best)))
    if cut.regions is None:
        return Location(box=boxes_to_original(cut.box, (height, width)).reshape(4), score=score)
    regions = cut.regions.reshape(-1, 4)
    # a region without a term cannot beat the box (content_terms): it is not scored
    scores = np.array(
        [
            -np.inf if np.isnan(t) else box_score(cut.scoremap, b, threshold, box_sizes, t, repeat_of(b))
            for b, t in ((b, term_of[tuple(b.tolist())]) for b in regions)
        ],
        dtype=np.float64,
    )
    order = np.argsort(-scores, kind="stable")
    eligible = order[cut.candidates(regions)[order] & np.isfinite(scores[order])]
    if cut.pick == "score" and len(eligible) and scores[eligible[0]] > score:
        best, score = regions[eligible[0]], float(scores[eligible[0]])
    location = Location(box=boxes_to_original(best.reshape(1, 4), (height, width)).reshape(4), score=score)
    if cut.report:
        location.boxes = (
            boxes_to_original(regions[order], (height, width)).reshape(-1, 4)
            if len(regions)
            else np.zeros((0, 4), dtype=np.float32)
        )
        location.scores = scores[order].astype(np.float32)
    return location


def locate(
    heatmap: npt.NDArray[np.uint8],
    threshold: float,
    orig_wh: tuple[int, int],
    all_boxes: bool = False,
    box_sizes: dict[str, Any] | None = None,
    content: Callable[[npt.NDArray[np.float64]], npt.ArrayLike] | None = None,
    pick: str = DEFAULT_PICK,
    features: npt.NDArray[np.float32] | None = None,
) -> Location:
    """The box(es) and score(s) of a stored uint8 heatmap, in the original image's pixels.

    :func:`cut_boxes`, then :func:`score_cut`.

    Args:
        heatmap: Shape: (h, w) uint8 (the predictions table's ``heatmap``).
        threshold: τ in [0, 1).
        orig_wh: (width, height) of the original image.
        all_boxes: also return every region's box.
        box_sizes: the model's typical box (``coloc_core.box_score.payload_box_sizes``): the scores
            take its typicality term; None = without it.
        content: given some of the image's boxes ((k, 4), score-map pixels), their k content terms
            (:class:`coloc_core.box_content.ContentScorer`, which needs the image); called for the
            box, then for the regions that need a term (:func:`content_terms`); None = without.
        pick: which region's box is the image's (:data:`PICKS`).
        features: the model's features on the heatmap's grid ((C, h, w), :func:`maps_and_features`):
            the scores take the repetition term when ``box_sizes`` has ``repeats``; None = without.

    Raises:
        ValueError: a bad heatmap shape or image size, or an unknown ``pick``.
    """
    cut = cut_boxes(heatmap, threshold, all_boxes, pick, features)
    terms = None
    if content is not None:
        (terms,) = content_terms([cut], threshold, box_sizes, lambda _, boxes: [content(boxes[0])])
    return score_cut(cut, threshold, orig_wh, box_sizes, terms)


# ------------------------------------------------------------------------------------------ the API


@dataclass
class Prediction:
    """What :meth:`Predictor.predict` returns for one image (original pixel coordinates).

    Attributes:
        box: Shape: (4,) float32 ``[x0, y0, x1, y1]``, far corner inclusive (``0 <= x0 <= x1 <= width - 1``).
        score: the box's confidence in [−4, 3] (``coloc_core.box_score.box_score``).
        heatmap: the min-max normalised attention map at feature resolution. Shape: (h, w) uint8.
        width: the image's width (displayed orientation).
        height: its height.
        threshold: τ the boxes were cut at.
        boxes: with ``all_boxes=True``, every region's box, best score first (Shape: (N, 4) float32);
            else None.
        scores: their scores (Shape: (N,) float32); else None.
    """

    box: npt.NDArray[np.float32]
    score: float
    heatmap: npt.NDArray[np.uint8]
    width: int
    height: int
    threshold: float
    boxes: npt.NDArray[np.float32] | None = None
    scores: npt.NDArray[np.float32] | None = None

    def scoremap(self) -> npt.NDArray[np.float64]:
        """The SPEC §6 score map the boxes were cut from. Shape: (224, 224) float64 in [0, 1]."""
        return scoremap_from_attention(dequantize_heatmap(self.heatmap))


class Predictor:
    """A localizer loaded once, predicting boxes on images one by one or in batches.

    Build it with :meth:`load` (a model file) or :meth:`from_method` (``caam`` | ``full``).

    Args:
        payload: a model-file payload (``coloc_core.checkpoint.read_model_payload``).
        threshold: τ; None = the one stored with the model.
        device: torch device (``"cpu"``, ``"cuda"``, ...); None = CPU.
        pick: which region's box is the image's (:data:`PICKS`; ``coloc label --pick``).
    """

    def __init__(
        self,
        payload: dict[str, Any],
        threshold: float | None = None,
        device: str | None = None,
        pick: str = DEFAULT_PICK,
    ) -> None:
        self.pick = check_pick(pick)
        self.localizer = localizer_from_payload(payload)
        self.device = torch.device(device or "cpu")
        self.localizer = inference_layout(self.localizer, self.device)
        self.model_id = str(payload.get("model_id", ""))
        tau = float(payload["threshold"] if threshold is None else threshold)
        if not 0.0 <= tau < 1.0:
            raise ValueError(f"threshold={tau} must be in [0, 1)")
        # τ as the predictions table stores it (float32), so the boxes are the labeling stage's
        self.threshold = float(np.float32(tau))
        self.input_size = payload_input_size(payload)
        self.box_sizes = payload_box_sizes(payload, tau)
        # The repetition term (coloc_core.box_score.box_repetition): the features of each forward pass.
        self.repeats = scores_repeats(self.localizer, self.box_sizes)
        # The content term of the scores (coloc_core.box_content), when the model file stores the
        # collection's box contents: one more backbone pass per box, at 224.
        self.content = ContentScorer.from_payload(payload, self.device)

    @classmethod
    def load(
        cls,
        model: str | os.PathLike[str] | bytes,
        threshold: float | None = None,
        device: str | None = None,
        pick: str = DEFAULT_PICK,
    ) -> Predictor:
        """A predictor from a model file (path or its bytes): CAML, self-trained head, DDT, RPS, ...

        Raises:
            InvalidInputError: (a ``ValueError``) when the file is not a coloc model file.
        """
        if isinstance(model, (bytes, bytearray)):
            payload = read_model_payload(bytes(model))
        else:
            with open(model, "rb") as fh:
                payload = read_model_payload(fh.read(), os.fspath(model))
        return cls(payload, threshold=threshold, device=device, pick=pick)

    @classmethod
    def from_method(
        cls,
        method: str,
        backbone: str = "efficientnet_lite0",
        weights: str | None = "auto",
        threshold: float | None = None,
        device: str | None = None,
        pick: str = DEFAULT_PICK,
    ) -> Predictor:
        """A training-free predictor that needs no fit: ``caam`` (the backbone's channel mean) or ``full``.

        Raises:
            ValueError: for ``selftrain``/``ddt``/``rps`` (fitted on a collection: load the model file
                that ``coloc train`` or ``coloc label --method=...`` wrote) and unknown names.
        """
        if method in FITTED_METHODS:
            raise ValueError(
                f"method {method!r} is fitted on a collection's statistics: fit it with `coloc train` "
                f"(selftrain) or `coloc label --method={method}` and load the model file it writes "
                "(model.pt, or <labels>/_model.pt) with Predictor.load"
            )
        if method not in UNFITTED_METHODS:
            raise ValueError(f"method {method!r} is not one of {', '.join(UNFITTED_METHODS)}")
        payload = baseline_payload(method, backbone=backbone, weights=weights)
        return cls(payload, threshold=threshold, device=device, pick=pick)

    def predict(self, image: ImageInput, all_boxes: bool = False, crop_bottom: int = 0) -> Prediction:
        """Box, score and heatmap of one image (path, PIL image or (H, W, 3) uint8 array).

        ``crop_bottom``: rows cut off the image's bottom before it is seen (FGVC-Aircraft's banner:
        ``coloc_core.datasets.AIRCRAFT_BANNER_PX``); the box keeps the image's coordinates.

        Raises:
            ValueError: when the model's attention map is not finite, or on a bad array.
        """
        return self.predict_batch([image], all_boxes=all_boxes, crop_bottom=crop_bottom)[0]

    def predict_batch(
        self,
        images: Sequence[ImageInput],
        all_boxes: bool = False,
        batch_size: int = 32,
        crop_bottom: int = 0,
    ) -> list[Prediction]:
        """:meth:`predict` on many images, ``batch_size`` per forward pass; results in input order."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            prepared = [
                prepare_image(im, self.input_size, crop_bottom) for im in images[start : start + batch_size]
            ]
            pixels = np.stack([p[0] for p in prepared])
            maps, feats = maps_and_features(self.localizer, pixels, self.repeats)
            if not np.isfinite(maps).all():
                raise ValueError("the model's attention map is not finite")
            heatmaps = [quantize_heatmap(attn) for attn in maps]
            cuts = [
                cut_boxes(heatmap, self.threshold, all_boxes, self.pick, None if feats is None else feats[k])
                for k, heatmap in enumerate(heatmaps)
            ]
            terms: list[Any] = [None] * len(cuts)
            if self.content is not None:
                aspects = np.array([width / height for _, width, height in prepared], dtype=np.float64)
                encode = partial(_encode_crops, self.content, pixels, aspects)
                terms = content_terms(cuts, self.threshold, self.box_sizes, encode)
            for (_, width, height), heatmap, cut, term in zip(prepared, heatmaps, cuts, terms, strict=True):
                loc = score_cut(cut, self.threshold, (width, height), self.box_sizes, term)
                out.append(
                    Prediction(
                        box=loc.box,
                        score=loc.score,
                        heatmap=heatmap,
                        width=width,
                        height=height,
                        threshold=self.threshold,
                        boxes=loc.boxes,
                        scores=loc.scores,
                    )
                )
        return out


def _encode_crops(
    scorer: ContentScorer,
    pixels: npt.NDArray[np.uint8],
    aspects: npt.NDArray[np.float64],
    at: list[int],
    boxes: list[npt.NDArray[np.float64]],
) -> list[npt.NDArray[np.float64]]:
    """:func:`content_terms`' encoder for model inputs: the terms of ``boxes`` of ``pixels[at]``.

    ``aspects``: each original image's width / height (which side of a box is its longer one).
    """
    return scorer.terms(pixels[at], boxes, list(aspects[at]))


def load(
    model: str | os.PathLike[str] | bytes,
    threshold: float | None = None,
    device: str | None = None,
    pick: str = DEFAULT_PICK,
) -> Predictor:
    """:meth:`Predictor.load`: a predictor from a model file."""
    return Predictor.load(model, threshold=threshold, device=device, pick=pick)
