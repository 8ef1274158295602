"""Batches: many files per command, resumable after any interruption, one bad file never fatal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import aecodec
from aecodec import bitstream
from aecodec.cli import main

from .conftest import smooth_image

REPO = Path(__file__).resolve().parents[1]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def photos(tmp_path) -> list[Path]:
    """Five small images of three sizes, RGB and L and RGBA."""
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = []
    sizes = [(40, 24, "RGB"), (40, 24, "RGB"), (33, 17, "L"), (40, 24, "RGBA"), (48, 32, "RGB")]
    for i, (w, h, mode) in enumerate(sizes):
        paths.append(folder / f"p{i}.png")
        smooth_image(w, h, seed=i, mode=mode).save(paths[-1])
    return paths


def no_parts(*folders: Path) -> bool:
    return not [p for f in folders for p in f.rglob("*.part")]


def test_folder_round_trip_api(tmp_path, photos, tiny, tiny_path):
    (photos[0].parent / "notes.txt").write_text("not an image: not taken by the folder glob")
    s = aecodec.compress_folder(photos[0].parent, tmp_path / "aec", quality=3, model=tiny_path)
    assert (s.done, s.skipped, s.failed) == (5, 0, 0) and s.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "aec").iterdir()) == [f"p{i}.aec" for i in range(5)]
    assert s.bytes_in == sum(p.stat().st_size for p in photos)
    assert s.bytes_out == s.coded_bytes == sum(p.stat().st_size for p in (tmp_path / "aec").iterdir())
    assert s.bpp == pytest.approx(8 * s.bytes_out / sum(Image.open(p).width * Image.open(p).height for p in photos))
    for p in photos:  # each file is what the single-file API makes
        assert (tmp_path / "aec" / f"{p.stem}.aec").read_bytes() == tiny.compress(Image.open(p), 3)

    d = aecodec.decompress_folder(tmp_path / "aec", tmp_path / "back", model=tiny_path)
    assert (d.done, d.failed) == (5, 0) and d.coded_bytes == s.bytes_out
    for p in photos:
        back = Image.open(tmp_path / "back" / f"{p.stem}.png")
        assert back.size == Image.open(p).size and back.mode == Image.open(p).mode
    assert no_parts(tmp_path)


def test_cli_batch_round_trip_with_progress_and_summary(capsys, tmp_path, photos, tiny_path):
    code, out, err = run(capsys, "encode", *photos, "-o", tmp_path / "aec", "--model", tiny_path, "-q", "2")
    assert code == 0
    assert "5 done, 0 skipped, 0 failed" in out and "bytes in" in out and "bpp" in out
    assert "encode" in err and "5/5" in err and "100%" in err  # the tqdm bar, on stderr
    for p in photos:
        assert aecodec.info((tmp_path / "aec" / f"{p.stem}.aec").read_bytes()).sections == 2

    aecs = sorted((tmp_path / "aec").glob("*.aec"))
    code, out, err = run(capsys, "decode", *aecs, "-o", tmp_path / "jpg", "--format", "jpg", "--model", tiny_path)
    # JPEG has no alpha: the RGBA file fails alone, on one line naming it; the others are written
    assert code == 2 and "4 done, 0 skipped, 1 failed" in out and "decode" in err
    assert f"aecodec: error: {aecs[3]}: " in err and "RGBA" in err
    assert sorted(p.name for p in (tmp_path / "jpg").iterdir()) == ["p0.jpg", "p1.jpg", "p2.jpg", "p4.jpg"]


def test_rerun_skips_what_is_done_and_force_overwrites(capsys, tmp_path, photos, tiny_path):
    out = tmp_path / "aec"
    assert run(capsys, "encode", *photos[:3], "-o", out, "--model", tiny_path)[0] == 0
    done = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    time.sleep(0.01)
    code, text, _ = run(capsys, "encode", *photos, "-o", out, "--model", tiny_path)
    assert code == 0 and "2 done, 3 skipped, 0 failed" in text
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # not rewritten

    (out / "p0.aec").write_bytes(b"stale output")
    code, text, _ = run(capsys, "encode", *photos, "-o", out, "--model", tiny_path)
    assert code == 0 and "0 done, 5 skipped" in text and (out / "p0.aec").read_bytes() == b"stale output"
    code, text, _ = run(capsys, "encode", *photos, "-o", out, "--model", tiny_path, "--force")
    assert code == 0 and "5 done, 0 skipped" in text
    assert (out / "p0.aec").read_bytes()[:4] == bitstream.MAGIC
    assert no_parts(out)


def test_failing_files_are_reported_and_the_rest_is_done(capsys, tmp_path, photos, tiny_path):
    junk = photos[0].parent / "junk.png"
    junk.write_bytes(b"not an image")
    code, out, err = run(capsys, "encode", photos[0], junk, tmp_path / "missing.png", photos[1],
                         "-o", tmp_path / "aec", "--model", tiny_path)
    assert code == 3  # both failures are image errors
    assert "2 done, 0 skipped, 2 failed" in out
    lines = [line for line in err.splitlines() if "aecodec: error:" in line]
    assert any(f"{junk}: not a readable image" in line for line in lines)
    assert any("missing.png: no such file" in line for line in lines)
    assert "2 of 4 files failed" in lines[-1] and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "aec").iterdir()) == ["p0.aec", "p1.aec"]

    aecs = sorted((tmp_path / "aec").glob("*.aec"))
    corrupt = tmp_path / "aec" / "corrupt.aec"
    data = aecs[0].read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])
    code, out, err = run(capsys, "decode", aecs[0], corrupt, aecs[1], "-o", tmp_path / "png", "--model", tiny_path)
    assert code == 4 and "2 done, 0 skipped, 1 failed" in out
    assert f"aecodec: error: {corrupt}: " in err and "truncated" in err
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["p0.png", "p1.png"]
    assert no_parts(tmp_path)


def test_refusals_self_and_collisions(capsys, tmp_path, photos, tiny_path):
    out = tmp_path / "aec"
    assert run(capsys, "encode", photos[0], "-o", out, "--model", tiny_path)[0] == 0
    before = (out / "p0.aec").read_bytes()
    # an input that maps onto itself, even with --force
    code, text, err = run(capsys, "encode", out / "p0.aec", "-o", out, "--model", tiny_path, "--force")
    assert code == 2 and "is the input file" in err and (out / "p0.aec").read_bytes() == before
    # two inputs with one output name: the first is done, the second refused (on every re-run)
    other = tmp_path / "other"
    other.mkdir()
    smooth_image(20, 20, seed=9).save(other / "p1.png")
    code, text, err = run(capsys, "encode", photos[1], other / "p1.png", "-o", out, "--model", tiny_path)
    assert code == 2 and "1 done, 0 skipped, 1 failed" in text and "also the output of" in err
    s = aecodec.compress_files([photos[1], photos[1]], out, model=tiny_path)  # named twice: once
    assert (s.done, s.skipped, s.failed) == (0, 1, 0)


def test_argument_forms(capsys, tmp_path, photos, tiny_path):
    a, b, c = photos[:3]
    code, _, err = run(capsys, "encode", a, b, c, "--model", tiny_path)
    assert code == 2 and "-o DIR" in err
    code, _, err = run(capsys, "encode", a, "--model", tiny_path)
    assert code == 2 and "INPUT OUTPUT" in err
    code, _, err = run(capsys, "encode", a, tmp_path / "x.aec", "--workers", "2", "--model", tiny_path)
    assert code == 2 and "--workers" in err and not (tmp_path / "x.aec").exists()
    # two images without -o: the second would be overwritten with .aec bytes; refused
    before = b.read_bytes()
    code, _, err = run(capsys, "encode", a, b, "--model", tiny_path, "--force")
    assert code == 2 and "-o DIR" in err and b.read_bytes() == before
    code, _, err = run(capsys, "encode", a, tmp_path, "--model", tiny_path)
    assert code == 2 and "is a folder" in err
    code, _, err = run(capsys, "encode", a, "-o", tmp_path / "x.aec", "--model", tiny_path)
    assert code == 2 and "-o names a folder" in err and not (tmp_path / "x.aec").exists()
    code, _, err = run(capsys, "decode", a, tmp_path / "o.png", "--format", "png")
    assert code == 2 and "--format" in err
    code, _, err = run(capsys, "decode", a, "-o", tmp_path / "o", "--format", "aec")
    assert code == 2 and "use encode" in err
    code, _, err = run(capsys, "encode", a, "-o", tmp_path / "o", "--model", tiny_path, "-q", "9")
    assert code == 2 and "out of range" in err and not (tmp_path / "o").exists()
    # the single-file forms are unchanged
    code, out, _ = run(capsys, "encode", a, tmp_path / "x.aec", "--model", tiny_path)
    assert code == 0 and "bpp" in out
    code, _, err = run(capsys, "decode", tmp_path / "x.aec", tmp_path / "x.png", "--model", tiny_path)
    assert code == 0 and err == "" and Image.open(tmp_path / "x.png").size == (40, 24)


def test_workers_give_the_same_files(tmp_path, photos, tiny_path):
    serial = aecodec.compress_files(photos, tmp_path / "one", model=tiny_path, quality=4)
    parallel = aecodec.compress_files(photos, tmp_path / "two", model=tiny_path, quality=4, workers=2)
    assert (serial.done, parallel.done) == (5, 5) and serial.bytes_out == parallel.bytes_out
    for p in photos:
        assert (tmp_path / "one" / f"{p.stem}.aec").read_bytes() == (tmp_path / "two" / f"{p.stem}.aec").read_bytes()


def test_iter_compress_matches_compress_and_is_lazy(tmp_path, tiny):
    images = [smooth_image(*size, seed=i) for i, size in enumerate([(40, 24), (40, 24), (30, 30), (40, 24), (17, 9)])]
    expected = [tiny.compress(img, 3) for img in images]
    pulled = []

    def source():
        for i, img in enumerate(images):
            pulled.append(i)
            yield img

    it = aecodec.iter_compress(source(), quality=3, model=tiny, batch_size=2)
    key, data = next(it)
    assert (key, data) == (0, expected[0]) and len(pulled) == 2  # read one window ahead, no more
    assert list(it) == list(enumerate(expected))[1:]

    path = tmp_path / "x.png"
    images[2].save(path)
    got = list(aecodec.iter_compress([str(path), ("cat", images[4])], quality=3, model=tiny))
    assert got == [(str(path), expected[2]), ("cat", expected[4])]
    with pytest.raises(aecodec.UsageError):  # checked at the call, not at the first next()
        aecodec.iter_compress(images, quality=9, model=tiny)


HARNESS = """
import os, signal, sys, time

