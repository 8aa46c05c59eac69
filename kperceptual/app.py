"""A local web demo: ``python -m kperceptual.app`` serves a page at http://127.0.0.1:8000/.

    python -m kperceptual.app                      # http://127.0.0.1:8000/
    python -m kperceptual.app --port=0             # a free port, printed
    python -m kperceptual.app --models_dir=my_models --host=0.0.0.0

The page lists the models a name loads (``models.available_models``: yours in ``--models_dir``,
then the shipped ones), and runs one on a photo (a file, or a frame from the webcam) or a video:

* style networks: a style or a mix of styles for a multi-style network (``zoo``), strength and
  colour preservation, the input's long side (``max_size``);
* super-resolution networks: the output beside the bicubic upscaling of the input, compared
  with a slider;
* videos: ``video.stylize_video`` in a background job whose progress the page polls;
* every result can be downloaded (PNG, or MP4 for videos).

Why no Gradio (the usual choice for ML demos): it is a large dependency tree (a web framework,
an ASGI server, a front-end bundle) for one page, and parts of it fetch from the internet at run
time. This is the standard library's ``http.server`` (``ThreadingHTTPServer``) and one static
page of plain HTML and JavaScript (``app_static/index.html``, ``fetch()``), so it runs offline
with nothing to install beyond kperceptual.

HTTP API (what the page calls; usable with curl):

* ``GET /api/models``: ``{"models": [{name, version, source, task, styles, scale, ...}],
  "limits": {"max_bytes", "max_pixels"}}``.
* ``POST /api/stylize?model=NAME[&style=S][&strength=F][&preserve_color=1][&max_size=N]
  [&name=FILE][&format=png]``, the encoded image as the body: JSON ``{model, version, path,
  style, task, input_size, output_size, seconds, filename, image}`` (``image``: a PNG data URL;
  super-resolution adds ``bicubic``), or with ``format=png`` the PNG itself
  (``curl --data-binary @photo.jpg "127.0.0.1:8000/api/stylize?model=starry_night&format=png"
  > out.png``).
* ``POST /api/video?...`` (the same options), the video as the body: ``{"job": ID}``;
  ``GET /api/jobs/ID``: ``{state: running|done|failed, done, total, error, url, filename}``;
  ``GET /api/jobs/ID/video``: the MP4.

Limits: an upload is at most ``images.MAX_FILE_BYTES`` bytes (what every command reads as an
image), and an image or video frame at most ``--max_pixels`` pixels, by default the SavedModel
serving limit ``serving.layout.DEFAULT_MAX_PIXELS`` (2048 x 2048), checked from the header
before anything is decoded. A bad upload (not an image, damaged, too large) or option gets one
line as ``{"error": ...}`` with a 4xx status; the page shows that line.

Each model is loaded once (by its version folder) and kept; a style or mix of a multi-style
network is bound once and kept (the last ``STYLE_CACHE`` of them). Network runs take one lock,
so a video job and image requests take turns batch by batch.

Trust: only the names ``/api/models`` lists can be loaded (never a path from a request). There
is no authentication: ``--host=0.0.0.0`` lets anyone who reaches the port use this machine's
CPU (and browsers allow the webcam only on ``localhost`` or over HTTPS).
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kperceptual import cli  # noqa: F401  (quietens TensorFlow before it is imported)

import numpy as np
from absl import app, flags
from PIL import Image

from kperceptual.imaging import images
from kperceptual.inference import loading as models
from kperceptual.inference import stylizer as inference
from kperceptual.inference import video
from kperceptual.serving.layout import DEFAULT_MAX_PIXELS
from kperceptual.serving.layout import user_models_dir

PROGRAM = "kperceptual.app"
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app_static")
STYLE_CACHE = 8  # bound styles and mixes kept (each a copy of the network's weights)
FINISHED_JOBS = 8  # finished video jobs kept (their files included) before the oldest goes
VIDEO_BATCH = 4  # frames per network call
CHUNK = 1 << 20
# A refused upload's body is read and dropped up to this size, so the client (which may still be
# sending it) reads the answer and the connection stays usable; a larger one closes it.
DRAIN_BYTES = 4 << 20


class RequestError(ValueError):
    """A request the app refuses: ``status`` and one line for the page."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class Options:
    """A request's options (query parameters)."""

    model: str
    style: str | None = None
    strength: float = 1.0
    preserve_color: bool = False
    max_size: int = 0
    name: str = "upload"


