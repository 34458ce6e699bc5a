"""Start-up: ``coloc <command> --help`` and a labeling job's time from command to first part file.

    .venv/bin/python bench/bench_startup.py --images ../shared/data/cub100-unboxed/images --n 200

1. ``coloc <command> --help`` for every command, as a user types it (a fresh process each, best of
   ``--repeat``), against ``python -c pass`` (the interpreter's own start) in the same run.
2. ``coloc label`` on the first ``--n`` images of ``--images`` (``--rows_per_file`` rows per part file,
   so the first file lands after that many images), a fresh process that starts its own local Ray.
   Every line the job prints is time-stamped as it arrives, and the output folder is polled for the
   first ``part-*.parquet``: the phases are the process start to the job's header (imports, argument
   parsing), to Ray being up (``ray: N CPUs``), to the plan (``label: N images in K shards``), to the
   first part file, to the end. Baseline in the same run: the plain loop of ``bench/bench_label.py``
   (decode + forward + boxes in one process) on ``--rows_per_file`` images, model load included: the
   time a user's script needs for the same first file.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import threading
import time

COMMANDS = ("", "train", "label", "evaluate", "export", "calibrate", "render", "generate")
PHASES = (
    ("header", "coloc "),  # the job's header line (imports and parsing done)
    ("ray_up", "  ray: "),
    ("planned", " shards of "),
)


def _coloc() -> str:
    found = shutil.which("coloc", path=os.path.dirname(sys.executable))
    return found or "coloc"


def help_times(repeat: int) -> dict[str, float]:
    def best(argv: list[str]) -> float:
        times = []
        for _ in range(repeat):
            start = time.monotonic()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.monotonic() - start)
        return round(min(times), 3)

    out = {"python -c pass": best([sys.executable, "-c", "pass"])}
    for command in COMMANDS:
        argv = [_coloc(), *([command] if command else []), "--help"]
        out[" ".join(["coloc", command, "--help"]).replace("  ", " ")] = best(argv)
    return out


def label_timeline(images: str, n: int, rows_per_file: int, out: str, extra: list[str]) -> dict[str, object]:
    shutil.rmtree(out, ignore_errors=True)
    argv = [
        _coloc(),
        "label",
        f"--images={images}",
        f"--limit={n}",
        f"--out={out}",
        f"--rows_per_file={rows_per_file}",
        *extra,
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = time.monotonic()
    marks: dict[str, float] = {}
    lines: list[tuple[float, str]] = []
    first_file: list[float] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            if glob.glob(os.path.join(out, "part-*.parquet")):
                first_file.append(time.monotonic() - start)
                return
            time.sleep(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        now = time.monotonic() - start
        lines.append((now, line.rstrip()))
        for name, needle in PHASES:
            if name not in marks and needle in line:
                marks[name] = round(now, 2)
    rc = proc.wait()
    end = time.monotonic() - start
    done.set()
    poller.join(timeout=1)
    if rc != 0:
        sys.stderr.write("\n".join(text for _, text in lines[-30:]) + "\n")
        raise SystemExit(f"coloc label exited with {rc}")
    return {
        "phases_s": {
            **marks,
            "first_part_file": round(first_file[0], 2) if first_file else None,
            "exit": round(end, 2),
        },
        "argv": argv[1:],
    }


def plain_first_file(images: str, n: int, method: str, backbone: str) -> float:
    """Seconds for a plain script to import, load the model and label the first ``n`` images."""
    code = (
        "import sys, time; t = time.monotonic(); sys.path.insert(0, 'bench'); import bench_label; "
        "from pipelines import storage; "
        f"paths = storage.list_images({images!r})[:{n}]; "
        f"bench_label.plain_baseline(paths, 2, 32, {method!r}, {backbone!r}); "
        "print(time.monotonic() - t)"
    )
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
    return round(time.monotonic() - start, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--rows_per_file", type=int, default=100)
    ap.add_argument("--out", default="/tmp/bench-startup")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--method", default="caam")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--skip_help", action="store_true")
    args = ap.parse_args()
    result: dict[str, object] = {"load_avg_before": os.getloadavg()}
    if not args.skip_help:
        result["help_s"] = help_times(args.repeat)
    result["label"] = label_timeline(
        args.images,
        args.n,
        args.rows_per_file,
        args.out,
        [f"--method={args.method}", f"--backbone={args.backbone}"],
    )
    result["plain_script_first_file_s"] = plain_first_file(
        args.images, args.rows_per_file, args.method, args.backbone
    )
    result["load_avg_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
