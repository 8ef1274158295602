"""The command line: one-line errors with distinct exit codes, no clobbering, atomic outputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import aecodec
from aecodec import bitstream
from aecodec.cli import main
from aecodec.metrics import psnr

from .conftest import smooth_image


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "in.png"
    smooth_image(50, 30).save(path)
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_encode_decode_info(capsys, tmp_path, png, tiny_path):
    aec, back = tmp_path / "x.aec", tmp_path / "back.png"
    code, out, _ = run(capsys, "encode", png, aec, "--model", tiny_path, "--quality", "3")
    assert code == 0 and "bpp" in out
    code, out, _ = run(capsys, "info", aec)
    assert code == 0 and "50x30 RGB" in out and "3 sections" in out
    code, _, err = run(capsys, "decode", aec, back, "--model", tiny_path)
    assert code == 0 and err == ""
    from PIL import Image

    assert Image.open(back).size == (50, 30)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_existing_output_is_kept_without_force(capsys, tmp_path, png, tiny_path):
    aec = tmp_path / "x.aec"
    aec.write_bytes(b"precious")
    code, _, err = run(capsys, "encode", png, aec, "--model", tiny_path)
    assert code == 2 and "exists" in err and aec.read_bytes() == b"precious"
    code, _, _ = run(capsys, "encode", png, aec, "--model", tiny_path, "--force")
    assert code == 0 and aec.read_bytes()[:4] == bitstream.MAGIC


def test_output_same_as_input_is_refused(capsys, png, tiny_path):
    before = png.read_bytes()
    code, _, err = run(capsys, "encode", png, png, "--model", tiny_path, "--force")
    assert code == 2 and "is the input" in err and png.read_bytes() == before


@pytest.mark.parametrize(
    "damage, exit_code, message",
    [
        (lambda d: d[: len(d) // 2], 4, "truncated"),
        (lambda d: d[:-5] + bytes([d[-5] ^ 1]) + d[-4:], 4, "checksum"),
        (lambda d: b"RIFF" + d[4:], 4, "magic"),
        (lambda d: d[:4] + b"\x07" + d[5:], 4, "version 7"),
    ],
)
def test_damaged_files_fail_cleanly_without_output(capsys, tmp_path, png, tiny_path, damage, exit_code, message):
    aec, out = tmp_path / "x.aec", tmp_path / "out.png"
    assert run(capsys, "encode", png, aec, "--model", tiny_path)[0] == 0
    aec.write_bytes(damage(aec.read_bytes()))
    code, _, err = run(capsys, "decode", aec, out, "--model", tiny_path)
    assert code == exit_code and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_fingerprint_mismatch_and_absurd_size(capsys, tmp_path, png, tiny_path):
    import dataclasses

    aec, out = tmp_path / "x.aec", tmp_path / "out.png"
    run(capsys, "encode", png, aec, "--model", tiny_path)
    f = bitstream.read(aec.read_bytes())
    for change, code_expected, message in [
        ({"fingerprint": b"\x01" * 8}, 5, "other weights"),
        ({"width": 100000, "height": 100000}, 4, "100000x100000"),
    ]:
        bad = dataclasses.replace(f, header=dataclasses.replace(f.header, **change))
        aec.write_bytes(bitstream.write(bad))
        code, _, err = run(capsys, "decode", aec, out, "--model", tiny_path)
        assert code == code_expected and message in err and not out.exists()


def test_unreadable_image_and_missing_file(capsys, tmp_path, tiny_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    code, _, err = run(capsys, "encode", junk, tmp_path / "o.aec", "--model", tiny_path)
    assert code == 3 and "not a readable image" in err
    code, _, err = run(capsys, "encode", tmp_path / "nope.png", tmp_path / "o.aec", "--model", tiny_path)
    assert code == 3 and "no such file" in err
    code, _, err = run(capsys, "decode", tmp_path / "nope.aec", tmp_path / "o.png")
    assert code == 4 and "no such file" in err
    assert not (tmp_path / "o.aec").exists() and not (tmp_path / "o.png").exists()


def test_unknown_model_and_extension(capsys, tmp_path, png, tiny_path):
    code, _, err = run(capsys, "encode", png, tmp_path / "o.aec", "--model", "nonesuch")
    assert code == 5 and "unknown model" in err
    aec = tmp_path / "x.aec"
    run(capsys, "encode", png, aec, "--model", tiny_path)
    code, _, err = run(capsys, "decode", aec, tmp_path / "o.xyz", "--model", tiny_path)
    assert code == 2 and "extension" in err


def test_missing_output_folder(capsys, tmp_path, png, tiny_path):
    code, _, err = run(capsys, "encode", png, tmp_path / "no" / "o.aec", "--model", tiny_path)
    assert code == 6 and "does not exist" in err


def test_console_script_prints_no_traceback(tmp_path):
    bad = tmp_path / "bad.aec"
    bad.write_bytes(b"\x89AEC\x01")
    proc = subprocess.run([sys.executable, "-m", "aecodec.cli", "decode", str(bad), str(tmp_path / "o.png")],
                          capture_output=True, text=True)
    assert proc.returncode == 4
    assert proc.stderr.startswith("aecodec: error:") and "Traceback" not in proc.stderr


def test_truncate_and_preview(capsys, tmp_path, png, tiny_path):
    full, low, direct = tmp_path / "full.aec", tmp_path / "low.aec", tmp_path / "direct.aec"
    run(capsys, "encode", png, full, "--model", tiny_path, "--quality", "4")
    run(capsys, "encode", png, direct, "--model", tiny_path, "--quality", "2")
    code, out, _ = run(capsys, "truncate", full, low, "--quality", "2", "--model", tiny_path)
    assert code == 0 and low.read_bytes() == direct.read_bytes()
    code, _, err = run(capsys, "truncate", low, tmp_path / "up.aec", "--quality", "4", "--model", tiny_path)
    assert code == 2 and "only 2" in err and not (tmp_path / "up.aec").exists()
    code, _, _ = run(capsys, "decode", full, tmp_path / "p.png", "--preview", "--model", tiny_path)
    assert code == 0 and (tmp_path / "p.png").exists()


def test_encode_to_a_rate(capsys, tmp_path, png, tiny_path):
    out = tmp_path / "r.aec"
    code, _, _ = run(capsys, "encode", png, out, "--model", tiny_path, "--bpp", "2.0")
    assert code == 0 and 8 * out.stat().st_size <= 2.0 * 50 * 30
    code, _, err = run(capsys, "encode", png, tmp_path / "s.aec", "--model", tiny_path, "--bpp", "0.01")
    assert code == 2 and "below the smallest file" in err
    code, _, err = run(capsys, "encode", png, tmp_path / "t.aec", "--model", tiny_path, "--psnr", "20", "-q", "2")
    assert code == 2 and "give one target" in err and not (tmp_path / "t.aec").exists()
    code, _, _ = run(capsys, "encode", png, "-o", tmp_path / "dir", "--model", tiny_path, "--psnr", "40")
    assert code == 0
    data = (tmp_path / "dir" / "in.aec").read_bytes()
    assert psnr(Image.open(png), aecodec.load(tiny_path).decompress(data)) >= 40


def test_encode_with_refinement_and_info(capsys, tmp_path, png, tiny_path):
    out = tmp_path / "r.aec"
    code, stdout, _ = run(capsys, "encode", png, out, "--model", tiny_path, "-q", "1", "--refine", "5")
    assert code == 0 and "refinement step 5" in stdout
    back = np.asarray(aecodec.load(tiny_path).decompress(out.read_bytes()), dtype=int)
    assert np.abs(back - np.asarray(Image.open(png).convert("RGB"), dtype=int)).max() <= 2
    code, stdout, _ = run(capsys, "info", out)
    assert code == 0 and "step 5 (max error 2)" in stdout
    code, _, err = run(capsys, "encode", png, tmp_path / "x.aec", "--model", tiny_path, "--refine", "0")
    assert code == 2 and "outside 1..255" in err


def test_encode_with_a_beam_search(capsys, tmp_path, png, tiny_path, tiny_vae):
    out = tmp_path / "b.aec"
    code, stdout, _ = run(capsys, "encode", png, out, "--model", tiny_path, "-q", "3", "--beam", "4")
    assert code == 0 and "quality 3" in stdout
    assert aecodec.load(tiny_path).decompress(out.read_bytes()).size == (50, 30)
    code, _, err = run(capsys, "encode", png, tmp_path / "x.aec", "--model", tiny_path, "--beam", "0")
    assert code == 2 and "outside 1..16" in err and not (tmp_path / "x.aec").exists()
    with pytest.raises(aecodec.UsageError, match="needs a model with ECVQ codebooks"):
        tiny_vae.compress(Image.open(png), 1, beam=2)
