"""The content term of the box score: how typical the box's content is of the collection's boxes.

A co-localization collection holds one kind of object, so a box that holds that object looks like the
boxes of the other images, and a box around clutter, a part, or a merge of the object with its
surroundings looks less like them. The term measures that on the model's own backbone:

1. each box is cropped from the model's square input image and resized to
   :data:`CONTENT_SIDE` × :data:`CONTENT_SIDE` (bilinear, antialiased);
2. the crop is encoded by the model's backbone **at its original output stride** (EfficientNet-Lite
   at 32, as it was trained on ImageNet; the stride-16 network the maps are read from gives a much
   weaker descriptor, docs/RESULTS.md, issue 10) and its last feature map averaged: the crop's
   descriptor d;
3. c = cos(d, m), with m the mean descriptor of the boxes of a sample of the collection (the fit's
   typical-box pass, at most ``TYPICAL_BOX_IMAGES`` images), stored in the model file as
   ``box_contents`` with the mean and standard deviation of c over that sample;
4. z = (c − mean) / std: one standard deviation of c over the collection is worth 0.25 in the term,
   about one standard deviation of the other terms of the score over the same images;
5. the box's two halves across its longer side (as the box lies in the original image) are encoded
   the same way, and the better half's z_half is compared with z: a box around the object and
   something else (two animals of a group, a bird and the branch beside it) has a half that looks more
   like the collection's boxes than the whole box does, while a box around one object has halves that
   are parts of it and look less typical. The term is :data:`CONTENT_WEIGHT` · clip(z − max(0,
   z_half − z), ±:data:`CONTENT_CLIP`), in [−1, 1]: a half more typical than the box costs the box
   what the half gains.

It costs three forward passes of the backbone at 224 per box scored (the box and its halves; together
about half the self-trained head's pass at 480). The collection's statistics are of whole boxes, so
model files written before the halves score with them unchanged. Model files without
``box_contents`` (CAAM, the full box, files of earlier versions) score without the term. Measured in
docs/RESULTS.md (issue 10: "The content term", and "Halves more typical than their box").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from coloc_core.backbones import Backbone, build_backbone
from coloc_core.boxes import SCOREMAP_SIZE
from coloc_core.errors import InvalidInputError
from coloc_core.localizer import payload_kind

#: Side of the square a box's crop is resized to before it is encoded.
CONTENT_SIDE = 224
#: The term's weight per standard deviation of the collection's cosines, and the deviation (in
#: standard deviations) from which it stops growing: the term is in [−WEIGHT·CLIP, WEIGHT·CLIP].
CONTENT_WEIGHT, CONTENT_CLIP = 0.25, 4.0
#: The largest the term can be, either way: a box whose score without it is this much below another
#: box's full score cannot overtake that box (``coloc_core.predict.content_terms`` skips its crop).
CONTENT_BOUND = CONTENT_WEIGHT * CONTENT_CLIP
#: The smallest standard deviation of the cosines a collection may have (a collection of identical
#: crops would otherwise divide by zero).
CONTENT_MIN_SPREAD = 1e-3
#: Crops encoded per forward pass.
CONTENT_BATCH = 32
# The kinds whose payload holds a ``backbone.*`` state that this module can rebuild at stride 32.
_KINDS = ("colocnet", "caam", "ddt", "rps", "selftrain")
_RESTRIDED = ("efficientnet_lite0", "efficientnet_lite2")


def box_content_statistics(descriptors: npt.ArrayLike) -> dict[str, Any]:
    """The collection's typical box content: mean descriptor m and the mean / std of cos(d, m).

    Returns:
        ``{"mean": [C floats], "cos_mean", "cos_spread", "images"}``; ``cos_spread`` is at least
        :data:`CONTENT_MIN_SPREAD`.

    Raises:
        ValueError: no descriptor, descriptors that are not finite, or a zero mean descriptor.

    Shape:
        descriptors: (N, C).
    """
    d = np.asarray(descriptors, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] == 0:
        raise ValueError(f"box_content_statistics needs (N, C) descriptors with N >= 1, got {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError("box content descriptors are not finite")
    mean = d.mean(axis=0)
    if not float(np.linalg.norm(mean)) > 0.0:
        raise ValueError("the mean box content descriptor is zero")
    cos = _cosines(d, mean)
    return {
        "mean": [float(v) for v in mean],
        "cos_mean": float(cos.mean()),
        "cos_spread": max(float(cos.std()), CONTENT_MIN_SPREAD),
        "images": int(d.shape[0]),
    }


def box_content_terms(
    descriptors: npt.ArrayLike, box_contents: dict[str, Any], halves: npt.ArrayLike | None = None
) -> npt.NDArray[np.float64]:
    """The content term of each box: CONTENT_WEIGHT · clip(z − max(0, z_half − z), ±CLIP).

    z = (cos(d, m) − mean) / std is how typical the box's content is; z_half the same for the more
    typical of its two halves (:func:`long_side_halves`), when ``halves`` are given: a half that looks
    more like the collection's boxes than the whole box costs the box what it gains. A descriptor of
    zero norm (an all-zero feature map) has cosine 0.

    Shape:
        descriptors: (N, C); halves: (N, 2, C) or None. Returns (N,) float64 in [−1, 1].
    """
    size = len(box_contents["mean"])
    z = _typicality(np.asarray(descriptors, dtype=np.float64).reshape(-1, size), box_contents)
    if halves is not None:
        h = np.asarray(halves, dtype=np.float64).reshape(len(z), -1, size)
        z_half = np.max([_typicality(h[:, k], box_contents) for k in range(h.shape[1])], axis=0)
        z = z - np.maximum(0.0, z_half - z)
    return CONTENT_WEIGHT * np.clip(z, -CONTENT_CLIP, CONTENT_CLIP)


def _typicality(d: npt.NDArray[np.float64], box_contents: dict[str, Any]) -> npt.NDArray[np.float64]:
    """(cos(d, m) − mean) / std per row of d: the content's standardised cosine with the mean box."""
    cos = _cosines(d, np.asarray(box_contents["mean"], dtype=np.float64))
    spread = max(float(box_contents["cos_spread"]), CONTENT_MIN_SPREAD)
    return (cos - float(box_contents["cos_mean"])) / spread


