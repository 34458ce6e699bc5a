import pytest

from coloc_core.config import (
    ColocConfig,
    apply_overrides,
    check_numbers,
    flat_keys,
    from_dict,
    to_dict,
    validate,
)


def test_defaults_follow_spec():
    cfg = ColocConfig()
    # SPEC §2's top-70% stays the ratio of topk; the default pooling is the measured best (RESULTS.md)
    assert cfg.model.pooling == "mean" and cfg.model.pool_ratio == 0.7 and cfg.model.eca
    assert cfg.loss.theta_bg == 2.3 and cfg.loss.margin == 1.0 and cfg.loss.caml_weight == 1.0
    assert cfg.optim.lr == 1e-3 and cfg.optim.momentum == 0.9 and cfg.optim.batch_size == 64
    assert cfg.optim.epochs == 80 and cfg.optim.lr_milestones == (60,) and cfg.optim.lr_gamma == 0.2
    assert cfg.boxes.threshold == 0.2 and cfg.boxes.iou_thresholds == (0.3, 0.5, 0.7)
    assert validate(cfg) is cfg


def test_overrides_are_typed():
    cfg = apply_overrides(
        ColocConfig(),
        [
            "loss.theta_bg=1.5",
            "--model.backbone=tiny",
            "pretext.tasks=rotation,hflip",
            "model.weights=none",
            "model.eca=false",
            "optim.epochs=3",
            "optim.lr_milestones=[2, 3]",
        ],
    )
    assert cfg.loss.theta_bg == 1.5
    assert cfg.model.backbone == "tiny"
    assert cfg.pretext.tasks == ("rotation", "hflip")
    assert cfg.model.weights is None
    assert cfg.model.eca is False
    assert cfg.optim.epochs == 3 and isinstance(cfg.optim.epochs, int)
    assert cfg.optim.lr_milestones == (2, 3)
    assert ColocConfig().loss.theta_bg == 2.3  # the original is untouched


def test_override_errors_name_the_key():
    with pytest.raises(KeyError, match="loss.thetabg"):
        apply_overrides(ColocConfig(), ["loss.thetabg=1"])
    with pytest.raises(ValueError, match="optim.epochs"):
        apply_overrides(ColocConfig(), ["optim.epochs=many"])
    with pytest.raises(ValueError):
        apply_overrides(ColocConfig(), ["optim.epochs"])
    with pytest.raises(KeyError):
        apply_overrides(ColocConfig(), ["loss=3"])


def test_validate_rejects_bad_choices():
    for override in [
        "model.pooling=median",
        "loss.map_scaling=log",
        "pretext.tasks=jigsaw",
        "loss.pairs=all",
        "model.pool_ratio=0",
        "loss.map_peak=1.0",
    ]:
        with pytest.raises(ValueError):
            validate(apply_overrides(ColocConfig(), [override]))
    with pytest.raises(ValueError):
        validate(apply_overrides(ColocConfig(), ["loss.use_cls=false", "loss.use_caml=false"]))


def test_dict_round_trip():
    cfg = apply_overrides(ColocConfig(), ["pretext.tasks=scale,vflip", "seed=7"])
    again = from_dict(ColocConfig, to_dict(cfg))
    assert again == cfg
    with pytest.raises(KeyError):
        from_dict(ColocConfig, {"model": {"backbon": "tiny"}})
    assert flat_keys(cfg)["pretext.tasks"] == ("scale", "vflip")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=nan", "optim.lr=nan is not a finite number"),
        ("optim.lr=inf", "optim.lr=inf is not a finite number"),
        ("optim.lr=-inf", "optim.lr=-inf is not a finite number"),
        ("optim.lr=-0.001", "optim.lr=-0.001 must be > 0"),
        ("optim.lr=0", "optim.lr=0.0 must be > 0"),
        ("optim.momentum=nan", "optim.momentum=nan is not a finite number"),
        ("optim.momentum=1", r"optim.momentum=1.0 must be in \[0, 1\)"),
        ("optim.weight_decay=-1e-4", "optim.weight_decay=-0.0001 must be >= 0"),
        ("optim.lr_gamma=0", "optim.lr_gamma=0.0 must be > 0"),
        ("optim.lr_milestones=10,-1", "optim.lr_milestones=10,-1 must be >= 0"),
        ("optim.batch_size=0", "optim.batch_size=0 must be >= 1"),
        ("loss.caml_weight=nan", "loss.caml_weight=nan is not a finite number"),
        ("loss.margin=-1", "loss.margin=-1.0 must be >= 0"),
        ("loss.theta_bg=inf", "loss.theta_bg=inf is not a finite number"),
        ("loss.map_peak=nan", "loss.map_peak=nan is not a finite number"),
        ("model.pool_ratio=nan", "model.pool_ratio=nan is not a finite number"),
        ("model.image_size=0", "model.image_size=0 must be >= 1"),
        ("model.output_stride=0", "model.output_stride=0 must be >= 1"),
        ("model.eca_kernel=4", "model.eca_kernel=4 must be odd"),
        ("augment.crop_padding=-1", "augment.crop_padding=-1 must be >= 0"),
        ("boxes.threshold=nan", "boxes.threshold=nan is not a finite number"),
        ("boxes.cam_curve_interval=0", r"boxes.cam_curve_interval=0.0 must be in \(0, 1\)"),
        ("boxes.iou_thresholds=0.5,nan", "boxes.iou_thresholds=0.5,nan is not a finite number"),
        ("boxes.iou_thresholds=0.5,1.5", r"boxes.iou_thresholds=0.5,1.5 must be in \(0, 1\]"),
        ("seed=-1", "seed=-1 must be in"),
    ],
)
def test_validate_rejects_non_finite_and_out_of_range_numbers(override, message):
    cfg = apply_overrides(ColocConfig(), [override])  # parsing accepts it: a float is a float
    with pytest.raises(ValueError, match=message):
        validate(cfg)


