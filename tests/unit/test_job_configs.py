"""Every job's config lives in pipelines.config: its command line, its ``--help`` and its checks.

No Ray, no torch: ``coloc <command> --help`` and the checks answer before either is imported.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from pathlib import Path

import pytest

from coloc_core.config import flat_keys
from jobs.cli import COMMANDS
from pipelines import config
from pipelines.config import (
    CalibrateJobConfig,
    DemoConfig,
    EvaluateJobConfig,
    ExportJobConfig,
    GenerateConfig,
    LabelJobConfig,
    RenderJobConfig,
    TrainJobConfig,
    build_config,
    check_calibrate_config,
    check_evaluate_config,
    check_export_config,
    check_render_config,
    help_text,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Every `coloc` command and the config class its --help describes.
CONFIG_OF = {
    "train": TrainJobConfig,
    "train-cub": TrainJobConfig,
    "label": LabelJobConfig,
    "evaluate": EvaluateJobConfig,
    "calibrate": CalibrateJobConfig,
    "export": ExportJobConfig,
    "render": RenderJobConfig,
    "demo": DemoConfig,
    "generate": GenerateConfig,
}
# The configs whose docstring describes every key (the method keys of TrainJobConfig are described in
# coloc_core.config's sections, not all; GenerateConfig's one-line docstring names none).
DESCRIBED = {
    LabelJobConfig,
    EvaluateJobConfig,
    CalibrateJobConfig,
    ExportJobConfig,
    RenderJobConfig,
    DemoConfig,
}


def test_every_command_has_its_config_here():
    assert set(CONFIG_OF) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(CONFIG_OF))
def test_command_help_lists_every_option_of_its_config(command, capsys):
    module = importlib.import_module(COMMANDS[command][0])
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    listed = re.findall(r"^  --([\w.]+)=", out, flags=re.MULTILINE)
    cls = CONFIG_OF[command]
    assert listed == list(flat_keys(cls())), command
    assert "--verbose" in out
    if cls in DESCRIBED:  # each option is followed by its description, from the docstring
        lines = out.splitlines()
        for i, line in enumerate(lines[:-1]):
            if line.startswith("  --") and not line.startswith("  --verbose"):
                assert lines[i + 1].startswith("        "), (command, line)


def test_help_shows_the_defaults_and_aliases():
    text = help_text(ExportJobConfig, {})
    assert '  --to="coco"' in text and "  --min_score=null" in text and "  --top_k=0" in text
    assert "Pascal VOC" in text  # the `to` description, joined from its continuation lines
    train = help_text(TrainJobConfig, {"data": "dataset.root"})
    assert '  --dataset.root=""  (alias --data)' in train


@pytest.mark.parametrize(
    ("cls", "argv", "expected"),
    [
        (
            EvaluateJobConfig,
            ["--predictions=p", "--threshold", "0.3"],
            {"predictions": "p", "threshold": 0.3},
        ),
        (EvaluateJobConfig, ["--iou_thresholds=[0.5]"], {"iou_thresholds": (0.5,)}),
        (CalibrateJobConfig, ["--delta=0.7", "--limit=5"], {"delta": 0.7, "limit": 5}),
        (ExportJobConfig, ["--to=yolo", "--min_score=0.5"], {"to": "yolo", "min_score": 0.5}),
        (RenderJobConfig, ["--sample=0", "--max_side", "64"], {"sample": 0, "max_side": 64}),
        (GenerateConfig, ["--num_images=3"], {"num_images": 3}),
        (DemoConfig, ["--calibrate=false", "--baseline=none"], {"calibrate": False, "baseline": "none"}),
    ],
)
def test_build_config_parses_each_config(cls, argv, expected):
    cfg = build_config(cls, argv)
    assert isinstance(cfg, cls)
    for key, value in expected.items():
        assert getattr(cfg, key) == value, key
    untouched = {f.name for f in dataclasses.fields(cls)} - set(expected)
    for name in untouched:
        assert getattr(cfg, name) == getattr(cls(), name), name


@pytest.mark.parametrize(
    ("cls", "argv", "message"),
    [
        (RenderJobConfig, ["--sample=-1"], "sample"),
        (CalibrateJobConfig, ["--delta=0"], "delta"),
        (EvaluateJobConfig, ["--threshold=1"], "threshold"),
        (EvaluateJobConfig, ["--cam_curve_interval=nan"], "cam_curve_interval"),
        (GenerateConfig, ["--num_images=0"], "num_images"),
        (ExportJobConfig, ["--no_such_key=1"], "no_such_key"),
    ],
)
def test_build_config_refuses_values_out_of_range(cls, argv, message):
    with pytest.raises((KeyError, ValueError), match=message):
        build_config(cls, argv)


def test_check_export_config():
    good = ExportJobConfig(predictions="p", out="o", category="bird")
    assert check_export_config(good) is good
    assert check_export_config(ExportJobConfig(predictions="p", out="o", to="coco_results"))  # no category
    bad = [
        (ExportJobConfig(predictions="p", out="o"), "required: --category"),
        (ExportJobConfig(category="c"), "required: --predictions, --out"),
        (dataclasses.replace(good, to="pascal"), "--to='pascal' is not one of"),
        (dataclasses.replace(good, top_k=-1), "--top_k=-1 must be >= 0"),
        (dataclasses.replace(good, top_fraction=1.5), r"--top_fraction=1.5 must be in \[0, 1\]"),
        (dataclasses.replace(good, top_fraction=-0.1), r"--top_fraction=-0.1 must be in \[0, 1\]"),
        (dataclasses.replace(good, top_fraction=0.5, top_k=3), "give one of them"),
        (dataclasses.replace(good, to="yolo", val_fraction=1.0), r"must be in \[0, 1\)"),
        (dataclasses.replace(good, val_fraction=0.2), "applies to --to=yolo"),
        (dataclasses.replace(good, images_url="/x/"), "applies to --to=label_studio"),
    ]
    for cfg, message in bad:
        with pytest.raises(ValueError, match=message):
            check_export_config(cfg)
    assert check_export_config(dataclasses.replace(good, to="yolo", val_fraction=0.2))
    assert check_export_config(dataclasses.replace(good, to="label_studio", images_url="/x/"))


def test_check_render_evaluate_and_calibrate_configs():
    with pytest.raises(ValueError, match="required: --predictions, --out"):
        check_render_config(RenderJobConfig())
    with pytest.raises(ValueError, match="required: --out"):
        check_render_config(RenderJobConfig(predictions="p"))
    assert check_render_config(RenderJobConfig(predictions="p", out="o")).out == "o"
    with pytest.raises(ValueError, match="--predictions is required"):
        check_evaluate_config(EvaluateJobConfig(gt="g"))
    assert check_evaluate_config(EvaluateJobConfig(predictions="p")).predictions == "p"
    with pytest.raises(ValueError, match="--predictions and --gt are required"):
        check_calibrate_config(CalibrateJobConfig(predictions="p"))
    assert check_calibrate_config(CalibrateJobConfig(predictions="p", gt="g")).gt == "g"


def test_export_formats_are_the_writers_formats():
    from pipelines.export import FORMATS

    assert tuple(config.EXPORT_FORMATS) == tuple(FORMATS)


@pytest.mark.parametrize(
    ("module", "function", "cls"),
    [
        ("pipelines.evaluate", "run_evaluation", EvaluateJobConfig),
        ("pipelines.export", "run_export", ExportJobConfig),
        ("pipelines.render", "run_render", RenderJobConfig),
        ("pipelines.train", "run_training", TrainJobConfig),
        ("pipelines.label", "run_labeling", LabelJobConfig),
        ("jobs.demo", "run_demo", DemoConfig),
    ],
)
def test_each_run_function_takes_one_config(module, function, cls):
    params = list(inspect.signature(getattr(importlib.import_module(module), function)).parameters.values())
    required = [p for p in params if p.default is inspect.Parameter.empty]
    assert len(required) == 1, (function, params)
    hint = required[0].annotation
    assert hint in (cls, cls.__name__), (function, hint)


def test_the_config_package_reexports_every_public_name():
    for name in config.__all__:
        assert getattr(config, name) is not None, name
    for module in (config.jobs, config.parse, config.tools):
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and dataclasses.is_dataclass(value)
                and value.__module__ == module.__name__
            ):
                assert name in config.__all__, name


def test_pipelines_never_import_jobs():
    offenders = []
    for path in sorted((REPO_ROOT / "pipelines").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"\s*(from jobs[. ]|import jobs\b)", line):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert offenders == []
