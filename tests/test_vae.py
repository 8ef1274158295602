"""The VAE bottleneck: its prior, its integer tables, its one-section files and its training.

What every bottleneck must do alike (round trips, determinism, rate control) is tested with the
``any_tiny`` fixture in test_roundtrip.py; this file covers what is particular to the VAE."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from aecodec import AecError, FormatError, bitstream
from aecodec.bottlenecks.prior import FactorizedPrior
from aecodec.cli import main
from aecodec.codec import load
from aecodec.entropy import FactorizedTables

from .conftest import smooth_image, train_from


def test_prior_is_a_distribution_over_integers():
    prior = FactorizedPrior(3)
    grid = torch.arange(-300, 301, dtype=torch.float32).expand(3, -1).contiguous()
    total = prior.likelihood(grid, torch.arange(3)).sum(1)
    assert torch.allclose(total, torch.ones(3), atol=1e-3)


def test_tables_are_integers_covering_the_mass():
    prior = FactorizedPrior(4)
    offsets, counts, widths = prior.tables(max_alphabet=1024)
    assert offsets.dtype == torch.int32 and counts.dtype == torch.int32 and widths.dtype == torch.int32
    assert (counts.sum(1).double() / (1 << 24) > 1 - 1e-4).all()  # all but the tails and floors
    assert int(widths.max()) == counts.shape[1]
    assert all(not counts[r, w:].any() for r, w in enumerate(widths.tolist()))  # nothing beyond a row


@pytest.mark.parametrize("spread", [0.01, 1.0, 10.0, 100.0])
def test_a_tables_width_follows_its_spread_not_the_likelihood_floor(spread):
    """Every value's likelihood is floored at 1e-9 for training; counted into the tails at export,
    that floor made every table the full 4096 wide (a 50 MB file). Widths must track the spread,
    and stay at least 2, the fewest symbols the coder accepts."""
    widths = FactorizedPrior(3, init_scale=spread).tables(max_alphabet=4096)[2]
    assert (widths >= 2).all() and (widths <= max(2, 40 * spread)).all()


def test_each_channel_has_a_table_as_wide_as_its_range():
    """A channel spanning thousands of steps (a lapped transform's DC at a fine level) gets a
    wide table while the others stay narrow; stored packed, and loaded back the same."""
    widths = np.array([21, 4001], np.int32)  # row 1: 200 times wider, as a DC row at a fine level
    counts = np.zeros((2, 4001), np.int64)
    for row, w in enumerate(widths):
        k = np.arange(w) - w // 2
        counts[row, :w] = np.floor(2.0**24 * np.exp(-np.abs(k) / (w / 10)))
    offsets = -(widths // 2)
    tables = FactorizedTables(counts[None].astype(np.int32), offsets[None], widths[None])
    arrays = tables.arrays()
    assert set(arrays) == {"packed", "widths", "offsets"} and len(arrays["packed"]) == int(widths.sum())
    again = FactorizedTables(**arrays)
    values = np.array([[[[-2000, 0, 2000]], [[-2000, 0, 2000]]]], dtype=np.int32)  # (1, C=2, 1, 3)
    clamped = again.constrain(values, 1)
    assert clamped[0, 1].tolist() == [[-2000, 0, 2000]] and abs(clamped[0, 0]).max() < 50
    chunks = again.encode(clamped, 1)
    assert np.array_equal(again.decode(chunks, (2, 1, 3))[0], clamped[0]) and chunks == tables.encode(clamped, 1)
    bits = again.rate_cost(1, 1.0)(0, torch.from_numpy(values))
    assert float(bits[0, 1, 0, 1]) < float(bits[0, 1, 0, 0])  # 0 is the likeliest value of row 1


def test_tables_of_one_width_keep_the_dense_layout():
    """Models exported before per-row widths store dense counts and load exactly as before."""
    tables = FactorizedTables(np.ones((2, 3, 5), np.int32), np.zeros((2, 3), np.int32))
    assert set(tables.arrays()) == {"counts", "offsets"} and (tables.widths == 5).all()


def test_decoded_values_are_the_encoders(tiny_vae):
    model = tiny_vae.model
    latent = torch.randn(2, 8, 3, 5) * 40  # some values beyond the tables: clamped alike
    for level in range(1, model.bottleneck.levels + 1):
        symbols = model.symbols(latent, level)
        for j in range(2):
            chunks = model.entropy.encode(symbols[:, j], level)
            assert model.entropy.level_of(chunks) == level
            assert np.array_equal(model.entropy.decode(chunks, (8, 3, 5)), symbols[:, j])


def test_info_reports_the_level(tiny_vae):
    for q in tiny_vae.quality_levels:
        i = tiny_vae.info(tiny_vae.compress(smooth_image(40, 24), q))
        assert (i.quality, i.level, i.sections) == (q, tiny_vae.levels_per_quality[q - 1], 1)


def _with_section(data: bytes, section: bytes) -> bytes:
    f = bitstream.read(data)
    return bitstream.write(dataclasses.replace(f, sections=[section]))


@pytest.mark.parametrize("level", [0, 5, 127, 0x80, 0x85, 255])
def test_a_level_the_model_lacks_is_rejected(tiny_vae, level):
    """Bit 7 marks a context-coded section; the level is the other seven."""
    data = tiny_vae.compress(smooth_image(40, 24), 2)
    f = bitstream.read(data)
    with pytest.raises(FormatError, match=f"level {level & 0x7F} is outside"):
        tiny_vae.decompress(_with_section(data, bytes([level]) + f.sections[0][1:]))


def test_hostile_sections_with_valid_checksums_fail_cleanly(tiny_vae):
    data = tiny_vae.compress(smooth_image(40, 24), 2)
    rng = np.random.default_rng(0)
    for n in (0, 1, 3, 4, 5, 64, 400):
        junk = bytes([2]) + rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        try:
            assert tiny_vae.decompress(_with_section(data, junk)).size == (40, 24)
        except AecError:
            pass
    with pytest.raises(FormatError, match="one non-empty section"):
        tiny_vae.decompress(_with_section(data, b""))


def test_rate_biased_rounding_trades_distance_for_bits(tiny_vae):
    """Each value stays one of the two integers around the scaled latent (clamped to its
    channel's table); where it leaves the nearer one, it takes the cheaper, so the code gets
    shorter; and the file decodes as any."""
    import copy

    from aecodec.bottlenecks.vae import BIT_VALUE

    model = copy.deepcopy(tiny_vae.model)
    vae, level = model.bottleneck, 1
    latent = torch.randn(2, 8, 6, 5, generator=torch.Generator().manual_seed(0)) * 3
    scaled = (vae._rotate(latent) * vae.gain[level - 1].exp()[:, None, None])[None]
    lo = torch.from_numpy(model.entropy.offsets[level - 1]).float()[:, None, None]
    scaled = torch.minimum(torch.maximum(scaled, lo), lo + torch.from_numpy(model.entropy.widths[level - 1])[:, None, None] - 1)
    plain = torch.from_numpy(model.symbols(latent, level))
    model.config.rate_bias = 0.5
    biased = torch.from_numpy(model.symbols(latent, level))
    bits = model.entropy.rate_cost(level, 1.0)
    assert ((biased - scaled).abs() < 1).all()
    moved = biased != plain
    assert moved.any()  # the bias does change choices here
    assert (bits(0, biased[0])[moved[0]] < bits(0, plain[0])[moved[0]]).all()
    lagrangian = (scaled - biased) ** 2 + 0.5 * BIT_VALUE * bits(0, biased[0])
    assert (lagrangian <= (scaled - plain) ** 2 + 0.5 * BIT_VALUE * bits(0, plain[0]) + 1e-6).all()
    for j in range(2):
        chunks = model.entropy.encode(biased[:, j].numpy(), level)
        assert np.array_equal(model.entropy.decode(chunks, (8, 6, 5)), biased[:, j].numpy())


def test_sparse_tables_price_no_choice(tiny_sparse):
    """A significance-coded value's bits depend on its neighbours: the sparse model rounds."""
    import copy

    model = copy.deepcopy(tiny_sparse.model)
    latent = torch.randn(1, 8, 4, 4, generator=torch.Generator().manual_seed(1)) * 3
    plain = model.symbols(latent, 1)
    model.config.rate_bias = 0.5
    assert model.rate_cost(1) is None and np.array_equal(model.symbols(latent, 1), plain)


def test_tables_refuse_mismatched_arrays():
    with pytest.raises(ValueError):
        FactorizedTables(np.ones((2, 3, 5), np.int32), np.zeros((2, 4), np.int32))
    with pytest.raises(ValueError):  # a packed file whose widths do not add up
        FactorizedTables(offsets=np.zeros((1, 2), np.int32), widths=np.array([[3, 4]]), packed=np.ones(6, np.int32))


def test_train_a_vae_from_an_rvq_models_transforms(tmp_path, tiny_path, capsys):
    data, out = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    for s in range(3):
        smooth_image(80, 64, seed=s).save(data / f"{s}.png")
    args = ["train", "--data", str(data), "--out", str(out), "--name", "v", "--bottleneck", "vae",
            "--channels", "8", "--latent", "8", "--lambdas", "0.01,0.1", "--batch-size", "2", "--crop", "32",
            "--val-count", "1", "--threads", "1", "--full-rate-fraction", "0", "--init", str(tiny_path)]
    assert main([*args, "--steps", "504", "--warmup", "500"]) == 0
    assert "(transforms only)" in capsys.readouterr().out
    assert main([*args[:-2], "--steps", "506", "--warmup", "500", "--resume"]) == 0
    codec = load(out / "v.safetensors")
    assert codec.model.config.bottleneck == "vae" and list(codec.quality_levels) == [1, 2]
    img = smooth_image(40, 30)
    assert codec.decompress(codec.compress(img, 2)).size == (40, 30)


def test_a_grown_latent_codes_the_old_channels_as_before(tiny_vae):
    """Growing keeps every trained weight: the old channels get the same symbols, the new ones
    start small, and the reconstruction moves by a few 8-bit levels at most."""
    from aecodec.grow import grow

    old = tiny_vae.model
    x = torch.stack([torch.from_numpy(np.array(smooth_image(64, 48, s))[:, :, :3]).permute(2, 0, 1)
                     for s in range(4)]).float() / 255
    new = grow(old, 12, x, seed=0).eval()
    assert new.config.latent == 12 and new.bottleneck.gain.shape == (4, 12)
    with torch.no_grad():
        for level in (1, 4):
            before, after = old.bottleneck.encode(old.analysis(x), level), new.bottleneck.encode(new.analysis(x), level)
            assert np.array_equal(before[:, :, :8], after[:, :, :8])
            shift = new.synthesis(new.bottleneck.decode(after, level)) - old.synthesis(old.bottleneck.decode(before, level))
            assert shift.abs().max() < 8 / 255
    with pytest.raises(AecError, match="cannot grow"):
        grow(old, 8, x)


def test_train_grows_a_vae_given_a_wider_latent(tmp_path, tiny_vae, capsys):
    out = train_from(tmp_path, tiny_vae.model, [
        "--name", "wide", "--bottleneck", "vae", "--channels", "8", "--latent", "12",
        "--lambdas", "0.001,0.01,0.05,0.2", "--batch-size", "2", "--full-rate-fraction", "0",
        "--steps", "502", "--warmup", "500"])
    printed = capsys.readouterr().out
    assert "growing the latent" in printed and "(transforms only)" not in printed
    codec = load(out / "wide.safetensors")
    assert codec.model.config.latent == 12
    assert codec.decompress(codec.compress(smooth_image(40, 30), 2)).size == (40, 30)


def test_a_run_with_a_lower_rung_keeps_the_trained_levels(tmp_path, tiny_vae, capsys):
    """--init into a ladder with a new lambda: the old levels keep their gains and tables, so
    they code every image exactly as before; the new one starts beyond them."""
    out = train_from(tmp_path, tiny_vae.model, [
        "--name", "low", "--bottleneck", "vae", "--channels", "8", "--latent", "8",
        "--lambdas", "0.0002,0.001,0.01,0.05,0.2", "--steps", "500", "--warmup", "500",
        "--rate-bias", "0"])  # plain rounding, as the file it starts from
    assert "adopting the levels" in capsys.readouterr().out
    new, old = load(out / "low.safetensors").model, tiny_vae.model
    assert torch.equal(new.bottleneck.gain[1:], old.bottleneck.gain)
    assert (new.bottleneck.gain[0] < old.bottleneck.gain[0]).all()  # a coarser step than any before
    latent = torch.randn(1, 8, 3, 5) * 10
    for level in range(1, 5):
        assert np.array_equal(new.symbols(latent, level + 1), old.symbols(latent, level))
    # the same densities, tabulated again in float32 in a larger batch: a count may move by one
    assert np.abs(new.entropy.counts[1:].astype(np.int64) - old.entropy.counts).max() <= 1


def test_the_coding_space_is_where_the_finest_level_rounds(tiny_vae):
    vae = tiny_vae.model.bottleneck
    mean, project, unproject = vae.coding_space()
    y = torch.randn(2, 8, 3, 5) * 4
    symbols = vae.encode(y, vae.levels)[0]  # (B, C, h, w)
    z = torch.einsum("dc,bchw->bdhw", project, y - mean[:, None, None])
    assert (z - torch.from_numpy(symbols)).abs().max() <= 0.5 + 1e-4
    back = torch.einsum("cd,bdhw->bchw", unproject, torch.from_numpy(symbols).float()) + mean[:, None, None]
    assert torch.allclose(back, vae.decode(symbols[None], vae.levels), atol=1e-5)


def test_level_steps_follow_the_channels_that_carry_bits(tiny_vae):
    """Each level's step in the coding space (1 at the finest), a mean weighted by the bits each
    channel gets there: with one gain ratio for all channels it is that ratio."""
    vae = copy.deepcopy(tiny_vae.model.bottleneck)
    steps = vae.level_steps()
    assert steps[-1] == pytest.approx(1.0) and (steps[:-1] > 1).all()
    with torch.no_grad():
        vae.gain.copy_(vae.gain[-1] - torch.log(torch.tensor([8.0, 4.0, 2.0, 1.0]))[:, None])
    assert torch.allclose(vae.level_steps(), torch.tensor([8.0, 4.0, 2.0, 1.0]), rtol=1e-4)


def test_an_rvq_on_a_vaes_transforms_quantizes_in_its_coding_space(tmp_path, tiny_vae):
    out = train_from(tmp_path, tiny_vae.model, [
        "--name", "r", "--bottleneck", "rvq", "--channels", "8", "--latent", "8", "--stages", "4",
        "--codebook-size", "16", "--qualities", "1,2,3,4", "--default-quality", "2", "--batch-size", "2",
        "--steps", "501", "--warmup", "500"])
    codec = load(out / "r.safetensors")
    rvq = codec.model.bottleneck
    mean, project, unproject = tiny_vae.model.bottleneck.coding_space()
    assert torch.equal(rvq.mean, mean) and torch.equal(rvq.project, project) and torch.equal(rvq.unproject, unproject)
    y = torch.randn(1, 8, 2, 3) * 4
    first = rvq.encode(y, 1)[0, 0].reshape(-1)
    z = (y.permute(0, 2, 3, 1).reshape(-1, 8) - mean) @ project.T  # the nearest code in z, not in y
    assert np.array_equal(first, torch.cdist(z, rvq.codebooks[0, 0]).argmin(1).numpy())
    decoded = rvq.decode(rvq.encode(y, 4), 4).permute(0, 2, 3, 1).reshape(-1, 8)
    codes = sum(rvq.codebooks[s, 0][torch.from_numpy(rvq.encode(y, 4)[s].reshape(-1)).long()] for s in range(4))
    assert torch.allclose(decoded, codes @ unproject.T + mean, atol=1e-5)
    assert codec.decompress(codec.compress(smooth_image(40, 30), 2)).size == (40, 30)


def test_files_from_before_the_coding_space_load_with_the_identity(tiny_model):
    state = {k: v for k, v in tiny_model.state_dict().items() if k.split(".")[-1] not in ("mean", "project", "unproject")}
    fresh = type(tiny_model)(tiny_model.config)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.bottleneck.project, torch.eye(8)) and not fresh.bottleneck.mean.any()