def test_validate_accepts_the_edges_of_each_range():
    cfg = apply_overrides(
        ColocConfig(),
        [
            "optim.momentum=0",
            "optim.weight_decay=0",
            "optim.lr_milestones=0",
            "loss.caml_weight=0",
            "loss.margin=0",
            "model.pool_ratio=1",
            "model.eca_kernel=1",
            "augment.crop_padding=0",
            "boxes.threshold=0",
            "boxes.iou_thresholds=1",
        ],
    )
    assert validate(cfg) is cfg


def _numeric_fields_without_a_range(cls: type, prefix: str = "") -> list[str]:
    """Keys of numeric fields (int, float, optional, tuples of them) whose section declares no range."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    ranges = getattr(cls, "RANGES", {})
    missing = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            missing += _numeric_fields_without_a_range(typing.cast(type, hint), prefix=f"{prefix}{f.name}.")
            continue
        inner = set(typing.get_args(hint)) | {hint}
        for arg in list(inner):
            inner |= set(typing.get_args(arg))
        if (int in inner or float in inner) and f.name not in ranges:
            missing.append(f"{prefix}{f.name}")
    return missing


def test_every_numeric_option_of_every_job_declares_its_range():
    from pipelines.config import (
        CalibrateJobConfig,
        EvaluateJobConfig,
        GenerateConfig,
        LabelJobConfig,
        TrainJobConfig,
    )

    for cls in (TrainJobConfig, LabelJobConfig, EvaluateJobConfig, CalibrateJobConfig, GenerateConfig):
        assert _numeric_fields_without_a_range(cls) == [], cls.__name__
        check_numbers(cls())  # the defaults are in range


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run.cpus_per_worker=nan"], "run.cpus_per_worker=nan is not a finite number"),
        (["--run.decode_cpus=-0.5"], "run.decode_cpus=-0.5 must be > 0"),
        (["--run.num_workers=0"], "run.num_workers=0 must be >= 1"),
        (["--run.max_failures=-2"], "run.max_failures=-2 must be >= -1"),
        (["--run.checkpoints_to_keep=0"], "run.checkpoints_to_keep=0 must be >= 1"),
        (["--dataset.limit=-1"], "dataset.limit=-1 must be >= 0"),
        (["--optim.lr", "nan"], "optim.lr=nan is not a finite number"),
    ],
)
def test_train_job_config_rejects_bad_numbers_when_resolved(args, message):
    from pipelines.config import TrainJobConfig, build_config, resolve_train_config

    with pytest.raises(ValueError, match=message):
        resolve_train_config(
            build_config(TrainJobConfig, ["--data=/x", *args], aliases={"data": "dataset.root"})
        )


def test_a_yaml_nan_is_rejected_too(tmp_path):
    from pipelines.config import TrainJobConfig, build_config

    path = tmp_path / "job.yaml"
    path.write_text("dataset:\n  root: /x\noptim:\n  lr: .nan\n")
    with pytest.raises(ValueError, match="optim.lr=nan is not a finite number"):
        build_config(TrainJobConfig, [f"--config={path}"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--optim.lr=nan"], "optim.lr=nan is not a finite number"),
        (["train", "--optim.lr=inf"], "optim.lr=inf is not a finite number"),
        (["train", "--optim.lr=-1"], "optim.lr=-1.0 must be > 0"),
        (["train-cub", "--loss.margin=nan"], "loss.margin=nan is not a finite number"),
        (["label", "--method=caam", "--out=/tmp/unused", "--threshold=nan"], "threshold=nan is not a finite"),
        (["label", "--method=caam", "--out=/tmp/unused", "--decode_cpus=0"], "decode_cpus=0.0 must be > 0"),
        (["evaluate", "--predictions=/tmp/unused", "--cam_curve_interval=nan"], "cam_curve_interval=nan"),
        (["calibrate", "--predictions=/p", "--gt=/g", "--delta=1.5"], "delta=1.5 must be in (0, 1]"),
        (["generate", "--num_images=0"], "num_images=0 must be >= 1"),
    ],
)
def test_cli_exits_2_on_a_bad_number_before_starting_ray(argv, message, tmp_path, caplog, monkeypatch):
    import ray

    from jobs.cli import main

    def no_ray(*args, **kwargs):
        raise AssertionError("the bad number was not refused before Ray starts")

    monkeypatch.setattr(ray, "init", no_ray)

    data = ["--data", str(tmp_path)] if argv[0].startswith("train") else []
    images = ["--images", str(tmp_path)] if argv[0] == "label" else []
    with caplog.at_level("ERROR"):
        assert main([*argv, *data, *images]) == 2
    assert any(message in record.getMessage() for record in caplog.records), caplog.text
    assert "bad arguments" in caplog.text  # and ray.init was never called (it raises above)


def test_label_method_auto_resolves_to_the_model_or_the_self_trained_head():
    from pipelines.config import LabelJobConfig, check_label_config

    assert LabelJobConfig().method == "auto"
    assert check_label_config(LabelJobConfig(images="/x", out="/y")).method == "selftrain"
    assert check_label_config(LabelJobConfig(images="/x", out="/y", model="m.pt")).method == "model"
    assert check_label_config(LabelJobConfig(images="/x", out="/y", method="rps")).method == "rps"


def test_label_image_size_is_for_methods_fitted_here():
    from pipelines.config import LabelJobConfig, check_label_config

    assert check_label_config(LabelJobConfig(images="/x", out="/y", image_size=384)).image_size == 384
    with pytest.raises(ValueError, match="model file reads the size"):
        check_label_config(LabelJobConfig(images="/x", out="/y", model="m.pt", image_size=384))
    with pytest.raises(ValueError, match="at least 32"):
        check_label_config(LabelJobConfig(images="/x", out="/y", image_size=16))
    with pytest.raises(ValueError, match="image_size"):
        check_label_config(LabelJobConfig(images="/x", out="/y", image_size=-1))
    assert check_label_config(LabelJobConfig(images="/x", out="/y", fit_size=256)).fit_size == 256
    with pytest.raises(ValueError, match="drop --fit_size"):
        check_label_config(LabelJobConfig(images="/x", out="/y", model="m.pt", fit_size=256))
    with pytest.raises(ValueError, match="fit_size=16 must be 0"):
        check_label_config(LabelJobConfig(images="/x", out="/y", fit_size=16))


def test_train_image_size_is_for_the_self_trained_head():
    from pipelines.config import DatasetConfig, TrainJobConfig, resolve_train_config

    base = dict(dataset=DatasetConfig(root="/x"))
    assert resolve_train_config(TrainJobConfig(image_size=256, **base)).image_size == 256
    with pytest.raises(ValueError, match="applies to method=selftrain"):
        resolve_train_config(TrainJobConfig(method="caml", image_size=256, **base))
    with pytest.raises(ValueError, match="at least 32"):
        resolve_train_config(TrainJobConfig(image_size=8, **base))
    assert resolve_train_config(TrainJobConfig(fit_size=256, **base)).fit_size == 256
    with pytest.raises(ValueError, match="fit_size=256 applies to method=selftrain"):
        resolve_train_config(TrainJobConfig(method="caml", fit_size=256, **base))


def test_first_labels_is_a_choice_of_the_self_trained_head():
    from pipelines.config import (
        DatasetConfig,
        LabelJobConfig,
        TrainJobConfig,
        check_label_config,
        resolve_train_config,
    )
    from pipelines.selftrain import selftrain_label_config

    base = dict(dataset=DatasetConfig(root="/x"))
    assert TrainJobConfig(**base).first_labels == "auto"
    own = resolve_train_config(apply_overrides(TrainJobConfig(**base), ["first_labels=own"]))
    assert selftrain_label_config(own, "/run").first_labels == "own"
    with pytest.raises(ValueError, match="first_labels='lite0' is not one of auto, own"):
        resolve_train_config(TrainJobConfig(first_labels="lite0", **base))
    with pytest.raises(ValueError, match="first_labels=own applies to method=selftrain"):
        resolve_train_config(TrainJobConfig(method="caml", first_labels="own", **base))
    assert check_label_config(LabelJobConfig(images="/x", out="/y", first_labels="own")).first_labels == "own"
    with pytest.raises(ValueError, match="first_labels=own applies to method=selftrain"):
        check_label_config(LabelJobConfig(images="/x", out="/y", method="ddt", first_labels="own"))
    with pytest.raises(ValueError, match="is not one of auto, own"):
        check_label_config(LabelJobConfig(images="/x", out="/y", first_labels="none"))


def test_backbone_auto_is_lite2_for_the_self_trained_head_and_lite0_otherwise():
    from pipelines.config import (
        DatasetConfig,
        LabelJobConfig,
        TrainJobConfig,
        check_label_config,
        resolve_train_config,
    )

    base = dict(dataset=DatasetConfig(root="/x"))
    assert TrainJobConfig(**base).model.backbone == "auto"
    assert resolve_train_config(TrainJobConfig(**base)).model.backbone == "efficientnet_lite2"
    assert resolve_train_config(TrainJobConfig(method="caml", **base)).model.backbone == "efficientnet_lite0"
    chosen = apply_overrides(TrainJobConfig(**base), ["model.backbone=efficientnet_lite0"])
    assert resolve_train_config(chosen).model.backbone == "efficientnet_lite0"
    for method, expected in (
        ("auto", "efficientnet_lite2"),
        ("selftrain", "efficientnet_lite2"),
        ("ddt", "efficientnet_lite0"),
        ("rps", "efficientnet_lite0"),
        ("caam", "efficientnet_lite0"),
    ):
        cfg = check_label_config(LabelJobConfig(images="/x", out="/y", method=method))
        assert cfg.backbone == expected, method
    kept = check_label_config(LabelJobConfig(images="/x", out="/y", backbone="efficientnet_lite0"))
    assert kept.method == "selftrain" and kept.backbone == "efficientnet_lite0"
    with pytest.raises(ValueError, match="not a known backbone"):
        check_label_config(LabelJobConfig(images="/x", out="/y", method="ddt", backbone="lite9"))


def test_label_pick_is_the_best_scored_region_by_default_and_checked():
    from coloc_core.predict import DEFAULT_PICK, PICKS
    from pipelines.config import LABEL_PICKS, LabelJobConfig, check_label_config

    assert LABEL_PICKS == PICKS  # the config keeps its own copy, so it need not import torch
    assert LabelJobConfig().pick == DEFAULT_PICK == "score"
    assert check_label_config(LabelJobConfig(images="/x", out="/y", pick="largest")).pick == "largest"
    with pytest.raises(ValueError, match="pick='biggest' is not one of score, largest"):
        check_label_config(LabelJobConfig(images="/x", out="/y", pick="biggest"))


def test_label_halves_are_on_unless_turned_off_and_checked():
    from pipelines.config import LABEL_HALVES, LabelJobConfig, check_label_config

    assert LabelJobConfig().halves == "auto" and LABEL_HALVES == ("auto", "off")
    assert check_label_config(LabelJobConfig(images="/x", out="/y", halves="off")).halves == "off"
    with pytest.raises(ValueError, match="halves='on' is not one of auto, off"):
        check_label_config(LabelJobConfig(images="/x", out="/y", halves="on"))


def test_crop_bottom_defaults_to_the_formats_own_banner():
    from coloc_core.datasets import AIRCRAFT_BANNER_PX
    from pipelines.config import (
        DatasetConfig,
        LabelJobConfig,
        TrainJobConfig,
        check_label_config,
        resolve_train_config,
    )

    def label(**kw):
        return check_label_config(LabelJobConfig(images="/x", out="/y", **kw)).crop_bottom

    assert LabelJobConfig().crop_bottom == DatasetConfig().crop_bottom == -1
    assert AIRCRAFT_BANNER_PX == 20
    assert label(format="aircraft") == 20 and label(format="folder") == label(format="cub") == 0
    assert label(format="aircraft", crop_bottom=0) == 0 and label(format="folder", crop_bottom=12) == 12
    with pytest.raises(ValueError, match="crop_bottom"):
        label(crop_bottom=-2)

    def train(**kw):
        return resolve_train_config(
            TrainJobConfig(dataset=DatasetConfig(root="/d", **kw))
        ).dataset.crop_bottom

    assert (
        train(format="aircraft") == 20
        and train(format="dogs") == 0
        and train(format="cub", crop_bottom=7) == 7
    )
    # `coloc train`'s self-trained head fits on what labeling would see.
    from pipelines.selftrain import selftrain_label_config

    aircraft = resolve_train_config(TrainJobConfig(dataset=DatasetConfig(root="/d", format="aircraft")))
    assert selftrain_label_config(aircraft, "/run").crop_bottom == 20
