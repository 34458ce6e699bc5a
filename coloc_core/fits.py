"""The fitted kinds' collection statistics and fits.

They turn a collection into a DDT, RPS or self-trained localizer (:mod:`coloc_core.localizer`).

Each fit reads the collection in one or more streamed passes; a pass sums per-batch statistics that
add up across batches (a plain loop in tests, Ray Data in the labeling stage), and the fit itself is
a small computation on the driver:

- :func:`feature_statistics` (keys :data:`STATISTICS`; :func:`feature_moments` its first two): the
  one pass the training-free fits need.
- DDT (Wei et al., IJCAI 2017): :func:`ddt_from_moments` / :func:`ddt_from_statistics`, the mean
  descriptor and the principal direction (signed by the descriptor norm, chosen among
  :data:`DDT_CANDIDATES` components by its centre-versus-border contrast).
- RPS (Song et al., ICCV 2023): :func:`rps_from_statistics`, the representer-point direction.
- The self-trained head: :func:`class_statistics` (keys :data:`CLASS_STATISTICS`, one pass per
  round), Fisher's :func:`lda_from_class_statistics` and the quadratic
  :func:`qda_from_class_statistics` (both on :func:`_class_moments`), driven by
  :func:`fit_selftrain` with the defaults :data:`SELFTRAIN_ROUNDS`, :data:`SELFTRAIN_SHRINKAGE` and
  :data:`SELFTRAIN_BAND`; :func:`linear_score_std` sets each round's band.

The results are the arguments of :func:`coloc_core.localizer.baseline_payload` (``ddt_mean`` /
``ddt_vector``, ``rps_vector``, ``head_weight`` / ``head_bias`` / ``head_quadratic``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def feature_moments(features: Tensor) -> tuple[Tensor, Tensor, int]:
    """First and second moments of the pixel descriptors of a batch, to be summed across batches.

    Shape:
        features: (B, C, h, w). Returns sum_x (C,), sum_xxT (C, C), both float64, and the count B*h*w.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (B, C, h, w), got {tuple(features.shape)}")
    x = features.detach().permute(0, 2, 3, 1).reshape(-1, features.shape[1]).double()
    return x.sum(dim=0), x.T @ x, int(x.shape[0])


#: Keys of :func:`feature_statistics`: sums over the pixels (or images) of a batch, to be added up.
STATISTICS = (
    "sum_x",
    "sum_xxT",
    "count",
    "sum_xn",
    "sum_n",
    "sum_unit",
    "sum_gap",
    "images",
    "sum_x_border",
    "border_count",
)


