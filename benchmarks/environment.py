"""What a result was measured on: the machine and the library versions that decide the numbers,
so that two RESULTS.md files can be told apart before their tables are compared."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path

from PIL import features


def environment() -> dict[str, str]:
    """Name -> version or description, in the order a reader checks them."""
    return {
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count()),
        "OS": platform.platform(),
        "Python": platform.python_version(),
        **{name: _version(name) for name in ("aecodec", "torch", "numpy", "constriction", "Pillow")},
        "libjpeg": (f"libjpeg-turbo {features.version_feature('libjpeg_turbo')}"
                    if features.check_feature("libjpeg_turbo") else str(features.version("jpg"))),
        "libwebp": str(features.version("webp")),
        "libavif": str(features.version("avif")),
        **{name: _version(name) for name in ("pillow-jxl-plugin", "pytorch-msssim", "matplotlib")},
    }


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
