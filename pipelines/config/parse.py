"""The command line of every job: ``--key=value`` parsing, ``--help``, ``--version``, ``--verbose``.

A config is built as: dataclass defaults → optional YAML file (``--config file.yaml``) →
``--key=value`` overrides (:func:`build_config`). ``--help`` lists every key with its default and its
description, read from the ``Attributes:`` section of the config dataclasses' docstrings
(:func:`help_text`); :func:`dump` is the resolved tree as YAML.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import typing
from typing import Any, TypeVar

import yaml

from coloc_core.config import apply_overrides, check_numbers, flat_keys, from_dict, to_dict

C = TypeVar("C")

VERBOSE_HELP = (
    "  --verbose  (or --verbose=true)\n"
    "        run-level output option of every command: also print Ray's own output (Ray Data's progress "
    "blocks, Ray Train's and the workers' messages, Ray's INFO and warning lines) and our INFO log "
    "lines with timestamps (the resolved config, every file written); by default a run prints a "
    "header, one progress bar per long stage, per-epoch lines and a summary (pipelines/console.py)"
)


def split_verbose(argv: list[str]) -> tuple[bool, list[str]]:
    """Take the run-level ``--verbose`` option (``--verbose``, ``--verbose=true|false``) out of ``argv``.

    It is not a key of any job config (not stored with checkpoints or predictions); the job passes it
    to :func:`pipelines.console.setup`.

    Raises:
        ValueError: on ``--verbose=<not a boolean>``.
    """
    booleans = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    verbose, rest = False, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--verbose" and i + 1 < len(argv) and argv[i + 1].lower() in booleans:
            verbose = booleans[argv[i + 1].lower()]  # --verbose true (the --key value form)
            i += 1
        elif arg == "--verbose":
            verbose = True
        elif arg.startswith("--verbose="):
            value = arg.split("=", 1)[1]
            if value.lower() not in booleans:
                raise ValueError(f"--verbose={value!r} is not a boolean (true or false)")
            verbose = booleans[value.lower()]
        else:
            rest.append(arg)
        i += 1
    return verbose, rest


def version_text() -> str:
    """``coloc <version>``: what ``--version`` prints."""
    from coloc_core import __version__  # noqa: PLC0415

    return f"coloc {__version__}"


def build_config(cls: type[C], argv: list[str], aliases: dict[str, str] | None = None) -> C:
    """Defaults → ``--config file.yaml`` → ``--key=value`` / ``--key value`` overrides.

    Args:
        cls: the job config dataclass.
        argv: command-line arguments (without the program name).
        aliases: short flags mapped to dotted keys, e.g. ``{"data": "dataset.root"}``.

    Raises:
        SystemExit: on ``--help`` (prints every key with its default) and ``--version``, with code 0.
        KeyError / ValueError: on an unknown key or a bad value, including a number that is not finite
            or outside the range its section declares (:func:`coloc_core.config.check_numbers`).
    """
    aliases = aliases or {}
    if any(a in ("-h", "--help") for a in argv):
        print(help_text(cls, aliases))
        raise SystemExit(0)
    if any(a in ("-V", "--version") for a in argv):
        print(version_text())
        raise SystemExit(0)
    config_file = None
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ValueError(f"unexpected argument {arg!r}; use --key=value")
        body = arg[2:]
        if "=" in body:
            key, value = body.split("=", 1)
        else:
            if i + 1 >= len(argv):
                raise ValueError(f"--{body} needs a value")
            key, value = body, argv[i + 1]
            i += 1
        key = aliases.get(key, key).replace("-", "_") if key not in aliases else aliases[key]
        if key == "config":
            config_file = value
        else:
            overrides.append(f"{key}={value}")
        i += 1
    data: dict[str, Any] = {}
    if config_file:
        with open(config_file) as fh:
            data = yaml.safe_load(fh) or {}
    cfg = from_dict(cls, data)
    return check_numbers(apply_overrides(cfg, overrides))


def _attribute_docs(cls: type) -> dict[str, str]:
    """``name: description`` pairs from the ``Attributes:`` section of a dataclass docstring."""
    docs: dict[str, str] = {}
    text = inspect.getdoc(cls) or ""
    if "Attributes:" not in text:
        return docs
    current = ""
    for line in text.split("Attributes:", 1)[1].splitlines():
        match = re.match(r"^\s{4}(\w+)(?: \(.*?\))?:\s*(.*)$", line)
        if match:
            current = match.group(1)
            docs[current] = match.group(2).strip()
        elif current and line.startswith(" " * 8):
            docs[current] += " " + line.strip()
        elif line.strip():
            current = ""
    return docs


def _all_docs(cls: type, prefix: str = "") -> dict[str, str]:
    out = {f"{prefix}{k}": v for k, v in _attribute_docs(cls).items()}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        hint = typing.get_type_hints(cls).get(f.name)
        if dataclasses.is_dataclass(hint):
            out.update(_all_docs(hint, prefix=f"{prefix}{f.name}."))  # type: ignore[arg-type]
    return out


def help_text(cls: type, aliases: dict[str, str]) -> str:
    """Every configurable key with its default value and its description."""
    docs = _all_docs(cls)
    lines = [
        "Options (--key=value or --key value; a YAML file given with --config=file.yaml is applied first):"
    ]
    for key, value in flat_keys(cls()).items():
        alias = [a for a, k in aliases.items() if k == key]
        extra = f"  (alias --{alias[0]})" if alias else ""
        lines.append(f"  --{key}={json.dumps(value)}{extra}")
        if key in docs:
            lines.append(f"        {docs[key]}")
    lines.append(VERBOSE_HELP)
    return "\n".join(lines)


def dump(cfg: Any) -> str:
    """The resolved config as YAML (logged at start, saved with checkpoints and predictions)."""
    return str(yaml.safe_dump(to_dict(cfg), sort_keys=True))


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """Document the ``--key=value`` convention on an argparse parser (for `coloc ... --help`)."""
    parser.add_argument("overrides", nargs="*", help="--key=value overrides, see --help")
