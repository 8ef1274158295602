"""Shared fixtures: a tiny model built in seconds (so the codec machinery is tested without the
shipped weights) and small generated images (tests never read ../shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aecodec.cli import main
from aecodec.codec import Codec
from aecodec.model import AutoEncoder, ModelConfig
from aecodec.train import symbols_of
from aecodec.transforms import block_klt


def smooth_image(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A photo-like test image: smooth gradients plus a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    chans = [128 + 100 * np.sin(xx / (7 + 5 * c) + yy / (11 + 3 * c) + rng.uniform(0, 6)) for c in range(4)]
    arr = np.stack(chans, -1) + rng.normal(0, 4, (height, width, 4))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGBA")
    return img if mode == "RGBA" else img.convert(mode)


def train_from(tmp_path: Path, init: AutoEncoder, args: list[str]) -> Path:
    """``aecodec train --init`` from ``init`` on three small generated images (one held out),
    with ``args`` for the rest; the run folder."""
    data, out, path = tmp_path / "data", tmp_path / "run", tmp_path / "init.safetensors"
    data.mkdir()
    for s in range(3):
        smooth_image(80, 64, seed=s).save(data / f"{s}.png")
    init.save(path)
    assert main(["train", "--data", str(data), "--out", str(out), "--init", str(path), "--crop", "32",
                 "--val-count", "1", "--threads", "1", *args]) == 0
    return out


TINY_CONFIGS = {
    "rvq": ModelConfig(name="tiny", channels=8, latent=8, bottleneck_args={"stages": 4, "codebook_size": 16},
                       qualities=[1, 2, 3, 4], default_quality=2, context_groups=4),
    "lattice": ModelConfig(name="tinylattice", bottleneck="lattice", channels=8, latent=8,
                           bottleneck_args={"planes": 5, "head": 2, "top_step": 2.0},
                           qualities=[1, 2, 3, 5, 7], default_quality=3),
    "vae": ModelConfig(name="tinyvae", bottleneck="vae", channels=8, latent=8,
                       bottleneck_args={"lambdas": [0.001, 0.01, 0.05, 0.2]},
                       qualities=[1, 2, 3, 4], default_quality=2),
    "lapped": ModelConfig(name="tinylapped", bottleneck="vae", transform="lapped", channels=8, latent=8,
                          bottleneck_args={"lambdas": [0.001, 0.01, 0.05, 0.2]},
                          qualities=[1, 2, 3, 4], default_quality=2),
    "sparse": ModelConfig(name="tinysparse", bottleneck="sparse", channels=8, latent=8,
                          bottleneck_args={"lambdas": [0.001, 0.01, 0.05, 0.2], "sparsity": 0.1},
                          qualities=[1, 2, 3, 4], default_quality=2),
}


def build_tiny_model(seed: int = 0, bottleneck: str = "rvq") -> AutoEncoder:
    """An untrained model with data-initialised bottleneck and real tables: what the codec
    machinery needs, in a second."""
    torch.manual_seed(seed)
    model = AutoEncoder(TINY_CONFIGS[bottleneck]).eval()
    images = [(torch.from_numpy(np.array(smooth_image(64, 48, s))[:, :, :3]).permute(2, 0, 1))
              for s in range(4)]
    with torch.no_grad():
        if hasattr(model.analysis, "initialise"):  # a linear path starts as the images' block KLT
            basis, mean = block_klt(torch.stack(images).float() / 255, model.config.latent)
            model.analysis.initialise(basis, mean)
            model.synthesis.initialise(basis, mean)
        latents = torch.cat([model.analysis(i[None].float() / 255) for i in images])
    model.bottleneck.initialise(latents.permute(0, 2, 3, 1).reshape(-1, 8), seed=seed)
    model.fit_entropy(symbols_of(model, images, torch.device("cpu")))
    return AutoEncoder.from_bytes(model.to_bytes())  # as a user would load it


@pytest.fixture(scope="session")
def tiny_model() -> AutoEncoder:
    return build_tiny_model()


@pytest.fixture(scope="session")
def tiny(tiny_model: AutoEncoder) -> Codec:
    return Codec(tiny_model)


@pytest.fixture(scope="session")
def tiny_vae() -> Codec:
    return Codec(build_tiny_model(bottleneck="vae"))


@pytest.fixture(scope="session")
def tiny_lapped() -> Codec:
    return Codec(build_tiny_model(bottleneck="lapped"))


@pytest.fixture(scope="session")
def tiny_sparse() -> Codec:
    return Codec(build_tiny_model(bottleneck="sparse"))


@pytest.fixture(scope="session")
def tiny_lattice() -> Codec:
    return Codec(build_tiny_model(bottleneck="lattice"))


@pytest.fixture(scope="session", params=["rvq", "lattice", "vae", "sparse"])
def any_tiny(request) -> Codec:
    """Each bottleneck's tiny codec in turn: what every bottleneck must do alike."""
    return request.getfixturevalue("tiny" if request.param == "rvq" else f"tiny_{request.param}")


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory, tiny_model: AutoEncoder):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    tiny_model.save(path)
    return path