def long_side_halves(box: npt.ArrayLike, aspect: float = 1.0) -> npt.NDArray[np.float64]:
    """The two halves of a box (score-map pixels, inclusive) cut across its longer side.

    ``aspect`` is the original image's width / height: the score map is the image resized to a square,
    so a box's sides are compared as they are in the image (a wide bird in a tall photo stays wide).

    Shape:
        box: (4,). Returns (2, 4): left and right halves, or top and bottom.
    """
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    if (x1 - x0 + 1.0) * aspect >= (y1 - y0 + 1.0):
        xm = (x0 + x1) / 2.0
        return np.array([[x0, y0, xm, y1], [xm, y0, x1, y1]])
    ym = (y0 + y1) / 2.0
    return np.array([[x0, y0, x1, ym], [x0, ym, x1, y1]])


def payload_box_contents(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The ``box_contents`` a model file stores, checked; None when it has none.

    Unlike ``box_sizes`` they apply at any τ: a box cut at another τ holds much the same content, and
    a shift of every image's cosine by the same amount leaves the ranking unchanged.

    Raises:
        InvalidInputError: (a ``ValueError``) stored contents that are malformed (missing keys,
            non-finite values).
    """
    contents = payload.get("box_contents")
    if not contents:
        return None
    try:
        mean = [float(v) for v in contents["mean"]]
        out: dict[str, Any] = {
            "mean": mean,
            "cos_mean": float(contents["cos_mean"]),
            "cos_spread": float(contents["cos_spread"]),
            "images": int(contents["images"]),
            # whether a box's halves are compared with it (:func:`box_content_terms`); files written
            # before the option have no key and take it (their statistics are of whole boxes too)
            "halves": bool(contents.get("halves", True)),
        }
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidInputError(f"the model file's box_contents are malformed: {err}") from None
    if not mean or not all(math.isfinite(v) for v in (*mean, out["cos_mean"], out["cos_spread"])):
        raise InvalidInputError("the model file's box_contents are not finite")
    return out


def content_backbone(payload: dict[str, Any]) -> Backbone | None:
    """The model's backbone at its original output stride, with the model's weights; None if it has none.

    The training-free and fitted kinds (CAAM, DDT, RPS, the self-trained head) and CAML's trained
    ColocNet (its backbone named under the config's ``model``) store their backbone under
    ``backbone.*``; an EfficientNet-Lite is rebuilt at output stride 32 (the weights do not depend on
    the stride), any other backbone at the stride of its config. The full box has none. Eval mode,
    CPU.
    """
    kind = payload_kind(payload)  # a file without a kind is a trained ColocNet
    cfg = payload.get("config") or {}
    if kind == "colocnet":
        cfg = cfg.get("model") or {}  # CAML's method config: the backbone is under ``model``
    if kind not in _KINDS or "backbone" not in cfg:
        return None
    name = str(cfg["backbone"])
    stride = 32 if name in _RESTRIDED else cfg.get("output_stride")
    backbone = build_backbone(name, weights=None, output_stride=stride)
    prefix = "backbone."
    state = {k[len(prefix) :]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)}
    backbone.load_state_dict(state)
    return backbone.eval()


class ContentScorer:
    """Encodes box crops with a model's backbone and gives their content terms.

    Build it with :meth:`from_payload`. :meth:`descriptors` needs no collection statistics (the fit
    measures them with it); :meth:`terms` needs the model's ``box_contents``.

    Args:
        backbone: the model's backbone at its original stride (:func:`content_backbone`).
        box_contents: the collection's statistics (:func:`payload_box_contents`), or None.
        device: where the crops are encoded.
    """

    def __init__(
        self,
        backbone: Backbone,
        box_contents: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        backbone = backbone.eval()
        fold = getattr(backbone, "fold_batchnorm", None)
        if callable(fold):
            fold()  # inference only, as coloc_core.predict.inference_layout does for the localizer
        self.backbone = backbone.to(self.device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.box_contents = box_contents

    @classmethod
    def from_payload(
        cls, payload: dict[str, Any], device: str | torch.device = "cpu", need_contents: bool = True
    ) -> ContentScorer | None:
        """The scorer of a model file; None when it cannot score content.

        ``need_contents``: None also when the file stores no ``box_contents`` (the labeling stage and
        the Python API); False for the fit's pass that measures them.
        """
        contents = payload_box_contents(payload)
        if need_contents and contents is None:
            return None
        backbone = content_backbone(payload)
        if backbone is None:
            return None
        return cls(backbone, contents, device)

    def descriptors(
        self, images: npt.NDArray[np.uint8], boxes: Sequence[npt.ArrayLike]
    ) -> list[npt.NDArray[np.float32]]:
        """The descriptor of each box of each image.

        Args:
            images: (B, S, S, 3) uint8, the model's square inputs.
            boxes: per image, (k_i, 4) boxes in the 224×224 score map's pixels (SPEC §6: inclusive
                ``[x0, y0, x1, y1]``), as :func:`coloc_core.boxes.boxes_from_scoremap` cuts them.

        Returns:
            Per image, (k_i, C) float32.
        """
        if len(images) != len(boxes):
            raise ValueError(f"{len(images)} images but boxes for {len(boxes)}")
        crops: list[torch.Tensor] = []
        counts: list[int] = []
        for image, image_boxes in zip(images, boxes, strict=True):
            b = np.asarray(image_boxes, dtype=np.float64).reshape(-1, 4)
            counts.append(len(b))
            crops.extend(_crop(image, box) for box in b)
        out = np.zeros((len(crops), 0), dtype=np.float32)
        if crops:
            parts = []
            with torch.inference_mode():
                for start in range(0, len(crops), CONTENT_BATCH):
                    x = torch.stack(crops[start : start + CONTENT_BATCH]).to(self.device)
                    x = self.backbone.normalize(x).contiguous(memory_format=torch.channels_last)
                    if x.device.type == "cuda":
                        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                            features = self.backbone.features_at(x, "output")
                    else:
                        features = self.backbone.features_at(x, "output")
                    parts.append(features.float().mean(dim=(2, 3)).cpu().numpy())
            out = np.concatenate(parts).astype(np.float32)
        split = np.cumsum(counts)[:-1]
        return list(np.split(out, split)) if counts else []

    def terms(
        self,
        images: npt.NDArray[np.uint8],
        boxes: Sequence[npt.ArrayLike],
        aspects: Sequence[float] | None = None,
    ) -> list[npt.NDArray[np.float64]]:
        """The content term of each box of each image (:func:`box_content_terms`); see :meth:`descriptors`.

        Each box is encoded with its two halves across its longer side (:func:`long_side_halves`;
        ``aspects``: each original image's width / height, 1 when not given): three crops per box, one
        when the model's ``box_contents`` say ``halves: false``.

        Raises:
            ValueError: when the scorer has no ``box_contents``.
        """
        if self.box_contents is None:
            raise ValueError("this content scorer has no box_contents to compare with")
        if aspects is None:
            aspects = [1.0] * len(boxes)
        if len(aspects) != len(boxes):
            raise ValueError(f"{len(aspects)} aspects for boxes of {len(boxes)} images")
        if not self.box_contents.get("halves", True):  # a model file that turns them off: one crop per box
            return [
                box_content_terms(d, self.box_contents) if len(d) else np.zeros(0)
                for d in self.descriptors(images, boxes)
            ]
        expanded = []
        for image_boxes, aspect in zip(boxes, aspects, strict=True):
            b = np.asarray(image_boxes, dtype=np.float64).reshape(-1, 4)
            expanded.append(np.concatenate([b, *(long_side_halves(box, float(aspect)) for box in b)]))
        out = []
        for b, d in zip(expanded, self.descriptors(images, expanded), strict=True):
            k = len(b) // 3  # the boxes, then each box's two halves in the boxes' order
            halves = d[k:].reshape(k, 2, -1)
            out.append(box_content_terms(d[:k], self.box_contents, halves) if k else np.zeros(0))
        return out


def _crop(image: npt.NDArray[np.uint8], box: npt.NDArray[np.float64]) -> torch.Tensor:
    """The box (score-map pixels, inclusive) of a square uint8 image, resized: (3, SIDE, SIDE) in [0, 1]."""
    side_h, side_w = int(image.shape[0]), int(image.shape[1])
    sx, sy = side_w / SCOREMAP_SIZE[1], side_h / SCOREMAP_SIZE[0]
    x0 = min(max(int(math.floor(box[0] * sx)), 0), side_w - 1)
    y0 = min(max(int(math.floor(box[1] * sy)), 0), side_h - 1)
    x1 = min(max(int(math.ceil((box[2] + 1) * sx)), x0 + 1), side_w)
    y1 = min(max(int(math.ceil((box[3] + 1) * sy)), y0 + 1), side_h)
    # A copy: Ray hands the actor read-only arrays, which torch.from_numpy warns about.
    patch = torch.from_numpy(np.array(image[y0:y1, x0:x1])).permute(2, 0, 1)[None].float() / 255.0
    resized = F.interpolate(
        patch, size=(CONTENT_SIDE, CONTENT_SIDE), mode="bilinear", align_corners=False, antialias=True
    )
    return resized[0].clamp_(0.0, 1.0)


def _cosines(d: npt.NDArray[np.float64], mean: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    norms = np.linalg.norm(d, axis=1) * float(np.linalg.norm(mean))
    dots = d @ mean
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
