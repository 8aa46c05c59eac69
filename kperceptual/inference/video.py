"""Stylise videos (imageio with its ffmpeg plugin; imageio-ffmpeg brings ffmpeg).

    from kperceptual.inference import video
    video.stylize_video("starry_night", "clip.mov", "clip_starry_night.mp4", batch_size=8,
                        progress=True)

Three stages overlap: a reader thread decodes frames into a bounded queue, the calling thread
runs the network on batches of ``batch_size`` frames (one network call per batch; fewer frames
per call where a batch would exceed the Stylizer's memory budget, and frame by frame, tiled, where
even one frame does not fit whole), and a writer thread encodes the stylised frames from a second
bounded queue as H.264 MP4 at the source's frame rate. The queues hold at most
``QUEUED_BATCHES`` batches each (uint8 frames: under 8 MB per batch of 8 at 640x480). The frames
are the ones ``Stylizer.image`` gives one by one (batching changes float rounding only).

The source's first audio track is kept (re-encoded as AAC by imageio-ffmpeg's ffmpeg, as MP4
players expect); a track ffmpeg cannot carry over leaves the video silent, with a warning. Odd
output sides are padded by one replicated pixel (H.264's 4:2:0 needs even sides). The output is
written to a temporary file and renamed (``kperceptual.imaging.files``), so a failed run (a bad frame,
the network, the encoder, an interrupt) leaves nothing, and it never replaces an existing file
unless ``overwrite``. A failure in either thread stops the others and is raised in the calling
thread as one ``VideoError`` line naming the file.

``progress`` shows frames done out of the total (from the container's duration and frame rate,
where it gives them), frames per second and the time left on stderr: a bar redrawn in place on
a terminal, a plain line every ``Progress.interval`` seconds (and one at the end) elsewhere.
"""

from __future__ import annotations

import dataclasses
import math
import os
import queue
import subprocess
import sys
import threading
import time

import numpy as np

from kperceptual.imaging import files
from kperceptual.imaging import images
from kperceptual.inference.stylizer import Stylizer
from kperceptual.inference.tiling import pad_to_multiple

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv", ".avi")
QUEUED_BATCHES = 2  # batches each queue holds (decoded frames in, stylised frames out)
_POLL_SECONDS = 0.1  # how often a thread waiting on a queue looks whether the run was stopped


class VideoError(images.ImageError):
    """A video could not be read or written; the message names the file."""


@dataclasses.dataclass
class VideoResult:
    path: str
    frames: int
    fps: float
    size: tuple[int, int]  # (height, width) of the output frames
    audio: bool = False  # the source's audio track was carried over


def is_video(path: str) -> bool:
    return path.lower().endswith(VIDEO_EXTENSIONS)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _has_audio(ffmpeg: str, path: str) -> bool:
    probe = subprocess.run([ffmpeg, "-hide_banner", "-i", path], capture_output=True, text=True,
                           timeout=120)
    return any("Audio:" in line for line in probe.stderr.splitlines()
               if line.strip().startswith("Stream #"))


