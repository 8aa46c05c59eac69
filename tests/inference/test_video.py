"""``kperceptual.inference.video``: the reader thread, batched network and writer thread give the frames the
frame-by-frame path gives; the progress bar; sound; a failure in any stage is one line and
leaves no file."""

import io
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from helpers import REPO
from kperceptual.imaging import images
from kperceptual.inference import stylizer as inference
from kperceptual.inference import video


def _clip(path, frames=10, audio=False, size="64x48", rate=10):
    """A generated H.264 clip (ffmpeg's test pattern, moving), with a sine tone if ``audio``."""
    import imageio_ffmpeg

    inputs = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}"]
    if audio:
        inputs += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050"]
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *inputs,
                    "-frames:v", str(frames), *(["-t", str(frames / rate)] if audio else []),
                    "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    *(["-c:a", "aac"] if audio else []), str(path)], check=True)
    return str(path)


def _decode(path):
    import imageio.v2 as imageio

    reader = imageio.get_reader(str(path), format="FFMPEG")
    try:
        return [np.asarray(frame)[..., :3] for frame in reader]
    finally:
        reader.close()


def _streams(path):
    import imageio_ffmpeg

    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                           capture_output=True, text=True)
    return [line.split(":", 2)[-1].split(":")[0].strip()
            for line in probe.stderr.splitlines() if line.strip().startswith("Stream #")]


def _no_video_threads():
    return not any(t.name in ("video-reader", "video-writer") for t in threading.enumerate())


@pytest.fixture
def written_frames(monkeypatch):
    """The frames each run hands its encoder, in order (the real encoder still writes them)."""
    real = video._open_writer
    runs = []

    def spy(path, fps):
        writer = real(path, fps)
        frames = []
        runs.append(frames)
        append = writer.append_data

        def append_data(frame):
            frames.append(np.array(frame))
            append(frame)

        writer.append_data = append_data
        return writer

    monkeypatch.setattr(video, "_open_writer", spy)
    return runs


def test_threaded_batches_give_the_frame_by_frame_frames(tmp_path, tiny_style_model,
                                                         written_frames):
    source = _clip(tmp_path / "clip.mp4", frames=11, size="62x46")  # a last partial batch
    stylizer = inference.Stylizer(tiny_style_model)
    result = video.stylize_video(stylizer, source, str(tmp_path / "out.mp4"), batch_size=4)
    assert (result.frames, result.size, result.fps, result.audio) == (11, (46, 62), 10.0, False)

    # The frame-by-frame path: each decoded frame through Stylizer.image on its own.
    expected = [stylizer.image(frame) for frame in _decode(source)]
    (frames,) = written_frames
    assert len(frames) == len(expected) == 11
    for got, want in zip(frames, expected):
        assert got.shape == (46, 62, 3)  # even sides already
        # Batches of 4 and single frames differ in float rounding only.
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1

    # Encoded with the same settings (the spy records this run too), the file decodes as the
    # frame-by-frame frames do.
    sequential = str(tmp_path / "sequential.mp4")
    writer = video._open_writer(sequential, 10.0)
    for frame in expected:
        writer.append_data(frame)
    writer.close()
    threaded, reference = _decode(tmp_path / "out.mp4"), _decode(sequential)
    assert len(threaded) == len(reference) == 11
    for got, want in zip(threaded, reference):
        assert np.abs(got.astype(float) - want.astype(float)).mean() < 0.5
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4", "out.mp4", "sequential.mp4"]
    assert _no_video_threads()


def test_a_batch_that_exceeds_the_memory_budget_is_split(tmp_path, tiny_style_model,
                                                         written_frames, monkeypatch):
    source = _clip(tmp_path / "clip.mp4", frames=7)
    stylizer = inference.Stylizer(tiny_style_model)
    # The estimate, made exact: 100 bytes a frame, a budget of 250 (two frames fit, not three).
    monkeypatch.setattr(stylizer, "estimate_bytes",
                        lambda height, width, window_pixels=None, count=1: 100 * count)
    stylizer.memory_budget = 250
    assert video.fitting_batch(stylizer, np.zeros((48, 64, 3), np.uint8), 8) == 2
    calls = []
    frames = stylizer.frames
    monkeypatch.setattr(stylizer, "frames", lambda batch: calls.append(len(batch)) or
                        frames(batch))
    result = video.stylize_video(stylizer, source, str(tmp_path / "out.mp4"), batch_size=8)
    assert result.frames == 7 and calls == [2, 2, 2, 1]
    expected = [stylizer.image(frame) for frame in _decode(source)]
    for got, want in zip(written_frames[0], expected):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


