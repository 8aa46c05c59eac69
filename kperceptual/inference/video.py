"""Stylise videos frame by frame (imageio with its ffmpeg plugin; imageio-ffmpeg brings ffmpeg).

    from kperceptual.inference import video
    video.stylize_video("starry_night", "clip.mov", "clip_starry_night.mp4", batch_size=8)

Frames are read and stylised in batches of ``batch_size`` (one network call per batch where it
fits the memory budget) and written as H.264 MP4 at the source's frame rate. The source's first
audio track is kept (re-encoded as AAC by imageio-ffmpeg's ffmpeg, as MP4 players expect); a
track ffmpeg cannot carry over leaves the video silent, with a warning. Odd output sides are
padded by one replicated pixel (H.264's 4:2:0 needs even
sides). The output is written to a temporary file and renamed (``kperceptual.imaging.files``), so a
failed run leaves nothing.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np

from kperceptual.imaging import files
from kperceptual.imaging import images
from kperceptual.inference.stylizer import Stylizer
from kperceptual.inference.tiling import pad_to_multiple

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv", ".avi")


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


def _batches(reader, batch_size: int):
    batch = []
    for frame in reader:
        batch.append(np.asarray(frame)[..., :3])
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def stylize_video(model, source: str, target: str, *, batch_size: int = 4,
                  overwrite: bool = False, **options) -> VideoResult:
    """Stylises the video ``source`` into the MP4 ``target``; ``model`` is a Stylizer or what
    ``Stylizer`` takes, with its ``options`` (max_size, preserve_color, strength, ...). Raises
    VideoError naming the file."""
    import imageio.v2 as imageio

    stylizer = model if isinstance(model, Stylizer) else Stylizer(model, **options)
    if os.path.exists(target) and not overwrite:
        raise VideoError(f"{target}: already exists (pass overwrite to replace it)")
    # ffmpeg would block on a FIFO and read a device for ever; videos may be large
    images.check_regular_file(source, 1 << 40, VideoError)
    reader = None
    try:
        reader = imageio.get_reader(source, format="FFMPEG")
        fps = float(reader.get_meta_data()["fps"])
    except Exception as e:  # imageio and ffmpeg raise many kinds  # noqa: BLE001
        if reader is not None:
            reader.close()
        raise VideoError(f"{source}: not a readable video ({_first_line(e)})") from e
    writer, count, size = None, 0, (0, 0)
    try:
        with files.atomic_path(target) as tmp:
            try:
                for batch in _batches(reader, batch_size):
                    for frame in stylizer.frames(batch):
                        if writer is None:
                            writer = imageio.get_writer(
                                tmp, format="FFMPEG", fps=fps, codec="libx264", quality=8,
                                macro_block_size=2, ffmpeg_log_level="error")
                            size = frame.shape[:2]
                        writer.append_data(pad_to_multiple(frame[..., :3], 2, mode="edge"))
                        count += 1
            finally:  # before the temporary file is renamed or removed
                if writer is not None:
                    writer.close()
            if not count:
                raise VideoError(f"{source}: no frames")
            audio = copy_audio(source, tmp)
    except (OSError, RuntimeError, ValueError, IndexError) as e:
        if isinstance(e, images.ImageError):
            raise
        raise VideoError(f"{source}: {_first_line(e)}") from e
    finally:
        reader.close()
    return VideoResult(target, count, fps, tuple(size), audio)
