"""What a file can make the decoder do, and what a round trip may lose (issue 26)."""

from __future__ import annotations

import copy
import hashlib
import io
import struct
import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

import aecodec
from aecodec import bitstream, imageio
from aecodec import codec as codec_module
from aecodec.cli import main
from aecodec.codec import Codec, InexactDecode
from aecodec.errors import FormatError, ImageError, ModelError, UsageError
from aecodec.imageio import ConversionNote, open_image, to_planes, write_atomic
from aecodec.model import ModelConfig
from aecodec.train import load_checkpoint

from .conftest import smooth_image
from .test_train import TINY, photos


def test_a_header_cannot_name_a_model_file(tmp_path, monkeypatch, tiny_model):
    """A model planted beside the file, with the header naming it and carrying its
    fingerprint, is never loaded: a header names an installed model, not a path."""
    planted = copy.deepcopy(tiny_model)
    planted.config.name = "x.safetensors"
    planted.save(tmp_path / "x.safetensors")
    planted.fingerprint = hashlib.sha256(planted.to_bytes()).digest()[:8]  # as loading it would set
    codec = Codec(planted)
    with monkeypatch.context() as m:  # write the hostile header the encoder would refuse
        m.setattr(bitstream, "valid_model_id", lambda name: True)
        data = codec.compress(smooth_image(32, 32))
    monkeypatch.chdir(tmp_path)
    for call in (aecodec.decompress, aecodec.info):
        with pytest.raises(FormatError, match="invalid model id"):
            call(data)
    (tmp_path / "in.aec").write_bytes(data)
    assert main(["decode", "in.aec", "out.png"]) == 4 and not (tmp_path / "out.png").exists()


def test_model_names_that_a_header_cannot_hold_are_refused():
    for name in ("x.safetensors", "../rvq", "a/b", "", "UPPER", "a" * 33):
        with pytest.raises(ModelError, match="model name"):
            ModelConfig(name=name)
    ModelConfig(name="rvq-2_b")


def test_truncate_to_a_rate_the_file_fits_returns_it_unchanged(tiny):
    """A refined file within the budget keeps its refinement layer (it used to lose it)."""
    img = smooth_image(48, 32)
    data = tiny.compress(img, 4, refine=2)
    bpp = 8 * len(data) / (48 * 32)
    assert tiny.truncate(data, bpp=bpp) == data
    assert tiny.truncate(data, bpp=bpp * 10) == data
    assert tiny.truncate(data, bpp=bpp * 0.99) != data  # just below it, stages are cut


@pytest.mark.parametrize("failure", [errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK])
def test_write_without_overwrite_on_a_file_system_without_hard_links(tmp_path, monkeypatch, failure):
    """exFAT, FAT and some SMB and FUSE mounts refuse link(): an exclusive create claims the name."""
    def no_links(src, dst, *args, **kwargs):
        raise OSError(failure, os.strerror(failure))

    monkeypatch.setattr(os, "link", no_links)
    out = tmp_path / "out.aec"
    write_atomic(out, b"first", overwrite=False)
    assert out.read_bytes() == b"first"
    with pytest.raises(UsageError, match="exists"):
        write_atomic(out, b"second", overwrite=False)
    assert out.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.aec"]  # no temporary left behind