if __name__ == "__mp_main__" and os.environ.get("SLOW_START"):  # a worker, as it starts
    try:  # the first worker to start takes long to get ready (a loaded machine)
        fd = os.open(os.environ["SLOW_START"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        pass
    else:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        time.sleep(120)

from aecodec.codec import Codec

# as started from a terminal: a shell that runs the tests in the background (`pytest &` in a
# script) starts them with Ctrl-C ignored, and Python, rightly, keeps it ignored
signal.signal(signal.SIGINT, signal.default_int_handler)

_compress = Codec.compress
def slow(self, *args, **kwargs):  # each file takes a while, so a signal lands mid-batch
    time.sleep(0.15)
    return _compress(self, *args, **kwargs)
Codec.compress = slow

if __name__ == "__main__":
    from aecodec.cli import main
    sys.exit(main(sys.argv[1:]))
"""


def live_in_group(pgid: int) -> list[int]:
    """Processes (not zombies) in a process group, from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def start_slow_batch(tmp_path: Path, tiny_path: Path, workers: int,
                     **env: str) -> tuple[subprocess.Popen, list[Path], Path]:
    """``aecodec encode`` of 10 images, 0.15 s each, as its own process group, with ``env``
    added to its environment; returns once the first output exists."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    inputs = []
    for i in range(10):
        inputs.append(src / f"im{i}.png")
        smooth_image(32, 24, seed=i).save(inputs[-1])
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **env)
    proc = subprocess.Popen([sys.executable, str(harness), "encode", *map(str, inputs), "-o", str(out),
                             "--model", str(tiny_path), "--workers", str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (out.is_dir() and list(out.glob("*.aec"))):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)
    return proc, inputs, out


@pytest.mark.parametrize("how, workers", [
    ("SIGINT", 1), ("SIGTERM", 1), ("SIGKILL", 1),
    pytest.param("SIGINT-group", 2, marks=pytest.mark.slow),
    pytest.param("SIGTERM-group", 2, marks=pytest.mark.slow),  # as systemd stops a service
    pytest.param("SIGKILL", 2, marks=pytest.mark.slow),
])
def test_interrupted_batch_leaves_only_whole_files_and_resumes(capsys, tmp_path, tiny, tiny_path, how, workers):
    proc, inputs, out = start_slow_batch(tmp_path, tiny_path, workers)
    src = inputs[0].parent
    if how.endswith("-group"):  # Ctrl-C in a terminal signals the whole process group, workers too
        os.killpg(proc.pid, getattr(signal, how[:-6]))
    else:
        proc.send_signal(getattr(signal, how))
    _, err = proc.communicate(timeout=60)  # returns once workers, holding stderr too, are gone
    err = err.decode()
    assert proc.returncode == (-9 if how == "SIGKILL" else 130), err
    if Path("/proc/self/stat").exists():  # workers of a killed parent finish their file and exit
        deadline = time.monotonic() + 30
        while live_in_group(proc.pid):
            assert time.monotonic() < deadline, live_in_group(proc.pid)
            time.sleep(0.05)
    assert "Traceback" not in err
    if how != "SIGKILL":
        assert "interrupted" in err and no_parts(out)

    finished = {p: p.stat().st_mtime_ns for p in out.glob("*.aec")}
    assert 0 < len(finished) < 10
    for p in finished:  # every file present is whole
        assert p.read_bytes() == tiny.compress(Image.open(src / f"{p.stem}.png"))

    code, text, _ = run(capsys, "encode", *inputs, "-o", out, "--model", tiny_path)
    assert code == 0 and f"{10 - len(finished)} done, {len(finished)} skipped, 0 failed" in text
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())
    assert sorted(p.name for p in out.iterdir()) == [f"im{i}.aec" for i in range(10)]  # and no .part


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker in /proc")
def test_a_killed_worker_costs_no_file(tmp_path, tiny, tiny_path):
    proc, inputs, out = start_slow_batch(tmp_path, tiny_path, workers=2)
    workers = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/stat")
               if p.read_text().rpartition(")")[2].split()[1] == str(proc.pid)
               and b"spawn_main" in (p.parent / "cmdline").read_bytes()]
    os.kill(workers[0], signal.SIGKILL)  # as the out-of-memory killer would
    text, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert "0 failed" in text.decode()  # its files were redone on a fresh pool
    for p in inputs:
        assert (out / f"{p.stem}.aec").read_bytes() == tiny.compress(Image.open(p))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker in /proc")
def test_a_worker_killed_while_another_starts_costs_no_file(tmp_path, tiny, tiny_path):
    """The pool's cleanup after a crash sends SIGTERM to the other workers and waits for them:
    one still starting must end on it (CI hung here once, on a loaded machine)."""
    marker = tmp_path / "slow-worker"
    proc, inputs, out = start_slow_batch(tmp_path, tiny_path, workers=2, SLOW_START=str(marker))
    slow = int(marker.read_text())
    busy = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/stat")
            if p.read_text().rpartition(")")[2].split()[1] == str(proc.pid)
            and b"spawn_main" in (p.parent / "cmdline").read_bytes() and int(p.parent.name) != slow]
    os.kill(busy[0], signal.SIGKILL)
    try:
        text, err = proc.communicate(timeout=60)  # the slow one would sleep for 120 s
    finally:
        for pid in live_in_group(proc.pid):
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0, err.decode()
    assert "0 failed" in text.decode()
    for p in inputs:
        assert (out / f"{p.stem}.aec").read_bytes() == tiny.compress(Image.open(p))


def test_rerun_removes_temporaries_of_a_killed_run(tmp_path, photos, tiny_path):
    out = tmp_path / "aec"
    out.mkdir()
    (out / ".p2.aec.k3j_x9aa.part").write_bytes(b"half a file")  # what SIGKILL mid-write leaves
    (out / ".unrelated.aec.abcdefgh.part").write_bytes(b"not ours")
    s = aecodec.compress_files(photos, out, model=tiny_path)
    assert (s.done, s.stale_removed) == (5, 1)
    assert sorted(p.name for p in out.glob(".*")) == [".unrelated.aec.abcdefgh.part"]


def test_write_atomic_cleans_up_on_keyboard_interrupt(tmp_path, monkeypatch):
    from aecodec import imageio

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(imageio.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        imageio.write_atomic(tmp_path / "x.aec", b"data")
    assert list(tmp_path.iterdir()) == []


def test_decoded_pixels_match_single_file_decode(tmp_path, photos, tiny, tiny_path):
    aecodec.compress_files(photos, tmp_path / "aec", model=tiny_path)
    s = aecodec.decompress_files(sorted((tmp_path / "aec").glob("*.aec")), tmp_path / "png", model=tiny, stages=1)
    assert s.done == 5
    for p in photos:
        data = (tmp_path / "aec" / f"{p.stem}.aec").read_bytes()
        expected = np.array(tiny.decompress(data, stages=1))
        assert np.array_equal(np.array(Image.open(tmp_path / "png" / f"{p.stem}.png")), expected)


def test_conversion_notes_name_the_file_and_subfolders_are_mirrored(capsys, tmp_path, tiny_path):
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    smooth_image(24, 16, seed=1).save(src / "top.png")
    smooth_image(24, 16, seed=2).convert("P").save(src / "a" / "b" / "pal.png")
    code, out, err = run(capsys, "encode", src / "a" / "b" / "pal.png", "-o", tmp_path / "o", "--model", tiny_path)
    assert code == 0 and f"aecodec: note: {src / 'a' / 'b' / 'pal.png'}: P image converted to RGB" in err

    with pytest.warns(UserWarning, match="pal.png: P image converted"):
        s = aecodec.compress_folder(src, tmp_path / "aec", model=tiny_path, pattern="**/*.png")
    assert s.done == 2 and (tmp_path / "aec" / "a" / "b" / "pal.aec").exists()
    d = aecodec.decompress_folder(tmp_path / "aec", tmp_path / "png", pattern="**/*.aec", model=tiny_path)
    assert d.done == 2 and Image.open(tmp_path / "png" / "a" / "b" / "pal.png").size == (24, 16)
