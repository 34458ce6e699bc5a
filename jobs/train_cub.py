"""Train on CUB-200-2011 (or any folder in its layout): ``ray job submit -- python jobs/train_cub.py``.

    ray job submit --working-dir . -- python jobs/train_cub.py \
        --data s3://bucket/CUB_200_2011 --run.storage_path=s3://bucket/runs --run.name=cub
    ray job submit --working-dir . -- python jobs/train_cub.py --method=caml \
        --data s3://bucket/CUB_200_2011 --run.storage_path=s3://bucket/runs --run.name=cub-caml

The default ``--method=selftrain`` fits the self-trained head on the train split (a few Ray Data
passes); ``--method=caml`` trains the paper's network on Ray Train. ``--data`` is ``dataset.root``;
every other key of ``pipelines.config.TrainJobConfig`` can be set with ``--key=value`` (``--help``
lists them, ``--config file.yaml`` applies a file first). Starting the same
``--run.storage_path``/``--run.name`` of a CAML run again resumes from its latest checkpoint (a
self-training run is fitted again). Exit code 0 on success, 1 when training fails, 2 on a bad command
line or bad input (a dataset without the files of the CUB layout).
"""

from __future__ import annotations

import sys

from jobs.train import main as train_main


def main(argv: list[str] | None = None) -> int:
    return train_main(argv, only_format="cub")


if __name__ == "__main__":
    sys.exit(main())
