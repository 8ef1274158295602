"""One loaded codec shared by several threads gives the same bytes and pixels as serial use."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .conftest import smooth_image


def test_shared_codec_is_thread_safe(tiny):
    images = [smooth_image(40 + 8 * i, 24 + 4 * i, seed=i) for i in range(8)]
    serial = [tiny.compress(img, 1 + i % 4) for i, img in enumerate(images)]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda a: tiny.compress(a[1], 1 + a[0] % 4), enumerate(images)))
        decoded = list(pool.map(tiny.decompress, serial))
    assert parallel == serial
    assert all(np.array_equal(np.array(d), np.array(tiny.decompress(s))) for d, s in zip(decoded, serial))