def feature_statistics(features: Tensor) -> dict[str, Tensor]:
    """Every streamed statistic the training-free fits need, for one batch (add them across batches).

    With x the (C,) pixel descriptors and n = ‖x‖: ``sum_x`` Σx, ``sum_xxT`` ΣxxT (DDT),
    ``sum_xn`` Σx·n and ``sum_n`` Σn (DDT's sign), ``sum_unit`` Σx/‖x‖ (RPS's u), ``count`` the number
    of pixels; ``sum_gap`` the sum over images of the spatially averaged feature (RPS's v) and
    ``images`` their number; ``sum_x_border`` Σx over the pixels of the map's outer ring and
    ``border_count`` their number (DDT's choice of component, :func:`ddt_from_moments`). All float64
    (counts int64 tensors).

    Shape:
        features: (B, C, h, w).
    """
    sx, sxx, count = feature_moments(features)
    x = features.detach().permute(0, 2, 3, 1).reshape(-1, features.shape[1]).double()
    norms = x.norm(dim=1)
    unit = x / norms.clamp_min(1e-12)[:, None]
    ring = torch.ones(features.shape[2], features.shape[3], dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    border = features.detach().permute(0, 2, 3, 1)[:, ring].reshape(-1, features.shape[1]).double()
    return {
        "sum_x": sx,
        "sum_xxT": sxx,
        "count": torch.tensor(count, dtype=torch.int64),
        "sum_xn": (x * norms[:, None]).sum(dim=0),
        "sum_n": norms.sum(),
        "sum_unit": unit.sum(dim=0),
        "sum_gap": features.detach().double().mean(dim=(2, 3)).sum(dim=0),
        "images": torch.tensor(features.shape[0], dtype=torch.int64),
        "sum_x_border": border.sum(dim=0),
        "border_count": torch.tensor(int(border.shape[0]), dtype=torch.int64),
    }


def rps_from_statistics(sum_gap: Tensor, images: int, sum_unit: Tensor, count: int) -> Tensor:
    """The representer-point direction w = normalize(v − u·‖v‖/‖u‖) (Song et al., ICCV 2023).

    v = ``sum_gap / images`` (mean of the spatially averaged features), u = ``sum_unit / count`` (mean
    of the L2-normalised pixel features); see :func:`feature_statistics`.

    Raises:
        ValueError: no images, non-finite sums, or a degenerate direction (v parallel to u).
    """
    if images < 1 or count < 1:
        raise ValueError(f"RPS needs at least one image, got {images} images / {count} descriptors")
    v, u = sum_gap.double() / images, sum_unit.double() / count
    if not (torch.isfinite(v).all() and torch.isfinite(u).all()) or float(u.norm()) == 0.0:
        raise ValueError("RPS statistics are not finite (or every feature is zero)")
    w = v - u * v.norm() / u.norm()
    if float(w.norm()) <= 1e-12 * max(float(v.norm()), 1e-12):
        raise ValueError("RPS direction is degenerate: every pixel feature points the same way")
    return (w / w.norm()).float()


#: Self-training defaults, chosen on raccoon and confirmed on kangaroo (docs/RESULTS.md, issue 10):
#: rounds of the discriminant, its shrinkage (share of the mean eigenvalue added to the diagonal) and
#: the band: pixels within ``band`` standard deviations of the previous map's zero are left out.
SELFTRAIN_ROUNDS = 3
SELFTRAIN_SHRINKAGE = 1.0
SELFTRAIN_BAND = 0.5
#: Keys of :func:`class_statistics` (per-class sums, to be added up across batches).
CLASS_STATISTICS = ("fg_x", "fg_xxT", "fg_count", "bg_x", "bg_xxT", "bg_count")


def class_statistics(
    features: Tensor, weight: Tensor, bias: float, level: float, labels_from: Tensor | None = None
) -> dict[str, Tensor]:
    """Per-class moments of a batch's pixels under the linear map s = w · x + b.

    Foreground: s > ``level``; background: s < −``level``; the band in between is left out. Sums are
    float64 (counts int64) and add up across batches.

    ``labels_from``: other features of the same pixels (another backbone at the same side and stride)
    that s is computed on instead; the moments stay those of ``features``, and the moments of all its
    pixels (``sum_x``, ``sum_xxT``, ``count`` of :func:`feature_moments`) are added (the seeded first
    round of :func:`fit_selftrain`).

    Shape:
        features: (B, C, h, w); weight: (C,), or (C',) with ``labels_from`` (B, C', h, w).
    """
    x = features.detach().permute(0, 2, 3, 1).reshape(-1, features.shape[1]).double()
    if labels_from is None:
        s = x @ weight.double() + float(bias)
    else:
        if labels_from.shape[0] != features.shape[0] or labels_from.shape[2:] != features.shape[2:]:
            raise ValueError(
                f"the seed's feature map {tuple(labels_from.shape)} does not cover the same pixels as "
                f"{tuple(features.shape)}"
            )
        y = labels_from.detach().permute(0, 2, 3, 1).reshape(-1, labels_from.shape[1]).double()
        s = y @ weight.double() + float(bias)
    out: dict[str, Tensor] = {}
    for name, mask in (("fg", s > level), ("bg", s < -level)):
        part = x[mask]
        out[f"{name}_x"] = part.sum(dim=0)
        out[f"{name}_xxT"] = part.T @ part
        out[f"{name}_count"] = torch.tensor(int(part.shape[0]), dtype=torch.int64)
    if labels_from is not None:
        out["sum_x"], out["sum_xxT"], count = feature_moments(features)
        out["count"] = torch.tensor(count, dtype=torch.int64)
    return out


def linear_score_std(weight: Tensor, sum_x: Tensor, sum_xxT: Tensor, count: int) -> float:
    """Standard deviation over the collection's pixels of s = w · x (+ any constant), from moments."""
    mean = sum_x.double() / count
    cov = sum_xxT.double() / count - torch.outer(mean, mean)
    w = weight.double()
    return float(torch.sqrt((w @ cov @ w).clamp_min(0.0)))


def _class_moments(stats: dict[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
    """[(μ_fg, Σ_fg), (μ_bg, Σ_bg)] (float64, Σ symmetrised) from summed :func:`class_statistics`.

    Raises:
        ValueError: fewer than two pixels in a class.
    """
    fg, bg = int(stats["fg_count"]), int(stats["bg_count"])
    if fg < 2 or bg < 2:
        raise ValueError(
            f"self-training needs foreground and background pixels, got {fg} and {bg}: "
            "the collection's maps have no contrast"
        )
    moments = []
    for name, n in (("fg", fg), ("bg", bg)):
        mean = stats[f"{name}_x"].double() / n
        cov = stats[f"{name}_xxT"].double() / n - torch.outer(mean, mean)
        moments.append((mean, 0.5 * (cov + cov.T)))
    return moments


def lda_from_class_statistics(
    stats: dict[str, Tensor], shrinkage: float = SELFTRAIN_SHRINKAGE
) -> tuple[Tensor, float]:
    """Fisher's linear discriminant between the foreground and background pixels of :func:`class_statistics`.

    S = ½(Σ_fg + Σ_bg) + shrinkage · tr(S)/C · I; w = S⁻¹(μ_fg − μ_bg); b = −w · (μ_fg + μ_bg)/2, both
    scaled so that ‖w‖ = 1 (the map's scale does not matter downstream).

    Returns:
        (weight (C,) float32, bias).

    Raises:
        ValueError: fewer than two pixels in a class, or non-finite sums.
    """
    (mf, cf), (mb, cb) = _class_moments(stats)
    scatter = 0.5 * (cf + cb)
    channels = scatter.shape[0]
    scatter = scatter + float(shrinkage) * float(torch.trace(scatter)) / channels * torch.eye(
        channels, dtype=scatter.dtype
    )
    if not torch.isfinite(scatter).all() or not torch.isfinite(mf - mb).all():
        raise ValueError("self-training statistics are not finite")
    w = torch.linalg.solve(scatter, mf - mb)
    norm = float(w.norm())
    if not norm > 0.0:
        raise ValueError("self-training: the two classes have the same mean feature")
    bias = -0.5 * float(w @ (mf + mb)) / norm
    return (w / norm).float(), bias


def qda_from_class_statistics(
    stats: dict[str, Tensor], shrinkage: float = SELFTRAIN_SHRINKAGE
) -> tuple[Tensor, Tensor, float]:
    """Quadratic discriminant between the foreground and background pixels of :func:`class_statistics`.

    Each class is a Gaussian N(μ_k, Σ_k + t·I), both shrunk towards the same isotropic target
    t = shrinkage · (tr Σ_fg + tr Σ_bg) / 2C (the target of :func:`lda_from_class_statistics`; one
    shared target keeps the log-determinants comparable). With P_k = (Σ_k + t·I)⁻¹ the log-likelihood
    ratio log p_fg(x) − log p_bg(x) is xᵀQx + w·x + b with Q = ½(P_bg − P_fg), w = P_fg μ_fg −
    P_bg μ_bg, b = ½(μ_bgᵀP_bg μ_bg − μ_fgᵀP_fg μ_fg + log det P_fg − log det P_bg).

    Returns:
        (Q (C, C), w (C,), b), float32 tensors and a float.

    Raises:
        ValueError: fewer than two pixels in a class, or non-finite sums.
    """
    moments = _class_moments(stats)
    channels = moments[0][0].shape[0]
    spread = float(torch.trace(moments[0][1]) + torch.trace(moments[1][1]))
    target = float(shrinkage) * 0.5 * spread / channels
    if not all(torch.isfinite(m).all() and torch.isfinite(c).all() for m, c in moments) or not target > 0:
        raise ValueError("self-training statistics are not finite (or shrinkage is not positive)")
    parts = []
    for mean, cov in moments:
        precision = torch.linalg.inv(cov + target * torch.eye(channels, dtype=cov.dtype))
        precision = 0.5 * (precision + precision.T)
        parts.append((mean, precision, float(torch.linalg.slogdet(precision)[1])))
    (mf, pf, ldf), (mb, pb, ldb) = parts
    quadratic = 0.5 * (pb - pf)
    weight = pf @ mf - pb @ mb
    bias = 0.5 * (float(mb @ pb @ mb) - float(mf @ pf @ mf) + ldf - ldb)
    return quadratic.float(), weight.float(), bias


def fit_selftrain(
    statistics: dict[str, Tensor],
    class_pass: Any,
    rounds: int = SELFTRAIN_ROUNDS,
    shrinkage: float = SELFTRAIN_SHRINKAGE,
    band: float = SELFTRAIN_BAND,
    quadratic: bool = True,
    seeded: bool = False,
) -> tuple[Tensor, float, Tensor | None, list[dict[str, int]]]:
    """Self-train the head: the DDT map labels the pixels, then each head relabels them.

    Every round is one ``class_pass``. The rounds before the last fit Fisher's linear discriminant;
    the last one fits the quadratic discriminant (:func:`qda_from_class_statistics`) when
    ``quadratic`` (the default), else a linear one too. A quadratic last round lets each class keep
    its own spread (the background of a collection varies far more than its object does); measured in
    docs/RESULTS.md (issue 10).

    ``seeded``: the DDT map that labels the first round is another backbone's (the seed's:
    ``statistics`` are its features'), while the head is fitted on the features ``class_pass``
    gathers. The first call is then ``class_pass(weight, bias, level, seed=True)``, which labels each
    pixel with the seed's features and also returns the moments of the head's own features
    (``class_statistics(..., labels_from=...)``); the later rounds' bands use those. A stronger
    backbone whose own first principal component is a poorer object detector gets the better seed
    (EfficientNet-Lite2 seeded by Lite0's DDT, docs/RESULTS.md, issue 10).

    Args:
        statistics: summed :func:`feature_statistics` of the collection (the DDT fit's pass; of the
            seed's features when ``seeded``).
        class_pass: ``class_pass(weight, bias, level)`` → summed :func:`class_statistics` of the same
            collection (one streamed pass; a plain loop in tests, Ray Data in the labeling stage).
        rounds: discriminants fitted in turn (each on the previous map's labels), at least 1.
        shrinkage: see :func:`lda_from_class_statistics` and :func:`qda_from_class_statistics`.
        band: pixels with |s| ≤ band · std(s) are left out of a round.
        quadratic: fit the last round's head as a quadratic discriminant.
        seeded: the first round's labels come from a seed backbone (see above).

    Returns:
        (weight (C,), bias, quadratic term (C, C) or None, one ``{"round", "foreground",
        "background"}`` pixel count per round): the arguments of
        :class:`coloc_core.localizer.SelfTrainLocalizer`.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    moments = statistics
    mean, vector = ddt_from_statistics(statistics)
    weight, bias = vector, -float(mean.double() @ vector.double())
    history: list[dict[str, int]] = []
    square: Tensor | None = None
    for r in range(rounds):
        level = band * linear_score_std(weight, moments["sum_x"], moments["sum_xxT"], int(moments["count"]))
        if seeded and r == 0:
            stats = class_pass(weight, bias, level, seed=True)
            if int(stats.get("count", 0)) < 2:
                raise ValueError("the seeded round returned no moments of the head's own features")
            moments = stats
        else:
            stats = class_pass(weight, bias, level)
        if quadratic and r == rounds - 1:
            square, weight, bias = qda_from_class_statistics(stats, shrinkage)
        else:
            weight, bias = lda_from_class_statistics(stats, shrinkage)
        history.append(
            {"round": r + 1, "foreground": int(stats["fg_count"]), "background": int(stats["bg_count"])}
        )
    return weight, bias, square, history


def ddt_from_moments(
    sum_x: Tensor,
    sum_xxT: Tensor,
    count: int,
    sum_xn: Tensor | None = None,
    sum_n: Tensor | float | None = None,
    sum_x_border: Tensor | None = None,
    border_count: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Mean descriptor and principal direction from streamed moments (DDT, Wei et al. 2017).

    cov = sum_xxT / n - mean meanᵀ; the direction is the eigenvector of the largest eigenvalue. Its
    sign is chosen so that the projection correlates positively with the descriptor norm ‖x‖ (the
    object is where features are strong) when ``sum_xn``/``sum_n`` are given: Cov(proj, ‖x‖) =
    v · (E[x‖x‖] − E[x] E[‖x‖]) > 0, which works for signed features (an earlier layer) as well as
    post-ReLU ones; without them, ``vector.sum() > 0`` (post-ReLU features only).

    With ``sum_x_border``/``border_count`` (the descriptors of the maps' outer ring), the direction is
    the one of the :data:`DDT_CANDIDATES` largest components (each signed as above) whose projection
    is highest inside the maps relative to their border, in units of its own standard deviation:
    v · (E[x | interior] − E[x | border]) / √λ. The first component is usually that one; where it
    is not (a factor of the photos' framing, e.g. padding at the border, that varies more than the
    object: measured on kangaroo at 416×416, docs/RESULTS.md), this weak centre prior keeps the
    object's component.

    Shape:
        sum_x: (C,); sum_xxT: (C, C); sum_xn: (C,); sum_x_border: (C,). Returns mean (C,) and unit
        vector (C,), float32.

    Raises:
        ValueError: when ``count < 2``, the shapes disagree, or the moments are not finite.
    """
    if count < 2:
        raise ValueError(f"DDT needs at least 2 descriptors, got {count}")
    channels = sum_x.shape[0]
    if sum_x.ndim != 1 or sum_xxT.shape != (channels, channels):
        raise ValueError(f"moment shapes disagree: {tuple(sum_x.shape)} and {tuple(sum_xxT.shape)}")
    sx, sxx = sum_x.double(), sum_xxT.double()
    if not (torch.isfinite(sx).all() and torch.isfinite(sxx).all()):
        raise ValueError("DDT moments are not finite")
    mean = sx / count
    cov = sxx / count - torch.outer(mean, mean)
    cov = 0.5 * (cov + cov.T)
    values, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues
    cov_norm = None
    if sum_xn is not None and sum_n is not None:
        cov_norm = sum_xn.double() / count - mean * (float(sum_n) / count)

    def signed(vector: Tensor) -> Tensor:
        agree = float(vector @ cov_norm) if cov_norm is not None else float(vector.sum())
        return -vector if agree < 0 else vector

    vector = signed(vectors[:, -1])
    inner = count - int(border_count or 0)
    if sum_x_border is not None and border_count and inner > 0:
        ring = sum_x_border.double() / int(border_count)
        lift = (sx - sum_x_border.double()) / inner - ring  # interior mean − border mean
        best = -math.inf
        for k in range(1, min(DDT_CANDIDATES, channels) + 1):
            if float(values[-k]) <= 0:
                break
            candidate = signed(vectors[:, -k])
            contrast = float(candidate @ lift) / math.sqrt(float(values[-k]))
            if contrast > best:
                best, vector = contrast, candidate
    return mean.float(), (vector / vector.norm()).float()


#: Components :func:`ddt_from_moments` chooses among by their centre-versus-border contrast.
DDT_CANDIDATES = 3


def ddt_from_statistics(statistics: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """:func:`ddt_from_moments` of summed :func:`feature_statistics` (uses every key it finds)."""
    border = statistics.get("border_count")
    return ddt_from_moments(
        statistics["sum_x"],
        statistics["sum_xxT"],
        int(statistics["count"]),
        statistics.get("sum_xn"),
        statistics.get("sum_n"),
        statistics.get("sum_x_border"),
        None if border is None else int(border),
    )
