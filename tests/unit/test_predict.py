"""coloc_core.predict: the one-call Python API, checked against the labeling stage on real image files."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from coloc_core import Prediction, Predictor
from coloc_core.backbones import build_backbone
from coloc_core.box_score import payload_box_sizes
from coloc_core.boxes import iou_matrix
from coloc_core.decode import MAX_PIXELS, ImageTooLargeError, TruncatedImageError, decode_image
from coloc_core.localizer import baseline_payload, payload_input_size
from coloc_core.synthetic import make_synthetic_image


def _brightness_payload(threshold: float = 0.2) -> dict:
    """CAAM over a tiny backbone whose channels are blurred brightness detectors: it finds bright squares."""
    state = {}
    for key, value in build_backbone("tiny", weights=None).state_dict().items():
        if key.endswith("weight"):
            state[key] = torch.full_like(value, 1.0 / (value.shape[1] * value.shape[2] * value.shape[3]))
        else:
            state[key] = torch.zeros_like(value)
    return baseline_payload("caam", backbone="tiny", backbone_state=state, threshold=threshold)


def _random_payload() -> dict:
    torch.manual_seed(0)
    return baseline_payload("caam", backbone="tiny", weights=None)


def _save(payload: dict, path: Path) -> Path:
    buf = io.BytesIO()
    torch.save(payload, buf)
    path.write_bytes(buf.getvalue())
    return path


def _bird_png(tmp_path: Path, seed: int, width: int, height: int) -> Path:
    """A generated bird photo written as a PNG file (``tmp_path/bird.png``)."""
    image, _ = make_synthetic_image(np.random.default_rng(seed), width, height)
    png = tmp_path / "bird.png"
    image.save(png)
    return png


def _dark(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(10, 50, (height, width, 3)).astype(np.uint8)


def _label_row(model_file: Path, image_file: Path, all_boxes: bool) -> dict:
    """The row the labeling stage writes for one file: its decoder, model actor and box step (no Ray)."""
    from coloc_core.checkpoint import read_model_payload
    from pipelines import ingest
    from pipelines.label_actors import LocalizeBatch

    payload = read_model_payload(model_file.read_bytes())
    image, width, height = decode_image(image_file.read_bytes(), payload_input_size(payload))
    actor = LocalizeBatch(
        model_uri=str(model_file),
        threshold=float(payload["threshold"]),
        model_id=payload["model_id"],
        num_threads=torch.get_num_threads(),
        all_boxes=all_boxes,
        box_sizes=payload_box_sizes(payload, float(payload["threshold"])),  # as LabelPlan gives them
    )
    batch = {
        ingest.PATH: np.array([str(image_file)], dtype=object),
        ingest.INDEX: np.array([0], dtype=np.int64),
        ingest.WIDTH: np.array([width]),
        ingest.HEIGHT: np.array([height]),
        ingest.IMAGE: image[None],
        ingest.ERROR: np.array([None], dtype=object),
    }
    return actor(batch).to_pylist()[0]


def _assert_same_as_row(pred: Prediction, row: dict) -> None:
    from pipelines import schema
    from pipelines.predictions import decode_heatmap_row

    assert (pred.width, pred.height) == (row["width"], row["height"])
    np.testing.assert_array_equal(pred.heatmap, decode_heatmap_row(row))
    np.testing.assert_array_equal(pred.box, np.array([row[c] for c in schema.BOX_COLUMNS], np.float32))
    assert pred.score == pytest.approx(row["score"], abs=1e-6)  # the table stores float32
    assert pred.threshold == row["threshold"]
    if row["boxes"] is None:
        assert pred.boxes is None and pred.scores is None
    else:
        table_boxes = np.array([[b[c] for c in schema.BOX_COLUMNS] for b in row["boxes"]], np.float32)
        np.testing.assert_array_equal(pred.boxes, table_boxes.reshape(-1, 4))
        np.testing.assert_allclose(pred.scores, [b["score"] for b in row["boxes"]], atol=1e-6)


@pytest.mark.parametrize("all_boxes", [False, True])
def test_predict_on_a_file_gives_the_labeling_stage_row(tmp_path, all_boxes):
    # A generated bird on clutter, non-square, as PNG, and a random tiny model: whatever the map looks
    # like, the API and the labeling stage must agree to the bit.
    png = _bird_png(tmp_path, 1, 300, 200)
    model = _save(_random_payload(), tmp_path / "model.pt")
    pred = Predictor.load(model).predict(png, all_boxes=all_boxes)
    _assert_same_as_row(pred, _label_row(model, png, all_boxes))


def test_a_model_with_a_typical_box_scores_the_same_in_the_api_and_the_labeling_stage(tmp_path):
    png = _bird_png(tmp_path, 2, 260, 240)
    plain = _random_payload()
    sizes = {"median": -4.0, "spread": 0.1, "images": 50, "threshold": plain["threshold"]}
    model = _save({**plain, "box_sizes": sizes}, tmp_path / "typical.pt")
    pred = Predictor.load(model).predict(png, all_boxes=True)
    _assert_same_as_row(pred, _label_row(model, png, all_boxes=True))
    # The box is far larger than the stated typical one (e^-4 ≈ 2% of the image): the term costs.
    without = Predictor(plain).predict(png)
    assert pred.score < without.score and np.array_equal(pred.box, without.box)


@pytest.mark.parametrize("all_boxes", [False, True])
def test_a_model_with_repeats_scores_the_same_in_the_api_and_the_labeling_stage(tmp_path, all_boxes):
    from coloc_core.box_score import box_repetition
    from coloc_core.heatmap import dequantize_heatmap
    from coloc_core.localizer import localizer_from_payload
    from coloc_core.predict import cut_boxes, maps_and_features

    png = _bird_png(tmp_path, 4, 300, 240)
    plain = _random_payload()
    sizes = {"median": -1.0, "spread": 0.5, "images": 50, "threshold": plain["threshold"]}
    model = _save({**plain, "box_sizes": {**sizes, "repeats": 0.0}}, tmp_path / "repeats.pt")
    pred = Predictor.load(model).predict(png, all_boxes=all_boxes)
    _assert_same_as_row(pred, _label_row(model, png, all_boxes=all_boxes))
    # The score is the one without the term less the box's repetition (over a collection value of 0).
    pixels, _, _ = decode_image(png.read_bytes(), payload_input_size(plain))
    maps, feats = maps_and_features(localizer_from_payload(plain).eval(), pixels[None].copy())
    assert feats is not None and feats.shape[2:] == maps.shape[1:]
    cut = cut_boxes(pred.heatmap, pred.threshold)
    if all_boxes:  # the regions' scores are in order; the box is the best-scored one
        assert pred.scores is not None and list(pred.scores) == sorted(pred.scores, reverse=True)
    without = Predictor({**plain, "box_sizes": sizes}).predict(png)
    if np.array_equal(pred.box, without.box):
        repeat = box_repetition(dequantize_heatmap(pred.heatmap), feats[0], cut.box[0], pred.threshold)
        assert repeat > 0.0
        assert pred.score == pytest.approx(without.score - repeat, abs=1e-5)
    else:  # another region won once the term was counted
        assert pred.score <= without.score + 1e-6


@pytest.mark.parametrize("all_boxes", [False, True])
def test_a_model_with_box_contents_scores_the_same_in_the_api_and_the_labeling_stage(tmp_path, all_boxes):
    from coloc_core.box_content import ContentScorer, box_content_statistics
    from coloc_core.predict import cut_boxes

    png = _bird_png(tmp_path, 3, 280, 220)
    plain = _random_payload()
    rng = np.random.default_rng(0)
    contents = box_content_statistics(rng.random((20, 32)))
    model = _save({**plain, "box_contents": contents}, tmp_path / "content.pt")
    pred = Predictor.load(model).predict(png, all_boxes=all_boxes)
    _assert_same_as_row(pred, _label_row(model, png, all_boxes=all_boxes))
    # The same box as without the term; the score moved by exactly the crop's content term.
    without = Predictor(plain).predict(png)
    np.testing.assert_array_equal(pred.box, without.box)
    scorer = ContentScorer.from_payload({**plain, "box_contents": contents})
    pixels, _, _ = decode_image(png.read_bytes(), payload_input_size(plain))
    cut = cut_boxes(pred.heatmap, pred.threshold)
    (term,) = scorer.terms(pixels[None], [cut.box])
    assert term[0] != 0.0
    assert pred.score == pytest.approx(without.score + term[0], abs=1e-6)


def test_a_large_exif_rotated_jpeg_decodes_as_the_labeling_stage_decodes_it(tmp_path):
    # 640x480 stored, EXIF orientation 6 (rotate 90° clockwise to display): displayed 480x640; large
    # enough for the reduced-scale JPEG decode, which the API must do the same way.
    array = _dark(640, 480)
    array[100:300, 350:600] = 230
    exif = Image.Exif()
    exif[0x0112] = 6
    jpg = tmp_path / "rotated.jpg"
    Image.fromarray(array).save(jpg, format="JPEG", quality=92, exif=exif.tobytes())
    model = _save(_brightness_payload(), tmp_path / "oracle.pt")
    pred = Predictor.load(model).predict(str(jpg), all_boxes=True)
    assert (pred.width, pred.height) == (480, 640)
    _assert_same_as_row(pred, _label_row(model, jpg, all_boxes=True))


def test_boxes_are_in_original_pixels_for_every_input_kind(tmp_path):
    # A bright 120x80 rectangle in a 400x250 image: the oracle's box lands on it in the image's pixels.
    array = _dark(400, 250)
    truth = (200, 60, 319, 139)  # inclusive
    array[truth[1] : truth[3] + 1, truth[0] : truth[2] + 1] = 230
    png = tmp_path / "rect.png"
    Image.fromarray(array).save(png)
    predictor = Predictor(_brightness_payload())
    by_array = predictor.predict(array)
    by_pil = predictor.predict(Image.fromarray(array))
    by_path = predictor.predict(png)
    for pred in (by_pil, by_path):
        np.testing.assert_array_equal(pred.box, by_array.box)
        np.testing.assert_array_equal(pred.heatmap, by_array.heatmap)
    assert (by_array.width, by_array.height) == (400, 250)
    assert by_array.heatmap.dtype == np.uint8 and by_array.heatmap.shape == (56, 56)
    assert iou_matrix(by_array.box, truth)[0, 0] > 0.8
    assert by_array.box[2] <= 399 and by_array.box[3] <= 249


def test_all_boxes_finds_each_object_with_its_own_score():
    array = _dark(320, 240, seed=2)
    big, small = (20, 30, 139, 149), (220, 150, 279, 209)
    for x0, y0, x1, y1 in (big, small):
        array[y0 : y1 + 1, x0 : x1 + 1] = 230
    predictor = Predictor(_brightness_payload())
    pred = predictor.predict(array, all_boxes=True)
    assert pred.boxes is not None and pred.scores is not None
    assert pred.boxes.shape == (2, 4) and pred.scores.shape == (2,)
    ious = iou_matrix(pred.boxes, np.array([big, small]))
    assert ious[0, 0] > 0.7 and ious[1, 1] > 0.7  # best score first: the big square holds more mass
    assert pred.scores[0] > pred.scores[1]
    # The single box is the big one, and it is one of the list with the same score.
    np.testing.assert_array_equal(pred.box, pred.boxes[0])
    assert pred.score == pytest.approx(float(pred.scores[0]), abs=1e-6)
    assert predictor.predict(array).boxes is None  # only when asked


def _two_blobs() -> np.ndarray:
    heat = np.zeros((28, 28), np.uint8)
    heat[2:16, 2:16] = 255  # a big region
    heat[20:25, 19:26] = 200  # a small one
    return heat


def test_the_image_box_is_the_best_scored_region_and_pick_largest_keeps_the_largest_contour():
    from coloc_core.predict import cut_boxes, locate

    heat, wh = _two_blobs(), (280, 280)
    seen: list[np.ndarray] = []

    def small_is_typical(boxes: np.ndarray) -> np.ndarray:
        # a content term that finds the collection's object in the small region only
        seen.append(boxes)
        areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
        return np.where(areas < 5000, 1.0, -1.0)

    largest = locate(heat, 0.2, wh, content=small_is_typical, pick="largest", all_boxes=True)
    best = locate(heat, 0.2, wh, content=small_is_typical, pick="score", all_boxes=True)
    assert largest.boxes is not None and best.boxes is not None and len(best.boxes) == 2
    # The largest contour is the big square; the best-scored region is the small one, first in the list.
    big, small = np.array([[20, 20, 159, 159]]), np.array([[190, 200, 259, 249]])
    assert iou_matrix(largest.box, big)[0, 0] > 0.8 and iou_matrix(best.box, small)[0, 0] > 0.6
    np.testing.assert_array_equal(best.box, best.boxes[0])
    assert best.score == pytest.approx(float(best.scores[0]), abs=1e-6) and best.score > largest.score
    np.testing.assert_array_equal(largest.boxes, best.boxes)  # the list does not depend on the pick
    # Each distinct box is encoded once, the box first: the largest region's box is the box itself.
    assert [len(b) for b in seen] == [1, 1, 1, 1]
    seen.clear()
    assert np.array_equal(locate(heat, 0.2, wh, content=small_is_typical).box, best.box)
    assert [len(b) for b in seen] == [1, 1]  # the small region can still win: it is encoded
    # Without a term that prefers it, the small region scores lower and the box stays the largest.
    plain = locate(heat, 0.2, wh)
    np.testing.assert_array_equal(plain.box, largest.box)
    assert plain.boxes is None  # the regions are scored, not returned, unless asked
    cut = cut_boxes(heat, 0.2, pick="largest")
    assert cut.regions is None and len(cut.all_boxes()) == 1  # the SPEC box alone costs no region pass
    with pytest.raises(ValueError, match="pick='biggest' is not one of score, largest"):
        cut_boxes(heat, 0.2, pick="biggest")
    with pytest.raises(ValueError, match="pick='biggest'"):
        Predictor(_brightness_payload(), pick="biggest")


def test_regions_that_cannot_win_are_not_encoded_and_the_box_is_the_one_encoding_all_gives():
    from coloc_core.box_content import CONTENT_BOUND
    from coloc_core.box_score import box_score
    from coloc_core.predict import content_terms, cut_boxes, score_cut

    rng = np.random.default_rng(11)
    encoded = skipped = 0
    for _ in range(40):
        heat = np.zeros((14, 14), np.uint8)  # a few blobs of random size and strength
        for _ in range(int(rng.integers(2, 5))):
            y, x, h, w = rng.integers(0, 12, 4)
            heat[y : y + 1 + h % 5, x : x + 1 + w % 5] = rng.integers(60, 256)
        table: dict = {}  # one fixed term per box, as the same crop always gives

        def term(box: np.ndarray, table: dict = table) -> float:
            return table.setdefault(tuple(box.tolist()), float(rng.uniform(-CONTENT_BOUND, CONTENT_BOUND)))

        def encode(at: list[int], boxes: list[np.ndarray]) -> list[np.ndarray]:
            return [np.array([term(b) for b in group]) for group in boxes]

        cut = cut_boxes(heat, 0.2)
        (lazy,) = content_terms([cut], 0.2, None, encode)
        every = np.array([term(b) for b in cut.all_boxes()])  # every region encoded
        assert np.array_equal(lazy[~np.isnan(lazy)], every[~np.isnan(lazy)])
        got = score_cut(cut, 0.2, (140, 140), None, lazy)
        want = score_cut(cut, 0.2, (140, 140), None, every)
        np.testing.assert_array_equal(got.box, want.box)
        assert got.score == pytest.approx(want.score)
        # What was skipped could not have won even with the largest term, or is a speck.
        full = box_score(cut.scoremap, cut.box[0], 0.2, None, every[0])
        for box in cut.all_boxes()[np.isnan(lazy)]:
            speck = not cut.candidates(box[None])[0]
            assert speck or box_score(cut.scoremap, box, 0.2, None) + CONTENT_BOUND <= full
        encoded += int((~np.isnan(lazy)).sum())
        skipped += int(np.isnan(lazy).sum())
    assert skipped > 0 and encoded > 40  # both cases happen on these maps


def test_a_speck_is_never_the_image_box_however_it_scores():
    from coloc_core.predict import PICK_MIN_SHARE, locate

    heat = np.zeros((28, 28), np.uint8)
    heat[2:18, 2:18] = 255  # 16x16 cells
    heat[24:26, 24:26] = 255  # 2x2 cells: 1/64 of the big one's area, under PICK_MIN_SHARE
    assert 1 / 64 < PICK_MIN_SHARE

    def speck_is_typical(boxes: np.ndarray) -> np.ndarray:
        areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
        return np.where(areas < 1000, 1.0, -1.0)

    loc = locate(heat, 0.2, (280, 280), content=speck_is_typical, all_boxes=True)
    assert loc.boxes is not None and loc.scores is not None and len(loc.boxes) == 2
    assert loc.scores[0] > loc.scores[1]  # the speck scores best ...
    np.testing.assert_array_equal(loc.box, loc.boxes[1])  # ... but the big region is the image's box


def test_an_empty_mask_keeps_the_placeholder_box_with_either_pick():
    from coloc_core.predict import locate

    flat = np.zeros((7, 7), np.uint8)
    for pick in ("score", "largest"):
        loc = locate(flat, 0.2, (70, 70), pick=pick, all_boxes=True)
        np.testing.assert_array_equal(loc.box, [0, 0, 0, 0])
        assert loc.boxes is not None and loc.boxes.shape == (0, 4)


def test_predict_batch_equals_predict_one_by_one(tmp_path):
    rng = np.random.default_rng(5)
    images = [np.asarray(make_synthetic_image(rng, w, h)[0]) for w, h in ((200, 150), (96, 160), (128, 128))]
    predictor = Predictor(_random_payload())
    batch = predictor.predict_batch(images, all_boxes=True, batch_size=2)
    assert len(batch) == 3
    for image, pred in zip(images, batch, strict=True):
        one = predictor.predict(image, all_boxes=True)
        np.testing.assert_array_equal(pred.box, one.box)
        np.testing.assert_array_equal(pred.boxes, one.boxes)
        assert (pred.width, pred.height) == (image.shape[1], image.shape[0])
        # ... but the three maps are not all the same (the images differ).
    assert not np.array_equal(batch[0].heatmap, batch[1].heatmap)


def test_load_takes_bytes_and_an_explicit_threshold(tmp_path):
    payload = _brightness_payload(threshold=0.2)
    data = _save(payload, tmp_path / "m.pt").read_bytes()
    predictor = Predictor.load(data, threshold=0.5)
    assert predictor.threshold == pytest.approx(0.5) and predictor.model_id == payload["model_id"]
    assert Predictor.load(data).threshold == pytest.approx(0.2)
    array = _dark(100, 100)
    array[20:60, 20:60] = 230
    assert predictor.predict(array).threshold == pytest.approx(0.5)


def test_bad_inputs_and_fitted_methods_are_refused(tmp_path):
    with pytest.raises(ValueError, match="fitted on a collection"):
        Predictor.from_method("selftrain")
    with pytest.raises(ValueError, match="not one of"):
        Predictor.from_method("nope")
    with pytest.raises(ValueError, match="not a coloc model file"):
        Predictor.load(_save({"weights": 1}, tmp_path / "other.pt"))
    with pytest.raises(ValueError, match="junk.pt is not a coloc model file"):
        (tmp_path / "junk.pt").write_text("not a model")
        Predictor.load(tmp_path / "junk.pt")
    predictor = Predictor(_random_payload())
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(TypeError, match="cannot predict"):
        predictor.predict(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold"):
        Predictor(_random_payload(), threshold=1.5)


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A small valid JPEG whose frame header (SOF0) is rewritten to declare ``width``×``height``."""
    buf = io.BytesIO()
    Image.fromarray(_dark(64, 48)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


# 12000x12000 is over MAX_PIXELS but under PIL's own bomb error; 30000x30000 is over both.
@pytest.mark.parametrize("side", [12_000, 30_000])
def test_a_file_declaring_a_huge_size_is_refused_by_its_header(tmp_path, side):
    path = tmp_path / "bomb.jpg"
    path.write_bytes(_jpeg_declaring(side, side))
    assert side * side > MAX_PIXELS
    with pytest.raises(ImageTooLargeError, match=f"declares {side}x{side}.*decompression bomb"):
        Predictor(_random_payload()).predict(path)
    # The same bytes declaring their real size are a good image: the header alone refused it.
    path.write_bytes(_jpeg_declaring(64, 48))
    pred = Predictor(_random_payload()).predict(path)
    assert (pred.width, pred.height) == (64, 48)


def test_a_jpeg_cut_short_is_refused_not_filled_with_grey(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    path = tmp_path / "cut.jpg"
    # Cut in half with an end-of-image marker appended: PIL decodes it without a word, grey below.
    path.write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    with pytest.raises(TruncatedImageError, match="truncated"):
        Predictor(_random_payload()).predict(path)
    path.write_bytes(data[: len(data) // 2])  # cut without a marker: PIL's own truncation error
    with pytest.raises(OSError, match="truncated"):
        Predictor(_random_payload()).predict(path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="empty file"):
        Predictor(_random_payload()).predict(path)


def test_full_method_needs_no_fit_and_boxes_the_whole_image():
    pred = Predictor.from_method("full").predict(_dark(90, 60))
    np.testing.assert_allclose(pred.box, [0, 0, 89, 59], atol=1.0)


def test_importing_coloc_core_stays_cheap():
    code = "import sys, coloc_core; assert 'torch' not in sys.modules; print(coloc_core.Predictor.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "Predictor"


def test_feature_maps_and_attention_maps_share_one_input_path():
    from coloc_core.localizer import localizer_from_payload
    from coloc_core.model import normalize_images
    from coloc_core.predict import attention_maps, feature_maps

    torch.manual_seed(0)
    backbone = build_backbone("tiny", weights=None)
    payload = baseline_payload("caam", backbone="tiny", backbone_state=backbone.state_dict())
    localizer = localizer_from_payload(payload)
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)
    with torch.no_grad():
        x = normalize_images(torch.from_numpy(images), localizer.mean, localizer.std)
        expected_feats, expected_maps = localizer.features(x), localizer(x)
    feats = feature_maps(localizer, images)
    assert feats.dtype == torch.float32 and feats.shape == expected_feats.shape
    torch.testing.assert_close(feats, expected_feats)
    np.testing.assert_allclose(
        attention_maps(localizer, torch.from_numpy(images)), expected_maps.numpy(), rtol=1e-6
    )


def test_inference_layout_folds_batchnorm_and_keeps_the_maps():
    import copy

    from coloc_core.localizer import localizer_from_payload
    from coloc_core.predict import attention_maps, inference_layout

    torch.manual_seed(0)
    payload = baseline_payload("caam", backbone="efficientnet_lite0", weights=None)
    plain = localizer_from_payload(payload).eval()
    for m in plain.modules():  # running statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    ready = inference_layout(copy.deepcopy(plain), torch.device("cpu"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ready.modules())
    images = (np.random.default_rng(0).random((2, 96, 96, 3)) * 255).astype(np.uint8)
    np.testing.assert_allclose(
        attention_maps(ready, images), attention_maps(plain, images), rtol=1e-4, atol=1e-5
    )
