"""A Pillow plugin for .aec files: ``import aecodec.pillow`` and Pillow opens and saves them.

    Image.open("photo.aec").show()
    Image.open("photo.png").save("photo.aec", quality=4)          # default model
    img.save("photo.aec", quality=2, model="path/to/model.safetensors")
    img.save("photo.aec", bpp=0.5)                                 # or psnr=32, or refine=3

Registered the way Pillow's own format plugins are: an ImageFile subclass for reading, a save
function, and the .aec extension. Decoding happens on ``load()``, so ``Image.open`` only parses
(and fully validates) the header.
"""

from __future__ import annotations

from typing import IO

from PIL import Image, ImageFile

from . import bitstream
from .codec import codec_for, load

FORMAT = "AEC"


def _accept(prefix: bytes) -> bool:
    return prefix[:4] == bitstream.MAGIC


class AecImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "aecodec learned image"

    def _open(self) -> None:
        self._aec = self.fp.read()
        parsed = bitstream.read(self._aec)  # FormatError (a ValueError to Pillow) if bad
        header = parsed.header
        for key, value in (("icc_profile", parsed.icc), ("exif", parsed.exif)):
            if value:
                self.info[key] = value
        self._size = (header.width, header.height)
        self._mode = header.mode
        self.info["aec_model"] = header.model
        self.info["aec_sections"] = header.sections
        self.tile = []

    def load(self):
        if self._aec is not None:
            decoded = codec_for(self._aec).decompress(self._aec)
            self.im = decoded.im
            self._aec = None
        return Image.Image.load(self)


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    info = im.encoderinfo
    targets = {k: info[k] for k in ("refine", "bpp", "psnr") if info.get(k) is not None}
    fp.write(load(info.get("model", "rvq")).compress(im, info.get("quality"), **targets))


Image.register_open(FORMAT, AecImageFile, _accept)
Image.register_save(FORMAT, _save)
Image.register_extension(FORMAT, ".aec")
Image.register_mime(FORMAT, "image/x-aec")
