"""aecodec: a learned image codec you can read, train and trust.

>>> import aecodec
>>> codec = aecodec.load("rvq")
>>> data = codec.compress(image, quality=4)   # bytes of a complete .aec file
>>> image = codec.decompress(data)
>>> aecodec.compress_folder("photos", "aec", workers=4)   # many files; see aecodec.batch
"""

from .batch import (Summary, compress_files, compress_folder, decompress_files,
                    decompress_folder, iter_compress)
from .codec import Codec, Info, available_models, decompress, info, load
from .errors import AecError, FormatError, ImageError, ModelError, OutputError, UsageError

__version__ = "0.1.0"

__all__ = [
    "AecError", "Codec", "FormatError", "ImageError", "Info", "ModelError", "OutputError",
    "Summary", "UsageError", "available_models", "compress_files", "compress_folder", "decompress",
    "decompress_files", "decompress_folder", "info", "iter_compress", "load",
]