def copy_audio(source: str, video_path: str, warn=None) -> bool:
    """Gives the MP4 ``video_path`` (in place) the first audio track of ``source``, as AAC;
    returns whether it has one now. A source without audio leaves the file as it was; a track
    ffmpeg cannot convert does too, with ``warn`` called with one line."""
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    if not _has_audio(ffmpeg, source):
        return False
    muxed = f"{video_path}.audio.mp4"
    try:
        done = subprocess.run(
            [ffmpeg, "-v", "error", "-y", "-i", video_path, "-i", source, "-map", "0:v:0",
             "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-b:a", "192k",
             "-movflags", "+faststart", muxed], capture_output=True, text=True, timeout=3600)
        if done.returncode != 0 or not _has_audio(ffmpeg, muxed):
            lines = done.stderr.strip().splitlines() or ["no audio in ffmpeg's output"]
            (warn or (lambda m: print(m, file=sys.stderr)))(
                f"{source}: its audio was not carried over ({lines[-1]})")
            return False
        os.replace(muxed, video_path)
        return True
    finally:
        if os.path.exists(muxed):
            os.remove(muxed)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Frames done of ``total`` (None: unknown), frames per second and the time left, on
    ``stream``: a bar drawn at once and redrawn in place (at most every ``redraw`` seconds) where
    ``stream`` is a terminal, else a plain line every ``interval`` seconds; ``close`` ends with
    one line (the total, an estimate from the container, becomes the frames done)."""

    bar_width = 24
    redraw = 0.2
    interval = 10.0

    def __init__(self, label: str, total: int | None, stream=None, clock=time.monotonic):
        self.label, self.total = label, total if total and total > 0 else None
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        try:
            self.tty = bool(isatty and isatty())
        except (OSError, ValueError):  # a closed stream
            self.tty = False
        self.clock = clock
        self.start = self.last = clock()
        self.done = 0
        self.drawn = False
        if self.tty:
            self._draw()

    def _line(self, final: bool = False) -> str:
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = self.done / elapsed
        total = self.total if self.total is None or self.done <= self.total else self.done
        if final:
            return (f"{self.label}: {self.done} frames in {_clock(elapsed)} "
                    f"({rate:.2f} frames/s)")
        if total is None:
            return f"{self.label}: {self.done} frames, {rate:.2f} frames/s"
        left = f", {_clock((total - self.done) / rate)} left" if rate > 0 else ""
        if self.tty:
            filled = self.bar_width * self.done // total
            bar = "#" * filled + "." * (self.bar_width - filled)
            return (f"{self.label} [{bar}] {self.done}/{total} frames, {rate:.2f} frames/s"
                    f"{left}")
        return (f"{self.label}: {self.done}/{total} frames ({100 * self.done // total}%), "
                f"{rate:.2f} frames/s{left}")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream never stops the video
            pass

    def update(self, frames: int = 1) -> None:
        self.done += frames
        now = self.clock()
        if now - self.last < (self.redraw if self.tty else self.interval):
            return
        self.last = now
        if self.tty:
            self._draw()
        else:
            self._write(self._line() + "\n")

    def _draw(self) -> None:
        self._write(f"\r{self._line()}\033[K")
        self.drawn = True

    def close(self, finished: bool = True) -> None:
        """The last line: the final bar and a summary where ``finished``, else (a failure) only
        a newline after a bar, so the error starts a line of its own."""
        if finished:
            self.total = self.done or self.total
        if self.tty:
            if finished:
                self._write(f"\r{self._line()}\033[K\n")
            elif self.drawn:
                self._write("\n")
        elif finished:
            self._write(self._line(final=True) + "\n")


def frame_total(meta: dict) -> int | None:
    """Frames in the video by its container's duration and frame rate; None where unknown."""
    nframes = meta.get("nframes")
    if isinstance(nframes, (int, float)) and math.isfinite(nframes) and nframes > 0:
        return int(nframes)
    duration, fps = meta.get("duration"), meta.get("fps")
    try:
        total = float(duration) * float(fps)
    except (TypeError, ValueError):
        return None
    return int(round(total)) if math.isfinite(total) and total >= 1 else None


def fitting_batch(stylizer: Stylizer, frame: np.ndarray, batch_size: int) -> int:
    """The most frames, up to ``batch_size``, that one network call on frames like ``frame``
    takes within the stylizer's memory budget (1 where none fits: those run tiled)."""
    if stylizer.tile:
        return 1
    rgb, _ = stylizer._prepare(frame)
    height, width = stylizer._padded(rgb).shape[:2]
    for count in range(batch_size, 1, -1):
        if stylizer.estimate_bytes(height, width, count=count) <= stylizer.memory_budget:
            return count
    return 1


class _Stage(threading.Thread):
    """A daemon thread running ``work(stop)``; what it raises is kept in ``error`` and sets
    ``stop``, so that the other stages end too."""

    def __init__(self, name: str, work, stop: threading.Event):
        super().__init__(name=name, daemon=True)
        self.work, self.stop, self.error = work, stop, None

    def run(self):
        try:
            self.work(self.stop)
        except BaseException as e:  # noqa: BLE001  (raised again in the calling thread)
            self.error = e
            self.stop.set()


_END = object()  # the last item of a queue


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Puts ``item``, waiting while ``q`` is full; False (not put) once ``stop`` is set."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            pass
    return False


def _get(q: queue.Queue, stop: threading.Event):
    """The next item of ``q``; ``_END`` once ``stop`` is set."""
    while not stop.is_set():
        try:
            return q.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            pass
    return _END


def _open_writer(path: str, fps: float):
    import imageio.v2 as imageio

    return imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", quality=8,
                              macro_block_size=2, ffmpeg_log_level="error")


_ERRORS = (OSError, RuntimeError, ValueError, IndexError)  # what imageio and ffmpeg raise