def _first(query: dict, key: str, default=None):
    values = query.get(key)
    return values[0] if values else default


def _safe_name(name: str) -> str:
    """A file name from the client, reduced to a harmless ASCII base name for messages and
    downloads (HTTP headers carry Latin-1 only)."""
    name = os.path.basename(name.replace("\\", "/"))
    name = re.sub(r"[^A-Za-z0-9_.\- ]", "_", name)[:100].strip()
    return name or "upload"


def parse_options(query: dict) -> Options:
    """``Options`` from a parsed query string; RequestError (400) naming a bad one."""
    model = _first(query, "model", "")
    if not model:
        raise RequestError(HTTPStatus.BAD_REQUEST, "model: required (one of /api/models)")
    options = Options(model=model, style=_first(query, "style") or None,
                      name=_safe_name(_first(query, "name", "upload")))
    for key, kind in (("strength", float), ("max_size", int)):
        text = _first(query, key)
        if text is not None:
            try:
                setattr(options, key, kind(text))
            except ValueError:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"{key}: expected "
                                   f"{'a number' if kind is float else 'an integer'}, got "
                                   f"{text[:40]!r}") from None
    options.preserve_color = _first(query, "preserve_color", "0").lower() in ("1", "true", "on",
                                                                               "yes")
    try:
        inference.check_options(max_size=options.max_size, strength=options.strength)
    except inference.OptionError as e:
        raise RequestError(HTTPStatus.BAD_REQUEST, str(e)) from None
    return options


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclasses.dataclass
class VideoJob:
    id: str
    folder: str
    filename: str
    model: dict
    total: int
    done: int = 0
    state: str = "running"  # running, done or failed
    error: str = ""
    seconds: float = 0.0

    @property
    def result(self) -> str:
        return os.path.join(self.folder, "output.mp4")

    def as_json(self) -> dict:
        return {"job": self.id, "state": self.state, "done": self.done, "total": self.total,
                "error": self.error, "seconds": round(self.seconds, 2),
                "model": self.model["name"], "version": self.model["version"],
                "filename": self.filename,
                "url": f"/api/jobs/{self.id}/video" if self.state == "done" else ""}


