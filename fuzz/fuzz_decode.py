"""Coverage-guided fuzzing of the .aec reader and decoder with atheris (libFuzzer).

    pip install atheris
    mkdir -p /tmp/aec-fuzz && python fuzz/fuzz_decode.py /tmp/aec-fuzz fuzz/corpus \
        -max_total_time=1800 -timeout=2 -rss_limit_mb=2048

Any exception other than aecodec.AecError, any input slower than -timeout seconds and any
allocation beyond -rss_limit_mb is reported by libFuzzer as a crash, with the input saved as
crash-<hash> for a regression test. The corpus starts from small valid files (written by
``python fuzz/fuzz_decode.py --seed fuzz/corpus``); libFuzzer grows it with inputs that reach
new code. The models are the tiny test models of every bottleneck (rvq, vae, sparse), built in
a second, so the fuzzer spends its time in the parser and the entropy decoders rather than in
convolutions.

Atheris hooks every ``==``/``<`` in instrumented code and keeps the result alive when it is a
numpy array: the decoders compare arrays with ``np.equal``/``np.less`` so that the fuzzer's RSS
stays flat (with ``==`` it grew about 45 KB per input and hit the 2 GB limit).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The fuzzer decodes thousands of image sizes in one process, and oneDNN keeps a compiled
# convolution for each (up to 1024 by default); a small cache keeps the RSS flat, so that
# -rss_limit_mb catches the decoder's allocations, not the cache. It must be set before torch loads.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")

import atheris  # noqa: E402

with atheris.instrument_imports(include=["aecodec"]):
    from aecodec import AecError, bitstream, entropy, refine  # noqa: F401
    from aecodec.codec import Codec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import build_tiny_model, smooth_image  # noqa: E402

CODECS = {c.name: c for c in (Codec(build_tiny_model(bottleneck=b)) for b in ("rvq", "vae", "sparse"))}


def structured(data: bytes) -> bytes:
    """A container with valid checksums around fuzzed fields and payloads, so that mutations
    reach the entropy decoder instead of stopping at a CRC."""
    fdp = atheris.FuzzedDataProvider(data)
    codec = CODECS[fdp.PickValueInList(sorted(CODECS))]
    n = fdp.ConsumeIntInRange(1, 6)
    mode = fdp.PickValueInList(list(bitstream.MODES))
    header = bitstream.Header(codec.name, codec.fingerprint, fdp.ConsumeIntInRange(1, 400),
                              fdp.ConsumeIntInRange(1, 400), mode, n)
    sections = [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)) for _ in range(n)]
    alpha = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)) if mode in ("LA", "RGBA") else None
    refinement = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256)) if fdp.ConsumeBool() else None
    checksum = fdp.ConsumeIntInRange(0, 2**32 - 1) if refinement is not None and fdp.ConsumeBool() else None
    icc, exif = (fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)) or None for _ in range(2))
    return bitstream.write(bitstream.AecFile(header, sections, alpha, refinement, checksum, icc, exif))


def one_input(data: bytes) -> None:
    for candidate in (data, structured(data)):
        try:
            codec = CODECS.get(bitstream.read(candidate).header.model, CODECS["tiny"])
            codec.decompress(candidate)
        except AecError:
            pass


def seed(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("seed-*.aec"):
        old.unlink()
    for name, codec in CODECS.items():
        for i, (size, mode) in enumerate([((1, 1), "L"), ((40, 24), "RGB"), ((33, 17), "RGBA"), ((16, 48), "LA")]):
            image = smooth_image(*size, seed=i, mode=mode)
            for q in codec.quality_levels:
                (folder / f"seed-{name}-{i}-{q}.aec").write_bytes(codec.compress(image, q))
            (folder / f"seed-{name}-{i}-refined.aec").write_bytes(codec.compress(image, 2, refine=5))
            image.info |= {"icc_profile": b"profile " * i, "exif": b"Exif\x00\x00" * i}
            (folder / f"seed-{name}-{i}-metadata.aec").write_bytes(codec.compress(image, 2, refine=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--seed"]:
        seed(Path(sys.argv[2]))
    else:
        atheris.Setup(sys.argv, one_input)
        atheris.Fuzz()