def stylize_video(model, source: str, target: str, *, batch_size: int = 4,
                  overwrite: bool = False, progress=False, **options) -> VideoResult:
    """Stylises the video ``source`` into the MP4 ``target``; ``model`` is a Stylizer or what
    ``Stylizer`` takes, with its ``options`` (max_size, preserve_color, strength, ...).
    ``progress``: False, True (a progress bar on stderr) or a stream to show it on. Raises
    VideoError naming the file."""
    import imageio.v2 as imageio

    stylizer = model if isinstance(model, Stylizer) else Stylizer(model, **options)
    if batch_size < 1:
        raise ValueError(f"batch_size: must be at least 1, got {batch_size}")
    if os.path.exists(target) and not overwrite:
        raise VideoError(f"{target}: already exists (pass overwrite to replace it)")
    # ffmpeg would block on a FIFO and read a device for ever; videos may be large
    images.check_regular_file(source, 1 << 40, VideoError)
    reader = None
    try:
        reader = imageio.get_reader(source, format="FFMPEG")
        meta = reader.get_meta_data()
        fps = float(meta["fps"])
    except Exception as e:  # imageio and ffmpeg raise many kinds  # noqa: BLE001
        if reader is not None:
            reader.close()
        raise VideoError(f"{source}: not a readable video ({_first_line(e)})") from e
    bar = None
    if progress:
        bar = Progress(os.path.basename(source), frame_total(meta),
                       None if progress is True else progress)
    stop = threading.Event()
    frames_in = queue.Queue(maxsize=QUEUED_BATCHES * batch_size)
    frames_out = queue.Queue(maxsize=QUEUED_BATCHES)
    written = {"count": 0, "size": (0, 0)}

    def read(stop):
        count = 0
        try:
            for frame in reader:
                if not _put(frames_in, np.asarray(frame)[..., :3], stop):
                    return
                count += 1
        except _ERRORS as e:
            raise VideoError(f"{source}: frame {count + 1} could not be read "
                             f"({_first_line(e)})") from e
        _put(frames_in, _END, stop)

    def write(stop, path):
        writer = None
        try:
            while True:
                batch = _get(frames_out, stop)
                if batch is _END:
                    return
                for frame in batch:
                    if writer is None:
                        writer = _open_writer(path, fps)
                        written["size"] = frame.shape[:2]
                    writer.append_data(pad_to_multiple(frame[..., :3], 2, mode="edge"))
                    written["count"] += 1
                if bar is not None:
                    bar.update(len(batch))
        except _ERRORS as e:
            raise VideoError(f"{source}: writing the stylised video failed "
                             f"({_first_line(e)})") from e
        finally:  # before the temporary file is renamed or removed
            if writer is not None:
                try:
                    writer.close()
                except _ERRORS as e:
                    raise VideoError(f"{source}: writing the stylised video failed "
                                     f"({_first_line(e)})") from e

    def stylize(stop):
        """The network, in this thread: batches from the reader to the writer."""
        size, ended = None, False
        while not ended:
            batch = [_get(frames_in, stop)]
            if batch[0] is _END:
                break
            if size is None:
                size = fitting_batch(stylizer, batch[0], batch_size)
            while len(batch) < size:
                frame = _get(frames_in, stop)
                if frame is _END:
                    ended = True
                    break
                batch.append(frame)
            if not _put(frames_out, stylizer.frames(batch), stop):
                return
        _put(frames_out, _END, stop)

    reading = _Stage("video-reader", read, stop)
    finished = False
    try:
        with files.atomic_path(target, overwrite=overwrite) as tmp:
            writing = _Stage("video-writer", lambda stop: write(stop, tmp), stop)
            reading.start()
            writing.start()
            try:
                stylize(stop)
            except BaseException:
                stop.set()  # the reader and the writer end; the writer closes its file
                raise
            finally:
                writing.join()
                stop.set()  # nothing more is written: the reader need not go on
                reading.join()
            for stage in (reading, writing):
                if stage.error is not None:
                    raise stage.error
            if not written["count"]:
                raise VideoError(f"{source}: no frames")
            audio = copy_audio(source, tmp)
        finished = True
    except _ERRORS as e:
        if isinstance(e, images.ImageError):
            raise
        raise VideoError(f"{source}: {_first_line(e)}") from e
    finally:
        stop.set()
        if reading.is_alive():
            reading.join()
        reader.close()
        if bar is not None:
            bar.close(finished)
    return VideoResult(target, written["count"], fps, tuple(written["size"]), audio)