class Demo:
    """The app's state: models by version folder, bound styles, video jobs; the HTTP handler
    calls its methods, and so can tests."""

    def __init__(self, models_dir: str | None = None, max_bytes: int | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, log=None):
        self.models_dir = models_dir
        self.max_bytes = images.MAX_FILE_BYTES if max_bytes is None else int(max_bytes)
        self.max_pixels = int(max_pixels)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.compute = threading.Lock()  # one network run at a time
        self._loading = threading.Lock()
        self._loaded: dict[str, models.LoadedModel] = {}
        self._styles: collections.OrderedDict = collections.OrderedDict()
        self._jobs: collections.OrderedDict[str, VideoJob] = collections.OrderedDict()
        self._jobs_lock = threading.Lock()
        self.work_dir = tempfile.mkdtemp(prefix="kperceptual-app-")

    def close(self):
        shutil.rmtree(self.work_dir, ignore_errors=True)

    # -- models --------------------------------------------------------------------------

    def models(self) -> list[dict]:
        """What a name loads: ``models.available_models`` less shadowed entries."""
        return [m for m in models.available_models(self.models_dir) if not m["shadowed"]]

    def limits(self) -> dict:
        return {"max_bytes": self.max_bytes, "max_pixels": self.max_pixels}

    def entry(self, name: str) -> dict:
        listed = self.models()
        found = next((m for m in listed if m["name"] == name), None)
        if found is None:
            raise RequestError(HTTPStatus.NOT_FOUND, f"model: no model named {name[:60]!r}; "
                               f"choose one of {', '.join(m['name'] for m in listed) or 'none'}")
        return found

    def _model(self, entry: dict) -> models.LoadedModel:
        """The model of ``entry``, loaded once (by its version folder, so a newer version
        exported meanwhile is loaded anew)."""
        path = entry["path"]
        with self._loading:
            if path not in self._loaded:
                start = time.perf_counter()
                self._loaded[path] = models.load_model(path)
                self.log(f"{PROGRAM}: loaded {entry['name']} v{entry['version']} ({path}) in "
                         f"{time.perf_counter() - start:.1f} s")
            return self._loaded[path]

    def _styled(self, entry: dict, style: str | None) -> inference.Stylizer:
        """A Stylizer of ``entry`` bound to ``style`` (None for one-style networks), made once
        and kept (``STYLE_CACHE``); it computes in the precision ``auto`` picks."""
        key = (entry["path"], style or "")
        with self._loading:
            if key in self._styles:
                self._styles.move_to_end(key)
                return self._styles[key]
        model = self._model(entry)
        try:
            styled = inference.Stylizer(model, style=style, precision="auto")
        except inference.OptionError as e:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(e)) from None
        with self._loading:
            self._styles[key] = styled
            while len(self._styles) > STYLE_CACHE:
                self._styles.popitem(last=False)
        return styled

    def stylizer(self, entry: dict, options: Options) -> inference.Stylizer:
        """A Stylizer with the request's options over the kept network of its model and style
        (whose precision it already computes in: float32 here means "as it is")."""
        styled = self._styled(entry, options.style)
        try:
            return inference.Stylizer(
                styled.model, max_size=options.max_size, strength=options.strength,
                preserve_color=options.preserve_color, histogram_match=styled.histogram_match,
                precision="float32")
        except inference.OptionError as e:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(e)) from None

    # -- images --------------------------------------------------------------------------

    def check_pixels(self, width: int, height: int, name: str, what: str = "image"):
        if width * height > self.max_pixels:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"{name}: {what} of {width} x {height} = {width * height} "
                               f"pixels, over the limit of {self.max_pixels}; make it smaller")

    def decode(self, data: bytes, name: str) -> np.ndarray:
        """The upload as uint8 RGB or RGBA; its pixels are checked from the header first."""
        try:
            with Image.open(io.BytesIO(data)) as header:
                size = header.size
        except Image.DecompressionBombError as e:  # declares far more than any limit here
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"{name}: {e}; the limit here is {self.max_pixels} pixels") from None
        except Exception:  # noqa: BLE001  (decoding below says what is wrong, in one line)
            size = None
        if size is not None:
            self.check_pixels(*size, name)
        try:
            rgb, alpha = images.decode_image_and_alpha(data, name)
        except images.ImageError as e:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(e)) from None
        self.check_pixels(rgb.shape[1], rgb.shape[0], name)  # formats Pillow opens lazily
        return rgb if alpha is None else np.dstack([rgb, alpha])

    def stylize(self, data: bytes, options: Options) -> tuple[dict, bytes]:
        """Runs the request's model on the encoded image ``data``: (JSON result, PNG)."""
        entry = self.entry(options.model)
        image = self.decode(data, options.name)
        start = time.perf_counter()
        with self.compute:
            stylizer = self.stylizer(entry, options)
            try:
                output = stylizer.image(image)
            except (inference.MemoryBudgetError, inference.InputError) as e:
                raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY,
                                   f"{options.name}: {e}") from None
        seconds = time.perf_counter() - start
        png = encode_png(output)
        height, width = output.shape[:2]
        label = stylizer.model.name
        result = {"model": entry["name"], "version": entry["version"], "path": entry["path"],
                  "task": entry["task"], "style": options.style or "",
                  "input_size": [image.shape[1], image.shape[0]], "output_size": [width, height],
                  "seconds": round(seconds, 3),
                  "filename": f"{os.path.splitext(options.name)[0]}_{label}.png",
                  "image": _data_url(png)}
        if entry["task"] == "super_resolution":
            seen = image[..., :3]  # the input as the network saw it (max_size), upscaled
            if options.max_size and max(seen.shape[:2]) > options.max_size:
                seen = images.resize_long_side(seen, options.max_size)
            result["bicubic"] = _data_url(encode_png(images.resize(seen, height, width)))
        self.log(f"{PROGRAM}: {entry['name']} v{entry['version']}"
                 f"{' style ' + options.style if options.style else ''}: {options.name} "
                 f"{image.shape[1]}x{image.shape[0]} -> {width}x{height} in {seconds:.2f} s")
        return result, png

    # -- videos --------------------------------------------------------------------------

    def _probe_video(self, path: str, name: str) -> int:
        """The frame count a video declares (at least 1); RequestError for a file that is not
        a readable video or whose frames are over the pixel limit."""
        import imageio.v2 as imageio

        try:
            reader = imageio.get_reader(path, format="FFMPEG")
            try:
                meta = reader.get_meta_data()
            finally:
                reader.close()
            width, height = (int(v) for v in meta["size"])
            fps, duration = float(meta.get("fps") or 0), float(meta.get("duration") or 0)
        except Exception as e:  # imageio and ffmpeg raise many kinds  # noqa: BLE001
            lines = str(e).strip().splitlines() or [type(e).__name__]
            raise RequestError(HTTPStatus.BAD_REQUEST,
                               f"{name}: not a readable video ({lines[0][:200]})") from None
        self.check_pixels(width, height, name, "frames")
        return max(1, round(fps * duration))

    def start_video(self, upload: str, options: Options) -> VideoJob:
        """Starts stylising the video file ``upload`` (in a job folder of ours, moved there by
        the caller) in a background thread; returns its job."""
        folder = os.path.dirname(upload)
        try:
            entry = self.entry(options.model)
            total = self._probe_video(upload, options.name)
            stylizer = self.stylizer(entry, options)  # bad options fail the request, not a job
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        job = VideoJob(os.path.basename(folder), folder,
                       f"{os.path.splitext(options.name)[0]}_{stylizer.model.name}.mp4",
                       entry, total)
        with self._jobs_lock:
            self._jobs[job.id] = job
        threading.Thread(target=self._run_video, args=(job, stylizer, upload, options),
                         name=f"video-{job.id}", daemon=True).start()
        return job

    def _run_video(self, job: VideoJob, stylizer: inference.Stylizer, upload: str,
                   options: Options):
        frames = stylizer.frames

        def counted(batch):  # video.stylize_video calls this for every batch of frames
            with self.compute:
                out = frames(batch)
            job.done += len(out)
            job.total = max(job.total, job.done)  # the declared count was an estimate
            return out

        stylizer.frames = counted  # this request's own Stylizer: nothing shared is changed
        start = time.perf_counter()
        try:
            video.stylize_video(stylizer, upload, job.result, batch_size=VIDEO_BATCH)
            job.total = job.done
            job.state = "done"
        except (images.ImageError, inference.MemoryBudgetError, inference.InputError) as e:
            job.error, job.state = str(e).replace(upload, options.name), "failed"
        except Exception as e:  # noqa: BLE001  (the page gets one line; the log the rest)
            traceback.print_exc()
            job.error, job.state = f"{options.name}: failed ({type(e).__name__}: {e})", "failed"
        finally:
            job.seconds = time.perf_counter() - start
            if os.path.exists(upload):
                os.remove(upload)
        self.log(f"{PROGRAM}: {job.model['name']} v{job.model['version']}: video "
                 f"{options.name}: {job.state} ({job.done} frames in {job.seconds:.1f} s)"
                 f"{': ' + job.error if job.error else ''}")
        self._forget_old_jobs()

    def _forget_old_jobs(self):
        with self._jobs_lock:
            finished = [j for j in self._jobs.values() if j.state != "running"]
            for old in finished[:max(0, len(finished) - FINISHED_JOBS)]:
                del self._jobs[old.id]
                shutil.rmtree(old.folder, ignore_errors=True)

    def new_job_folder(self) -> str:
        folder = os.path.join(self.work_dir, secrets.token_hex(8))
        os.makedirs(folder)
        return folder

    def job(self, job_id: str) -> VideoJob:
        with self._jobs_lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no video job {job_id[:40]!r} (finished "
                               "jobs are kept for a while only)")
        return job


