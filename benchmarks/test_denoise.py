"""The denoising benchmark keeps apart two files of one model (a candidate and the shipped one)."""

from types import SimpleNamespace

from benchmarks.denoise import _labels


def test_models_sharing_a_name_are_told_apart_by_fingerprint():
    shipped = SimpleNamespace(name="denoise", fingerprint=bytes.fromhex("bda55095c0b51c55"))
    candidate = SimpleNamespace(name="denoise", fingerprint=bytes.fromhex("48b77f4feceef4e5"))
    plain = SimpleNamespace(name="rvq", fingerprint=bytes.fromhex("50a6567383f5e9de"))
    assert _labels([shipped, candidate, plain]) == ["denoise bda55095", "denoise 48b77f4f", "rvq"]
    assert _labels([shipped, plain]) == ["denoise", "rvq"]
