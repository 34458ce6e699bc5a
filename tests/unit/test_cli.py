"""The ``coloc`` command answers --help, --version and bad command lines early: no Ray, no torch.

Each case runs in a fresh interpreter (the test process itself has imported torch long ago) and reports
the exit code, the output and whether ``ray`` / ``torch`` ended up in ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cli import COMMANDS

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("ray", "torch", "torchvision", "pyarrow")

_PROBE = r"""
import contextlib, io, json, sys
from jobs.cli import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    import logging
    logging.basicConfig(stream=err, force=True)
    try:
        code = main(json.loads(sys.argv[1]))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
heavy = [name for name in json.loads(sys.argv[2]) if name in sys.modules]
print(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue(), "heavy": heavy}))
"""


def _coloc(*argv: str) -> dict:
    """``coloc argv...`` in a fresh interpreter: exit code, stdout, stderr (log) and heavy modules loaded."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(list(argv)), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _version() -> str:
    import coloc_core

    return coloc_core.__version__


def test_the_version_is_the_package_version():
    import importlib.metadata

    assert _version() == importlib.metadata.version("coloc")


def test_coloc_version():
    for flag in ("--version", "-V"):
        result = _coloc(flag)
        assert result["code"] == 0, result
        assert result["out"].strip() == f"coloc {_version()}"
        assert result["heavy"] == []


def test_bare_coloc_prints_usage():
    result = _coloc()
    assert result["code"] == 2
    assert "usage: coloc <command>" in result["out"] + result["err"]
    for name in COMMANDS:
        assert name in result["out"] + result["err"]
    assert "--version" in result["out"] + result["err"]
    assert result["heavy"] == []


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_help_imports_neither_ray_nor_torch(command):
    result = _coloc(command, "--help")
    assert result["code"] == 0, result
    assert result["out"].startswith("Options"), result["out"][:200]
    assert result["heavy"] == [], f"coloc {command} --help imported {result['heavy']}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_version(command):
    result = _coloc(command, "--version")
    assert result["code"] == 0, result
    assert result["out"].strip() == f"coloc {_version()}"
    assert result["heavy"] == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["label"], "--images"),
        (["label", "--images=/x"], "--out"),
        (["label", "--out=/x"], "--images"),
        (["label", "--method=model", "--images=/x", "--out=/y"], "--model"),  # needs a model file
        (["label", "--method=nope", "--images=/x", "--out=/y"], "method='nope'"),
        (["label", "--method=ddt", "--images=/x", "--out=/y", "--format=xml"], "format='xml'"),
        (["label", "--method=ddt", "--images=/x", "--out=/y", "--feature_layer=conv9"], "feature_layer"),
        (["label", "--method=ddt", "--images=/x", "--out=/y", "--batch_size=0"], "batch_size=0"),
        (["label", "--no_such_key=1"], "no_such_key"),
        (["train"], "dataset.root is required"),
        (["train", "--data=/x", "--format=xml"], "dataset.format='xml'"),
        (["train-cub"], "dataset.root is required"),
        (["train-cub", "--data=/x", "--optim.lr=nan"], "optim.lr=nan"),
        (["evaluate"], "--predictions"),
        (["evaluate", "--predictions=/p", "--sheet_images=-1"], "sheet_images=-1"),
        (["calibrate", "--predictions=/p"], "--gt"),
        (["export", "--predictions=/p"], "--out"),
        (["export", "--predictions=/p", "--out=/o", "--category=c", "--to=xml"], "--to='xml'"),
        (["demo", "--no_such_key=1"], "no_such_key"),
        (["generate", "--num_images=0"], "num_images=0"),
        (["label", "positional"], "unexpected argument"),
    ],
)
def test_bad_command_lines_exit_2_without_ray_or_torch(argv, message):
    result = _coloc(*argv)
    assert result["code"] == 2, result
    assert "bad arguments" in result["err"] and message in result["err"], result["err"]
    assert result["heavy"] == [], f"coloc {' '.join(argv)} imported {result['heavy']}"


def test_unknown_command_exits_2():
    result = _coloc("lable")
    assert result["code"] == 2
    assert "unknown command 'lable'" in result["err"]
    assert result["heavy"] == []