class Handler(BaseHTTPRequestHandler):
    """Routes requests to ``self.server.demo``; every failure is one JSON line."""

    server_version = "kperceptual"
    protocol_version = "HTTP/1.1"

    @property
    def demo(self) -> Demo:
        return self.server.demo

    # -- responses -----------------------------------------------------------------------

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value, status: HTTPStatus = HTTPStatus.OK):
        self._send(status, json.dumps(value).encode("utf-8"), "application/json")

    def _error(self, status: HTTPStatus, message: str):
        self._json({"error": message}, status)

    def log_request(self, code="-", size="-"):
        # Successful GETs (the page, its polls) are not logged; the Demo logs what it runs.
        if not (self.command == "GET" and str(code).startswith("2")):
            super().log_request(code, size)

    # -- request bodies ------------------------------------------------------------------

    def _body_length(self) -> int:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise RequestError(HTTPStatus.LENGTH_REQUIRED,
                               "send the upload with a Content-Length (not chunked)")
        text = self.headers.get("Content-Length")
        try:
            length = int(text)
        except (TypeError, ValueError):
            self.close_connection = True
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the upload with a "
                               "Content-Length") from None
        if length < 0 or length > self.demo.max_bytes:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"{length} bytes, over the upload limit of "
                               f"{self.demo.max_bytes} bytes")
        if length == 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, "empty upload (0 bytes)")
        return length

    def _read_body(self, length: int, sink=None) -> bytes:
        """The body (or, with ``sink``, written to it chunk by chunk); a client that sends
        less than it declared is refused."""
        parts, got = [], 0
        while got < length:
            chunk = self.rfile.read(min(CHUNK, length - got))
            if not chunk:
                self.close_connection = True
                raise RequestError(HTTPStatus.BAD_REQUEST, f"upload cut short: {got} of "
                                   f"{length} bytes arrived")
            got += len(chunk)
            self._unread -= len(chunk)
            if sink is None:
                parts.append(chunk)
            else:
                sink.write(chunk)
        return b"".join(parts)

    # -- routes --------------------------------------------------------------------------

    def _route(self, method: str):
        url = urllib.parse.urlsplit(self.path)
        path, query = url.path, urllib.parse.parse_qs(url.query, keep_blank_values=True)
        if method == "GET":
            if path in ("/", "/index.html"):
                return self._static("index.html")
            if path == "/api/models":
                return self._json({"models": self.demo.models(), "limits": self.demo.limits()})
            match = re.fullmatch(r"/api/jobs/(\w+)(/video)?", path)
            if match:
                job = self.demo.job(match[1])
                if not match[2]:
                    return self._json(job.as_json())
                if job.state != "done":
                    raise RequestError(HTTPStatus.CONFLICT, f"video job {job.id}: {job.state}")
                with open(job.result, "rb") as f:
                    data = f.read()
                return self._send(HTTPStatus.OK, data, "video/mp4", {
                    "Content-Disposition": f'attachment; filename="{job.filename}"'})
        elif path == "/api/stylize":
            options = parse_options(query)
            data = self._read_body(self._body_length())
            result, png = self.demo.stylize(data, options)
            if _first(query, "format") == "png":
                return self._send(HTTPStatus.OK, png, "image/png", {
                    "X-Kperceptual-Model": f"{result['model']} v{result['version']}"})
            return self._json(result)
        elif path == "/api/video":
            options = parse_options(query)
            length = self._body_length()
            extension = os.path.splitext(options.name)[1].lower()
            folder = self.demo.new_job_folder()
            upload = os.path.join(folder, "input" + (extension if video.is_video(options.name)
                                                     else ".mp4"))
            try:
                with open(upload, "wb") as f:
                    self._read_body(length, f)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            job = self.demo.start_video(upload, options)
            return self._json(job.as_json(), HTTPStatus.ACCEPTED)
        raise RequestError(HTTPStatus.NOT_FOUND, f"{method} {path[:80]}: no such page")

    def _static(self, name: str):
        with open(os.path.join(STATIC_DIR, name), "rb") as f:
            self._send(HTTPStatus.OK, f.read(), "text/html; charset=utf-8")

    def _drop_unread_body(self):
        """Before answering a refused POST: reads what is left of a small body, or marks the
        connection to close (what is unread would be taken for the next request)."""
        if self._unread <= 0 or self.close_connection:
            return
        if self._unread > DRAIN_BYTES:
            self.close_connection = True
            return
        try:
            while self._unread > 0:
                chunk = self.rfile.read(min(CHUNK, self._unread))
                if not chunk:
                    break
                self._unread -= len(chunk)
        except OSError:
            pass
        if self._unread > 0:
            self.close_connection = True

    def _handle(self, method: str):
        self._unread = 0
        if method == "POST":
            try:
                self._unread = max(0, int(self.headers.get("Content-Length") or 0))
            except ValueError:
                self._unread = 0
        try:
            self._route(method)
        except RequestError as e:
            self._drop_unread_body()
            self._error(e.status, str(e))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # noqa: BLE001  (the page gets one line; the log the rest)
            traceback.print_exc()
            self._drop_unread_body()
            lines = str(e).strip().splitlines() or [""]
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR,
                        f"internal error: {type(e).__name__}: {lines[0][:200]}")

    def do_GET(self):  # noqa: N802  (http.server's names)
        self._handle("GET")

    def do_HEAD(self):  # noqa: N802
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, demo: Demo):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.demo = demo
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def server_close(self):
        super().server_close()
        self.demo.close()


