"""Every job's configuration, in one place: ``from pipelines.config import X``.

- :mod:`pipelines.config.jobs`: the Ray compute jobs, training and labeling (``TrainJobConfig`` with
  its ``DatasetConfig`` and ``RunConfig`` sections, ``LabelJobConfig``) and their checks;
- :mod:`pipelines.config.tools`: the other commands (evaluate, calibrate, export, render, generate,
  the demo) and their checks;
- :mod:`pipelines.config.parse`: the command line (defaults → ``--config file.yaml`` →
  ``--key=value``), ``--help`` from the dataclasses' docstrings, ``--version``, ``--verbose``, and the
  resolved tree as YAML (``dump``).

Nothing here imports Ray or torch: ``--help`` and bad command lines stay fast.
"""

from pipelines.config.jobs import (
    DATASET_FORMATS,
    FIRST_LABELS,
    LABEL_BOXES,
    LABEL_HALVES,
    LABEL_METHODS,
    LABEL_PICKS,
    TRAIN_METHODS,
    DatasetConfig,
    LabelJobConfig,
    RunConfig,
    TrainJobConfig,
    check_label_config,
    check_label_paths,
    check_table_inputs,
    check_train_paths,
    crop_bottom_note,
    crop_bottom_of,
    default_backbone,
    resolve_train_config,
)
from pipelines.config.parse import (
    VERBOSE_HELP,
    add_config_args,
    build_config,
    dump,
    help_text,
    split_verbose,
    version_text,
)
from pipelines.config.tools import (
    EXPORT_FORMATS,
    CalibrateJobConfig,
    DemoConfig,
    EvaluateJobConfig,
    ExportJobConfig,
    GenerateConfig,
    RenderJobConfig,
    check_calibrate_config,
    check_evaluate_config,
    check_export_config,
    check_render_config,
)

__all__ = [
    "DATASET_FORMATS",
    "EXPORT_FORMATS",
    "FIRST_LABELS",
    "LABEL_BOXES",
    "LABEL_HALVES",
    "LABEL_PICKS",
    "LABEL_METHODS",
    "TRAIN_METHODS",
    "VERBOSE_HELP",
    "CalibrateJobConfig",
    "DatasetConfig",
    "DemoConfig",
    "EvaluateJobConfig",
    "ExportJobConfig",
    "GenerateConfig",
    "LabelJobConfig",
    "RenderJobConfig",
    "RunConfig",
    "TrainJobConfig",
    "add_config_args",
    "build_config",
    "check_calibrate_config",
    "check_evaluate_config",
    "check_export_config",
    "check_label_config",
    "check_label_paths",
    "check_render_config",
    "check_table_inputs",
    "check_train_paths",
    "crop_bottom_note",
    "crop_bottom_of",
    "default_backbone",
    "dump",
    "help_text",
    "resolve_train_config",
    "split_verbose",
    "version_text",
]
