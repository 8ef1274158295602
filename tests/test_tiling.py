"""Large images go through the transforms in tiles; the stitched result matches a single pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aecodec import transforms
from aecodec.grow import add_detail
from aecodec.imageio import pad_to_stride, to_planes

from .conftest import smooth_image


@pytest.mark.parametrize("detail", [0, 4])
def test_tiled_transforms_match_a_single_pass(tiny_model, tiny_lapped, monkeypatch, detail):
    """With detail channels the lifting step reaches 46 pixels beyond a block: the shipped
    margin (64) covers it."""
    x = pad_to_stride(to_planes(smooth_image(200, 152)).rgb[None], transforms.STRIDE)
    model = add_detail(tiny_lapped.model, detail, x) if detail else tiny_model
    with torch.inference_mode():
        whole_latent = transforms.analyse(model.analyse, x)
        whole_image = transforms.synthesise(model.synthesis, whole_latent)
        monkeypatch.setattr(transforms, "TILE", 64)
        monkeypatch.setattr(transforms, "MARGIN", 64 if detail else 32)
        tiled_latent = transforms.analyse(model.analyse, x)
        tiled_image = transforms.synthesise(model.synthesis, whole_latent)
    assert torch.allclose(whole_latent, tiled_latent, atol=1e-5)
    diff = (whole_image.int() - tiled_image.int()).abs()
    assert diff.max() <= 1 and diff.float().mean() < 1e-3


def test_tiled_codec_round_trip(tiny, monkeypatch):
    monkeypatch.setattr(transforms, "TILE", 64)
    img = smooth_image(150, 70)
    out = tiny.decompress(tiny.compress(img, 3))
    assert out.size == img.size
    monkeypatch.setattr(transforms, "TILE", 4096)
    assert np.abs(np.array(out, dtype=int) - np.array(tiny.decompress(tiny.compress(img, 3)), dtype=int)).max() <= 1