def make_server(host: str = "127.0.0.1", port: int = 0, demo: Demo | None = None,
                **demo_options) -> DemoServer:
    """A bound server (``port`` 0: a free one; see ``.url``); call ``serve_forever``."""
    return DemoServer((host, port), demo or Demo(**demo_options))


flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface; "
                                         "there is no authentication).")
flags.DEFINE_integer("port", 8000, "Port to listen on; 0: a free one (printed).", lower_bound=0,
                     upper_bound=65535)
flags.DEFINE_string("models_dir", user_models_dir(), "Your models (TF Serving's layout); the "
                                                 "shipped ones are listed after them.")
flags.DEFINE_integer("max_pixels", DEFAULT_MAX_PIXELS, "Largest image or video frame taken, "
                     "in pixels (the SavedModel serving limit by default).", lower_bound=1)
FLAGS = flags.FLAGS


def _quiet_retracing():
    """TensorFlow's warnings that a network was traced again: expected here (every new image
    size is one, until Keras's relaxed shapes take over), so kept out of the log unless
    ``--verbosity`` > 0."""
    import logging

    if FLAGS.verbosity <= 0 and "tensorflow" in sys.modules:
        sys.modules["tensorflow"].get_logger().setLevel(logging.ERROR)


def main(argv):
    if len(argv) > 1:
        cli.fail(PROGRAM, f"unexpected argument {argv[1]!r} (this command takes flags only)")
    _quiet_retracing()
    try:
        server = make_server(FLAGS.host, FLAGS.port, models_dir=FLAGS.models_dir,
                             max_pixels=FLAGS.max_pixels)
    except OSError as e:
        cli.fail(PROGRAM, f"--port: cannot listen on {FLAGS.host}:{FLAGS.port} "
                          f"({e.strerror or e}); choose another, or --port=0 for a free one")
    # A plain kill (SIGTERM) stops it as Ctrl-C does: the temporary files go with it.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    listed = server.demo.models()
    print(f"models: {', '.join(m['name'] for m in listed) or f'none in {FLAGS.models_dir}/'}")
    print(f"{PROGRAM}: serving on {server.url} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        print(f"{PROGRAM}: stopped", file=sys.stderr)
    finally:
        server.server_close()


if __name__ == "__main__":
    app.run(main, flags_parser=cli.flags_parser(PROGRAM))
