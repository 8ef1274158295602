"""The distributed example runs on a local Dask cluster (two worker processes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aecodec import bitstream

from .conftest import smooth_image

pytest.importorskip("dask.distributed")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from dask_compress import compress_with_dask  # noqa: E402


@pytest.mark.slow
def test_compress_a_folder_on_a_local_dask_cluster(tmp_path, tiny_path):
    from dask.distributed import Client, LocalCluster

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i in range(6):
        smooth_image(40 + 4 * i, 24, seed=i).save(src / f"{i}.png")
    (src / "broken.png").write_bytes(b"not a png")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster):
        summary = compress_with_dask(sorted(src.glob("*.png")), dst, quality=2, model=str(tiny_path), partitions=3)
        assert summary.done == 6 and summary.failed == 1
        assert all(bitstream.read((dst / f"{i}.aec").read_bytes()).header.sections == 2 for i in range(6))
        again = compress_with_dask(sorted(src.glob("*.png")), dst, quality=2, model=str(tiny_path))
        assert again.skipped == 6 and again.done == 0  # a re-submitted job does only what is left
