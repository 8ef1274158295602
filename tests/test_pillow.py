"""The Pillow plugin: Image.open and Image.save for .aec."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import aecodec.pillow  # noqa: F401  (registers the format)

from .conftest import smooth_image


def test_save_and_open_with_pillow(tmp_path):
    img = smooth_image(48, 40)
    img.save(tmp_path / "a.aec", quality=2)
    with Image.open(tmp_path / "a.aec") as back:
        assert back.format == "AEC" and back.size == (48, 40) and back.mode == "RGB"
        assert back.info["aec_sections"] == aecodec.load("rvq").levels_per_quality[1]
        pixels = np.array(back)
    assert pixels.shape == (40, 48, 3)
    direct = aecodec.decompress((tmp_path / "a.aec").read_bytes())
    assert np.array_equal(pixels, np.array(direct))


def test_save_with_another_model(tmp_path, tiny_path):
    img = smooth_image(20, 10, mode="RGBA")
    img.save(tmp_path / "b.aec", quality=3, model=str(tiny_path))
    assert aecodec.load(tiny_path).decompress((tmp_path / "b.aec").read_bytes()).mode == "RGBA"


def test_save_with_a_rate_or_refinement(tmp_path, tiny_path):
    img = smooth_image(32, 24)
    img.save(tmp_path / "r.aec", bpp=4.0, model=str(tiny_path))
    assert 8 * (tmp_path / "r.aec").stat().st_size <= 4.0 * 32 * 24
    img.save(tmp_path / "f.aec", quality=1, refine=1, model=str(tiny_path))
    back = aecodec.load(tiny_path).decompress((tmp_path / "f.aec").read_bytes())
    assert np.array_equal(np.asarray(back), np.asarray(img))


def test_damaged_file_is_a_clear_error(tmp_path):
    smooth_image(16, 16).save(tmp_path / "c.aec")
    data = (tmp_path / "c.aec").read_bytes()
    (tmp_path / "c.aec").write_bytes(data[:-3])
    with pytest.raises(aecodec.FormatError, match="truncated"):
        Image.open(tmp_path / "c.aec")