class _Terminal(io.StringIO):
    def isatty(self):
        return True


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_bar_on_a_terminal_and_plain_lines_elsewhere():
    clock = _Clock()
    terminal = _Terminal()
    bar = video.Progress("clip.mp4", 48, terminal, clock=clock)
    assert terminal.getvalue() == ("\rclip.mp4 [........................] 0/48 frames, "
                                   "0.00 frames/s\033[K")  # at once
    clock.now += 4.0
    bar.update(12)
    clock.now += 0.05
    bar.update(1)  # too soon to redraw
    assert terminal.getvalue().split("\r")[-1] == (
        "clip.mp4 [######..................] 12/48 frames, 3.00 frames/s, 0:12 left\033[K")
    clock.now += 12.95
    bar.update(34)
    bar.close()  # 47 frames where the container said 48: the bar ends full
    assert terminal.getvalue().endswith("\rclip.mp4 [########################] 47/47 frames, "
                                        "2.76 frames/s, 0:00 left\033[K\n")
    assert terminal.getvalue().count("\n") == 1

    log = io.StringIO()  # not a terminal: a line every interval, none redrawn
    bar = video.Progress("clip.mp4", 48, log, clock=clock)
    for _ in range(48):
        clock.now += 0.5
        bar.update()
    bar.close()
    assert "\r" not in log.getvalue()
    assert log.getvalue().splitlines() == [
        "clip.mp4: 20/48 frames (41%), 2.00 frames/s, 0:14 left",
        "clip.mp4: 40/48 frames (83%), 2.00 frames/s, 0:04 left",
        "clip.mp4: 48 frames in 0:24 (2.00 frames/s)"]

    unknown = io.StringIO()  # no total: frames and rate only
    bar = video.Progress("live.mkv", None, unknown, clock=clock)
    clock.now += 20
    bar.update(30)
    assert unknown.getvalue() == "live.mkv: 30 frames, 1.50 frames/s\n"

    failed = _Terminal()  # a failure: the bar's line is ended, no summary
    bar = video.Progress("clip.mp4", 48, failed, clock=clock)
    clock.now += 1
    bar.update(2)
    bar.close(finished=False)
    assert failed.getvalue().endswith("\033[K\n") and failed.getvalue().count("\n") == 1
    assert "2/48 frames" in failed.getvalue()  # the total stays the container's


def test_frame_total_from_the_container():
    assert video.frame_total({"nframes": float("inf"), "fps": 24.0, "duration": 2.0}) == 48
    assert video.frame_total({"nframes": 30, "fps": 24.0, "duration": 2.0}) == 30
    assert video.frame_total({"nframes": float("inf"), "fps": 24.0}) is None
    assert video.frame_total({"fps": float("nan"), "duration": 2.0}) is None


def test_progress_of_a_video_and_off_by_default(tmp_path, tiny_style_model, capsys):
    source = _clip(tmp_path / "clip.mp4", frames=6)
    log = io.StringIO()
    video.stylize_video(tiny_style_model, source, str(tmp_path / "a.mp4"), progress=log)
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clip.mp4: 6 frames in 0:"), lines
    video.stylize_video(tiny_style_model, source, str(tmp_path / "b.mp4"))
    assert capsys.readouterr().err == ""


class _FailingReader:
    """imageio's reader that fails at frame ``fail_at`` (1-based), as a corrupt stream does."""

    def __init__(self, reader, fail_at):
        self.reader, self.fail_at, self.closed = reader, fail_at, False

    def get_meta_data(self):
        return self.reader.get_meta_data()

    def __iter__(self):
        for i, frame in enumerate(self.reader, 1):
            if i == self.fail_at:
                raise RuntimeError("Could not read frame\nffmpeg said: corrupt macroblock")
            yield frame

    def close(self):
        self.closed = True
        self.reader.close()


def test_a_reader_failure_is_one_line_and_leaves_no_file(tmp_path, tiny_style_model,
                                                         monkeypatch):
    import imageio.v2 as imageio

    source = _clip(tmp_path / "clip.mp4", frames=10)
    real, opened = imageio.get_reader, []

    def failing(*args, **kwargs):
        opened.append(_FailingReader(real(*args, **kwargs), fail_at=7))
        return opened[-1]

    monkeypatch.setattr(imageio, "get_reader", failing)
    out = tmp_path / "out"
    with pytest.raises(video.VideoError) as caught:
        video.stylize_video(tiny_style_model, source, str(out / "clip.mp4"), batch_size=2,
                            progress=io.StringIO())
    assert str(caught.value) == (f"{source}: frame 7 could not be read (Could not read frame)")
    assert os.listdir(out) == []  # no temporary, no output
    assert opened[0].closed and _no_video_threads()


