"""The shipped default model: present, documented, and working on the bundled sample."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

import aecodec
from aecodec import bitstream, refine
from aecodec.cli import main
from aecodec.codec import SAMPLE, WEIGHTS
from aecodec.entropy import ContextTables
from aecodec.imageio import open_image
from aecodec.metrics import psnr

GOLDEN = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def rvq():
    return aecodec.load("rvq")


def test_default_model_is_shipped_with_a_card():
    assert "rvq" in aecodec.available_models()
    card = (WEIGHTS / "rvq.md").read_text()
    for needed in ("aecodec train", "steps", "wall time", "device", "Kodak"):
        assert needed in card


@pytest.mark.parametrize("name", ["rvq", "denoise", "vae", "sparse", "contractive"])
def test_every_variant_is_shipped_with_a_card_and_round_trips(name):
    """Each model of the family: its weights, a card saying how it was made, and a working
    round trip of the sample at every quality, smaller files at lower qualities."""
    assert name in aecodec.available_models()
    card = (WEIGHTS / f"{name}.md").read_text()
    for needed in ("aecodec train", "steps", "wall time", "device", "Kodak"):
        assert needed in card
    codec = aecodec.load(name)
    image = open_image(SAMPLE)
    sizes = []
    for q in codec.quality_levels:
        data = codec.compress(image, q)
        assert aecodec.decompress(data).size == image.size  # the file picks its model
        sizes.append(len(data))
    assert sizes == sorted(sizes)


def test_sample_round_trips_at_every_quality(rvq):
    image = open_image(SAMPLE)
    sizes, scores = [], []
    for q in rvq.quality_levels:
        data = rvq.compress(image, q)
        out = rvq.decompress(data)
        assert out.size == image.size and out.mode == "RGB"
        sizes.append(len(data))
        scores.append(psnr(image, out))
    assert sizes == sorted(sizes)
    assert scores[-1] > scores[0] + 1  # more stages, visibly better
    assert scores[rvq.default_quality - 1] > 25  # a trained model, not noise


def test_demo_command(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "sample.aec").exists() and (tmp_path / "sample-decoded.png").exists()
    assert "PSNR" in capsys.readouterr().out


def _symbols_sha256(codec, data: bytes) -> str:
    """Of the stage symbols and, if the file has a refinement layer, its residual symbols."""
    f = codec._check(bitstream.read(data))
    digest = hashlib.sha256(np.ascontiguousarray(codec._symbols(f), dtype="<i4").tobytes())
    if f.refinement is not None:
        step, q = refine.decode(f.refinement, 3, f.header.height, f.header.width)
        digest.update(bytes([step]) + np.ascontiguousarray(q, dtype="<i2").tobytes())
    return digest.hexdigest()


GOLDEN_FILES = {
    # model: (file stem, quality, refinement step, crop of the sample)
    "rvq": ("golden", 10, 9, (96, 32, 96 + 80, 32 + 48)),  # the head section and nine passes
    "vae": ("golden_vae", 6, None, (64, 32, 64 + 160, 32 + 96)),  # context-coded sections
}


def _golden(name: str) -> tuple[Path, Path]:
    stem = GOLDEN_FILES[name][0]
    return GOLDEN / f"{stem}.aec", GOLDEN / f"{stem}.symbols.sha256"


@pytest.mark.skipif(not os.environ.get("AECODEC_WRITE_GOLDEN"), reason="writes the golden file")
@pytest.mark.parametrize("name", sorted(GOLDEN_FILES))
def test_write_golden_file(name):
    """``AECODEC_WRITE_GOLDEN=1 pytest tests/test_shipped.py -k write_golden`` after shipping
    new weights (only then: the golden file pins the decoder's behaviour)."""
    codec = aecodec.load(name)
    _, quality, step, box = GOLDEN_FILES[name]
    data = codec.compress(open_image(SAMPLE).crop(box), quality, refine=step)
    path, digest = _golden(name)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    digest.write_text(_symbols_sha256(codec, data) + "\n")


@pytest.mark.parametrize("name", sorted(GOLDEN_FILES))
def test_golden_file_decodes_to_the_same_symbols(name):
    """Guards bit-exactness across machines and versions: these bytes were written once and
    must always decode to the same codebook indices or latent values, and refinement symbols."""
    codec = aecodec.load(name)
    path, digest = _golden(name)
    data = path.read_bytes()
    f = bitstream.read(data)
    h = f.header
    assert _symbols_sha256(codec, data) == digest.read_text().strip()
    assert (f.refinement is not None) == (GOLDEN_FILES[name][2] is not None)
    if getattr(codec.model.entropy, "contextual", False):
        assert f.sections[0][0] & ContextTables.MARK  # the golden file pins the context rule
    assert codec.decompress(data).size == (h.width, h.height)