def test_the_console_script_answers_version_and_help():
    """The installed ``coloc`` entry point and ``python jobs/<job>.py`` behave the same way."""
    coloc = Path(sys.executable).parent / "coloc"
    if not coloc.exists():
        pytest.skip("the coloc console script is not installed in this environment")
    done = subprocess.run([str(coloc), "--version"], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, f"coloc {_version()}")
    done = subprocess.run(
        [sys.executable, "jobs/label.py", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert (done.returncode, done.stdout.strip()) == (0, f"coloc {_version()}")
    done = subprocess.run(
        [sys.executable, "jobs/label.py", "--images=/x"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 2 and "--out" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["label", "--method=ddt", "--images={tmp}/no_such_folder", "--out={tmp}/o"],
            "--images={tmp}/no_such",
        ),
        (["label", "--images=file://{tmp}/gone", "--out={tmp}/o"], "--images=file://{tmp}/gone: no such"),
        (
            ["label", "--model={tmp}/no_model.pt", "--images={tmp}/photos", "--out={tmp}/o"],
            "--model={tmp}/no",
        ),
        (
            ["label", "--method=ddt", "--backbone=resnet5", "--images={tmp}/photos", "--out={tmp}/o"],
            "resnet5",
        ),
        (["train", "--data={tmp}/no_such_dataset"], "dataset.root)={tmp}/no_such_dataset: no such"),
        (
            ["train", "--data={tmp}/photos", "--model.weights={tmp}/w.pth"],
            "model.weights={tmp}/w.pth: no such",
        ),
        (
            ["train", "--data={tmp}/photos", "--model.backbone=effnet"],
            "model.backbone='effnet' is not a known",
        ),
        (["train", "--data={tmp}/photos", "--model.backbone=resnet18"], "model.weights=auto has no ImageNet"),
        (["train-cub", "--data={tmp}/no_such_cub"], "no_such_cub: no such"),
        (["evaluate", "--predictions={tmp}/no_labels"], "--predictions={tmp}/no_labels: no such folder"),
        (["evaluate", "--predictions={tmp}/photos"], "--predictions={tmp}/photos: no part-*.parquet files"),
        (["evaluate", "--predictions={tmp}/labels", "--gt={tmp}/no_gt"], "--gt={tmp}/no_gt: no such"),
        (["calibrate", "--predictions={tmp}/labels", "--gt={tmp}/photos"], "has no _manifest.json"),
        (
            ["calibrate", "--predictions={tmp}/labels", "--gt={tmp}/photos", "--model={tmp}/m.pt"],
            "--model={tmp}/m.pt: no such file",
        ),
        (
            ["export", "--predictions=file://{tmp}/photos", "--out={tmp}/x.json", "--category=bird"],
            "--predictions=file://{tmp}/photos: no part-*.parquet",
        ),
        (["render", "--predictions={tmp}/labels/part-00000.parquet", "--out={tmp}/r"], "no part-*.parquet"),
    ],
)
def test_missing_paths_and_unknown_backbones_exit_2_before_ray(argv, message, tmp_path):
    """Checks that need a cheap look at the world (local paths, the backbone registry), still before Ray."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "part-00000.parquet").write_bytes(b"not read before Ray")
    tmp = str(tmp_path)
    result = _coloc(*(a.format(tmp=tmp) for a in argv))
    assert result["code"] == 2, result
    assert "bad arguments" in result["err"] and message.format(tmp=tmp) in result["err"], result["err"]
    assert result["heavy"] == [], f"coloc {' '.join(argv)} imported {result['heavy']}"


def test_existing_local_paths_and_s3_uris_pass_the_path_checks(tmp_path):
    from pipelines.config import (
        LabelJobConfig,
        TrainJobConfig,
        check_label_paths,
        check_table_inputs,
        check_train_paths,
    )

    model = tmp_path / "model.pt"
    model.write_bytes(b"x")
    for images in (str(tmp_path), f"file://{tmp_path}", "s3://bucket/not/looked/up"):
        check_label_paths(LabelJobConfig(model=str(model), method="model", images=images, out="/o"))
    check_label_paths(LabelJobConfig(model="s3://b/m.pt", method="model", images=str(tmp_path), out="/o"))
    train = TrainJobConfig()
    train.dataset.root = str(tmp_path)
    for weights in ("auto", "none", None, str(model), "s3://b/w.pth"):
        train.model.weights = weights
        check_train_paths(train)
    (tmp_path / "part-00000.parquet").write_bytes(b"x")
    for predictions in (str(tmp_path), f"file://{tmp_path}", "s3://bucket/labels"):
        check_table_inputs(predictions, gt=str(tmp_path), model=str(model))
        check_table_inputs(predictions, gt="s3://b/CUB", model="s3://b/m.pt")
    (tmp_path / "_manifest.json").write_text("{}")
    check_table_inputs(str(tmp_path), gt=str(tmp_path), needs_manifest=True)
    check_table_inputs("s3://bucket/labels", gt=str(tmp_path), needs_manifest=True)  # the job looks


def test_the_backbone_names_checked_before_torch_are_the_registered_ones():
    from coloc_core.backbones import available_backbones
    from coloc_core.config import BACKBONES

    assert sorted(BACKBONES) == available_backbones()


def test_calibrate_looks_the_model_up_before_its_pass(tmp_path, caplog):
    """The model a predictions folder was labelled with is gone: one line of bad input, exit 2."""
    import logging

    from jobs import calibrate

    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "part-00000.parquet").write_bytes(b"not read: the model is looked up first")
    gone = tmp_path / "runs" / "model.pt"
    (labels / "_manifest.json").write_text(json.dumps({"model_uri": str(gone)}))
    (tmp_path / "photos").mkdir()
    argv = [f"--predictions={labels}", f"--gt={tmp_path / 'photos'}", "--split=all"]
    with caplog.at_level(logging.ERROR):
        assert calibrate.main(argv) == 2
    assert f"bad input: the model file {gone} is not there" in caplog.text, caplog.text
    assert "give --model" in caplog.text and "Traceback" not in caplog.text