def test_a_writer_failure_is_one_line_and_leaves_no_file(tmp_path, tiny_style_model,
                                                         monkeypatch):
    real = video._open_writer

    def full_disk(path, fps):
        writer = real(path, fps)
        append, count = writer.append_data, [0]

        def append_data(frame):
            count[0] += 1
            if count[0] == 3:
                raise OSError(28, "No space left on device")
            append(frame)

        writer.append_data = append_data
        return writer

    monkeypatch.setattr(video, "_open_writer", full_disk)
    source = _clip(tmp_path / "clip.mp4", frames=40)
    terminal = _Terminal()
    with pytest.raises(video.VideoError) as caught:
        video.stylize_video(tiny_style_model, source, str(tmp_path / "out.mp4"), batch_size=2,
                            progress=terminal)
    assert str(caught.value) == (f"{source}: writing the stylised video failed ([Errno 28] No "
                                 "space left on device)")
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]
    assert _no_video_threads()
    # The bar's line is ended, so the error the command prints starts a line of its own.
    assert terminal.getvalue().startswith("\rclip.mp4 [")
    assert terminal.getvalue().endswith("\n") and terminal.getvalue().count("\n") == 1


@pytest.mark.parametrize("error", [inference.InputError("the model failed"), KeyboardInterrupt])
def test_a_network_failure_or_an_interrupt_leaves_no_file(tmp_path, tiny_style_model,
                                                          monkeypatch, error):
    source = _clip(tmp_path / "clip.mp4", frames=30)
    stylizer = inference.Stylizer(tiny_style_model)
    calls = []

    def frames(batch):
        calls.append(len(batch))
        if len(calls) == 3:
            raise error
        return [stylizer.image(frame) for frame in batch]

    monkeypatch.setattr(stylizer, "frames", frames)
    expected = (video.VideoError, f"{source}: the model failed") \
        if isinstance(error, Exception) else (KeyboardInterrupt, None)
    with pytest.raises(expected[0]) as caught:
        video.stylize_video(stylizer, source, str(tmp_path / "out.mp4"), batch_size=2)
    if expected[1]:
        assert str(caught.value) == expected[1]
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]
    assert _no_video_threads()


def test_an_existing_output_is_kept(tmp_path, tiny_style_model):
    source = _clip(tmp_path / "clip.mp4", frames=3)
    (tmp_path / "out.mp4").write_bytes(b"earlier")
    with pytest.raises(video.VideoError, match="already exists"):
        video.stylize_video(tiny_style_model, source, str(tmp_path / "out.mp4"))
    assert (tmp_path / "out.mp4").read_bytes() == b"earlier"
    video.stylize_video(tiny_style_model, source, str(tmp_path / "out.mp4"), overwrite=True)
    assert len(_decode(tmp_path / "out.mp4")) == 3


@pytest.mark.slow
def test_stylize_command_shows_progress_keeps_sound_and_goes_on(tmp_path, tiny_style_model):
    _clip(tmp_path / "talk.mp4", frames=12, audio=True)
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")

    def run(*flags):
        return subprocess.run([sys.executable, "-m", "kperceptual.stylize",
                               f"--model={tiny_style_model}", "--batch_size=5", *flags,
                               "junk.mp4", "talk.mp4"], cwd=tmp_path, env=env,
                              capture_output=True, text=True)

    result = run("--output=out")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "talk.mp4: 12 frames in 0:" in result.stderr  # stderr is a pipe: plain lines
    assert "\r" not in result.stderr
    assert sum("junk.mp4: not a readable video" in line for line in lines) == 1
    assert lines[-1] == "kperceptual.stylize: 1 of 2 inputs failed"
    assert _streams(tmp_path / "out" / "talk_tiny_style.mp4") == ["Video", "Audio"]
    assert len(_decode(tmp_path / "out" / "talk_tiny_style.mp4")) == 12

    quiet = run("--output=quiet", "--noprogress")
    assert quiet.returncode == 1 and "frames in" not in quiet.stderr
    assert os.listdir(tmp_path / "quiet") == ["talk_tiny_style.mp4"]