class _Planted:
    """An object whose unpickling runs code: it touches a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_never_unpickles_code(tmp_path, capsys):
    data, run = photos(tmp_path)
    run.mkdir()
    marker = tmp_path / "ran"
    torch.save({"step": 1, "payload": _Planted(marker)}, run / "checkpoint.pt")
    with pytest.raises(SystemExit, match="loaded safely"):
        main(["train", "--data", str(data), "--out", str(run), "--steps", "2", "--resume", *TINY])
    assert not marker.exists()
    with pytest.raises(SystemExit, match="loaded safely"):
        load_checkpoint(run / "checkpoint.pt")
    assert not marker.exists()


def test_a_real_checkpoint_loads_without_unpickling(tmp_path):
    data, run = photos(tmp_path)
    assert main(["train", "--data", str(data), "--out", str(run), "--steps", "3", "--warmup", "1",
                 "--checkpoint-minutes", "0", *TINY]) == 0
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["step"] == 3 and "opt" in state and "model" in state


def display_p3_profile() -> bytes:
    """A Display-P3 ICC profile: ImageCms's sRGB profile (Display P3 shares its transfer curve
    and D65 white) with P3's primaries as its colorants (D50-adapted, as ICC stores them) and
    chromaticities, and its description renamed. ImageCms builds no P3 profile itself."""
    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    tags = {}
    for i in range(struct.unpack_from(">I", icc, 128)[0]):
        sig, offset, size = struct.unpack_from(">4sII", icc, 132 + 12 * i)
        tags[sig] = offset
    fixed = lambda v: round(v * 65536)
    colorants = {b"rXYZ": (0.5151, 0.2412, -0.0011), b"gXYZ": (0.2920, 0.6922, 0.0419), b"bXYZ": (0.1571, 0.0666, 0.7841)}
    for sig, xyz in colorants.items():
        struct.pack_into(">3i", icc, tags[sig] + 8, *map(fixed, xyz))
    struct.pack_into(">6I", icc, tags[b"chrm"] + 12, *map(fixed, (0.680, 0.320, 0.265, 0.690, 0.150, 0.060)))
    desc = tags[b"desc"]
    length, offset = struct.unpack_from(">II", icc, desc + 20)
    icc[desc + offset : desc + offset + length] = "Display P3".ljust(length // 2).encode("utf-16-be")
    icc[84:100] = bytes(16)  # profile ID: zero means "not computed"
    return bytes(icc)


def test_the_display_p3_profile_is_one():
    profile = ImageCms.ImageCmsProfile(io.BytesIO(display_p3_profile()))
    assert ImageCms.getProfileDescription(profile).strip() == "Display P3"
    red = Image.new("RGB", (1, 1), (255, 0, 0))
    srgb = ImageCms.profileToProfile(red, profile, ImageCms.createProfile("sRGB"))
    assert srgb.getpixel((0, 0))[0] == 255 and srgb.getpixel((0, 0))[1] == 0  # P3 red lies outside sRGB


def _photo_with_metadata(tmp_path: Path) -> tuple[Path, bytes]:
    """A Display-P3 JPEG photo with EXIF (camera, date)."""
    icc = display_p3_profile()
    exif = Image.Exif()
    exif[0x010F] = "aecodec test camera"  # Make
    exif[0x0132] = "2026:12:06 10:00:00"  # DateTime
    path = tmp_path / "photo.jpg"
    smooth_image(48, 32).save(path, quality=95, icc_profile=icc, exif=exif)
    return path, icc


def _has_metadata(img: Image.Image, icc: bytes) -> bool:
    return img.info.get("icc_profile") == icc and img.getexif().get(0x010F) == "aecodec test camera"


def test_icc_profile_and_exif_survive_the_round_trip(tmp_path, tiny, tiny_path):
    path, icc = _photo_with_metadata(tmp_path)
    photo = open_image(path)
    assert _has_metadata(photo, icc)
    data = tiny.compress(photo, 3)
    assert _has_metadata(tiny.decompress(data), icc)
    assert _has_metadata(tiny.decompress(tiny.truncate(data, 2)), icc)  # truncation keeps them
    assert _has_metadata(tiny.decompress(tiny.compress(photo, refine=1)), icc)
    # the CLI writes them into the decoded PNG
    assert main(["encode", str(path), str(tmp_path / "p.aec"), "--model", str(tiny_path)]) == 0
    assert main(["decode", str(tmp_path / "p.aec"), str(tmp_path / "p.png"), "--model", str(tiny_path)]) == 0
    with Image.open(tmp_path / "p.png") as png:
        assert _has_metadata(png, icc)


def test_the_pillow_plugin_keeps_icc_profile_and_exif(tmp_path, tiny_model, monkeypatch):
    import aecodec.pillow  # noqa: F401  (registers the format)

    monkeypatch.setattr(aecodec.pillow, "load", lambda model: Codec(tiny_model))
    monkeypatch.setattr(aecodec.pillow, "codec_for", lambda data: Codec(tiny_model))
    path, icc = _photo_with_metadata(tmp_path)
    with Image.open(path) as photo:
        photo.save(tmp_path / "p.aec", quality=3)
    with Image.open(tmp_path / "p.aec") as img:
        assert _has_metadata(img, icc)  # known from the header, before decoding
        img.load()
        assert img.size == (48, 32) and _has_metadata(img, icc)


def test_a_hostile_metadata_section_is_a_clear_error(tiny, monkeypatch):
    img = _with_icc(smooth_image(32, 32))
    for bad in (b"\xff\xff\xff\x7fprofile", b"\x07\x00\x00\x00profile", b"\x07\x00\x00\x00profile\x00\x00\x00\x00!"):
        with monkeypatch.context() as m:
            m.setattr(bitstream, "_pack_meta", lambda icc, exif: bad)
            data = tiny.compress(img, 2)
        with pytest.raises(FormatError, match="metadata section"):
            tiny.decompress(data)


def test_float_images_are_read_by_their_range():
    """Mode F in [0, 1] (NumPy's and tifffile's convention) used to come back black."""
    levels = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    with pytest.warns(ConversionNote):
        unit = to_planes(Image.fromarray(levels, "F"))
    assert unit.colour.max() == 255 and abs(float(unit.colour.mean()) - 127.5) < 1
    with pytest.warns(ConversionNote):
        assert to_planes(Image.fromarray(levels * 255, "F")).colour.max() == 255
    for bad in (levels * 1000, levels - 0.5, np.full((4, 4), np.nan, np.float32)):
        with pytest.raises(ImageError, match="mode F"):
            to_planes(Image.fromarray(bad, "F"))


def _elsewhere(codec: Codec) -> Codec:
    """The same model file on a machine whose float arithmetic differs: here, a synthesis
    whose output is nudged by a fraction of an 8-bit level, enough to flip some roundings."""
    model = copy.deepcopy(codec.model)
    with torch.no_grad():
        model.synthesis[-1].bias += 0.4 / 255
    return Codec(model)


def test_a_refined_file_says_when_it_is_not_exact_on_this_machine(tiny):
    img = smooth_image(48, 32)
    lossless = tiny.compress(img, 3, refine=1)
    assert np.array_equal(np.array(tiny.decompress(lossless)), np.array(img))
    with pytest.raises(ModelError, match="not exact on this machine"):
        _elsewhere(tiny).decompress(lossless)
    with pytest.warns(InexactDecode, match="not exact on this machine"):
        _elsewhere(tiny).decompress(tiny.compress(img, 3, refine=4))
    _elsewhere(tiny).decompress(tiny.compress(img, 3))  # no refinement, no promise to check


def test_version_1_files_still_decode(tiny, monkeypatch):
    """Version 1 is version 2 without its new flags: the reader takes both, and refuses the
    new flags in a version 1 header."""
    img = smooth_image(32, 32)
    with monkeypatch.context() as m:
        m.setattr(bitstream, "VERSION", 1)
        v1, v1_meta = tiny.compress(img, 2), tiny.compress(_with_icc(img), 2)
    assert v1[4] == 1 and np.array_equal(np.array(tiny.decompress(v1)), np.array(tiny.decompress(tiny.compress(img, 2))))
    with pytest.raises(FormatError, match="unknown flags"):
        tiny.decompress(v1_meta)


def _with_icc(img: Image.Image) -> Image.Image:
    img = img.copy()
    img.info["icc_profile"] = b"profile"
    return img


def test_a_file_asking_for_more_than_the_decoding_limit_is_refused(tiny, tmp_path, monkeypatch, tiny_path):
    data = tiny.compress(smooth_image(64, 48), 2)
    monkeypatch.setattr(imageio, "MAX_DECODE_PIXELS", 64 * 48 - 1)
    with pytest.raises(FormatError, match="decoding limit"):
        tiny.decompress(data)
    (tmp_path / "big.aec").write_bytes(data)
    assert main(["decode", str(tmp_path / "big.aec"), str(tmp_path / "big.png"), "--model", str(tiny_path)]) == 4
    monkeypatch.setattr(imageio, "MAX_DECODE_PIXELS", 64 * 48)
    assert tiny.decompress(data).size == (64, 48)


def test_batches_hold_a_bounded_number_of_pixels():
    sizes = [(512, 768)] * 64 + [(16, 16)] * 3
    batches = list(codec_module._batches(sizes, lambda s: (s,), 64))
    assert sorted(i for b in batches for i in b) == list(range(67))
    assert all(len(b) * sizes[b[0]][0] * sizes[b[0]][1] <= codec_module.BATCH_PIXELS for b in batches)
    assert [len(b) for b in batches if sizes[b[0]] == (16, 16)] == [3]
    assert list(codec_module._batches([(4096, 4096)], lambda s: (s,), 8)) == [[0]]  # one image always fits


def test_batch_work_is_done_a_batch_at_a_time(tiny, monkeypatch):
    """Decoding a batch decodes each group's symbols just before its network pass, and
    encoding converts each group's images just before its pass: nothing for all files up front."""
    monkeypatch.setattr(codec_module, "BATCH_PIXELS", 32 * 32)  # one 32x32 image per batch
    log: list[str] = []
    images = [smooth_image(32, 32, seed=s) for s in range(3)]

    def logged(name, fn):
        def call(*args, **kwargs):
            log.append(name)
            return fn(*args, **kwargs)
        return call

    monkeypatch.setattr(codec_module, "to_planes", logged("convert", codec_module.to_planes))
    monkeypatch.setattr(tiny.model, "symbols", logged("encode", tiny.model.symbols))
    blobs = tiny.compress_batch(images, 2)
    assert log == ["convert", "encode"] * 3
    log.clear()
    monkeypatch.setattr(tiny, "_symbols", logged("symbols", tiny._symbols))
    monkeypatch.setattr(tiny, "_reconstruct", logged("network", tiny._reconstruct))
    tiny.decompress_batch(blobs)
    assert log == ["symbols", "network"] * 3
