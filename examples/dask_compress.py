"""Compress a dataset too large for one machine with Dask.

Each partition of the file list is compressed on a Dask worker by ``aecodec.compress_files``,
so the single-machine rules hold on every worker: outputs are written atomically, existing
outputs are skipped (re-submitting the job after a failure does only what is left), and a bad
file is reported in the summary instead of failing the job. ``dst`` must be a folder every
worker can write (a shared filesystem); inputs must be readable from every worker.

    from dask.distributed import Client
    client = Client("scheduler-address:8786")          # or LocalCluster() on one machine
    summary = compress_with_dask(paths, "/shared/aec", quality=4, partitions=200)
    print(summary)

Run as a script on a local cluster: ``python examples/dask_compress.py SRC_DIR DST_DIR``.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Iterable

import dask.bag as db

import aecodec
from aecodec.batch import Summary


def compress_partition(paths: Iterable[str], dst: str, quality: int | None, model: str) -> list[Summary]:
    import torch

    torch.set_num_threads(1)  # one torch thread per Dask worker thread: no oversubscription
    return [aecodec.compress_files(list(paths), dst, quality=quality, model=model)]


def compress_with_dask(paths: Iterable[str | Path], dst: str | Path, quality: int | None = None,
                       model: str = "rvq", partitions: int | None = None) -> Summary:
    """Compress ``paths`` into ``dst`` on the current Dask scheduler; one merged Summary."""
    files = sorted(str(p) for p in paths)
    Path(dst).mkdir(parents=True, exist_ok=True)
    bag = db.from_sequence(files, npartitions=partitions or max(1, min(len(files), 64)))
    summaries = bag.map_partitions(compress_partition, str(dst), quality, str(model)).compute()
    return functools.reduce(Summary.merge, summaries, Summary())


if __name__ == "__main__":
    from dask.distributed import Client, LocalCluster

    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster):
        print(compress_with_dask(sorted(src.glob("*.png")), dst))
