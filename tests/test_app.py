"""The web demo, ``python -m kperceptual.app``: its HTTP API in-process (real shipped models,
small real photos, bad uploads), then the page in a real browser (Debian's Chromium, headless,
driven by Playwright) against the command itself.

The browser tests need the ``chromium`` package and Playwright for Python (the ``test`` extra);
they are skipped, saying which is missing, where either is absent. With
``KPERCEPTUAL_APP_SCREENSHOTS=docs/images`` they also write the page's screenshots there
(``app_*.png``, the ones docs/app.md shows)."""

import base64
import http.client
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image

from helpers import REPO
from kperceptual import app as demo_app
from kperceptual.imaging import images
from kperceptual.inference import stylizer as inference
from kperceptual.serving.layout import DEFAULT_MAX_PIXELS


def _encode(image: np.ndarray, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo():
    """The astronaut, 64 x 48 (width x height): small enough for a fast test."""
    return images.resize(images.read_image("skimage:astronaut"), 48, 64)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app in this process on a free port, with the shipped models only."""
    log = []
    demo = demo_app.Demo(models_dir=str(tmp_path_factory.mktemp("no_models_of_yours")),
                         log=log.append)
    srv = demo_app.make_server("127.0.0.1", 0, demo)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.log = log
    yield srv
    srv.shutdown()
    srv.server_close()
    assert not os.path.exists(demo.work_dir)


def _request(srv, method, path, body=None, **params):
    url = srv.url.rstrip("/") + path + ("?" + urllib.parse.urlencode(params) if params else "")
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def post(srv, body, path="/api/stylize", **params):
    status, headers, data = _request(srv, "POST", path, body, **params)
    return status, (json.loads(data) if headers.get("Content-Type") == "application/json"
                    else data)


def png_from_data_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    data = base64.b64decode(url.split(",", 1)[1])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(data)))


def test_the_page_and_the_model_list(server):
    status, headers, page = _request(server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"/api/stylize" in page and b"getUserMedia" in page
    status, _, data = _request(server, "GET", "/api/models")
    listed = json.loads(data)
    by_name = {m["name"]: m for m in listed["models"]}
    assert {"starry_night", "zoo", "sr_x4_feat"} <= set(by_name)
    sr = by_name["sr_x4_feat"]
    assert (sr["task"], sr["scale"]) == ("super_resolution", 4)
    assert len(by_name["zoo"]["styles"]) == 10 and "wave" in by_name["zoo"]["styles"]
    # the project's limits: what every command reads as an image, and the serving limit
    assert listed["limits"] == {"max_bytes": images.MAX_FILE_BYTES,
                                "max_pixels": DEFAULT_MAX_PIXELS}


def test_a_photo_is_stylised_as_the_library_does_it_and_the_model_is_loaded_once(server, photo):
    status, result = post(server, _encode(photo), model="starry_night", name="astronaut.jpg")
    assert status == 200, result
    assert result["model"] == "starry_night" and result["path"].endswith(str(result["version"]))
    assert result["input_size"] == result["output_size"] == [64, 48]
    assert result["filename"] == "astronaut_starry_night.png"
    output = png_from_data_url(result["image"])
    assert output.shape == (48, 64, 3)
    sent = images.decode_image(_encode(photo))
    expected = inference.Stylizer("starry_night", precision="auto").image(sent)
    assert np.abs(output.astype(int) - expected).max() <= 1
    # format=png: the PNG itself (for curl)
    status, png = post(server, _encode(photo), model="starry_night", format="png")
    assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), output)
    assert sum("loaded starry_night" in line for line in server.log) == 1


@pytest.mark.slow
def test_a_mix_of_the_zoo_with_strength_and_colour_preservation(server, photo):
    options = dict(style="wave:0.7,candy:0.3", strength=0.6, preserve_color=True)
    status, result = post(server, _encode(photo, "PNG"), model="zoo", name="a.png",
                          **{**options, "preserve_color": "1"})
    assert status == 200, result
    assert result["filename"] == "a_zoo_wave0.7-candy0.3.png"
    expected = inference.Stylizer("zoo", precision="auto", **options).image(photo)
    assert np.abs(png_from_data_url(result["image"]).astype(int) - expected).max() <= 1
    # alpha is carried through, as the stylize command does
    rgba = np.dstack([photo, np.full(photo.shape[:2], 128, np.uint8)])
    status, result = post(server, _encode(rgba, "PNG"), model="zoo", style="wave")
    assert status == 200 and png_from_data_url(result["image"]).shape == (48, 64, 4)


def test_super_resolution_comes_with_the_bicubic_upscaling(server, photo):
    small = images.resize(photo, 12, 16)
    status, result = post(server, _encode(small, "PNG"), model="sr_x4_feat")
    assert status == 200, result
    assert result["output_size"] == [64, 48] and result["task"] == "super_resolution"
    assert png_from_data_url(result["image"]).shape == (48, 64, 3)
    assert np.array_equal(png_from_data_url(result["bicubic"]), images.resize(small, 48, 64))


def _png_declaring(width: int, height: int) -> bytes:
    """A small PNG that declares ``width`` x ``height`` pixels (and holds almost none)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("case, status, message", [
    ("text", 400, "notes.png: not a readable image (unknown or damaged format)"),
    ("truncated", 400, "notes.png: not a readable image (image file is truncated"),
    ("empty", 400, "empty upload (0 bytes)"),
    ("too many bytes", 413, "over the upload limit of 2000 bytes"),
    ("too many pixels", 413, "notes.png: image of 64 x 48 = 3072 pixels, over the limit of 1024"),
    ("over the serving limit", 413, "notes.png: image of 3000 x 2000 = 6000000 pixels, over "
                                    f"the limit of {DEFAULT_MAX_PIXELS}"),
    ("a declared bomb", 413, "notes.png: Image size (10000000000 pixels) exceeds limit"),
    ("no model", 400, "model: required"),
    ("unknown model", 404, "model: no model named '../savedmodels/zoo'; choose one of"),
    ("no style", 400, "has 10 styles; choose one (or a mix such as"),
    ("unknown style", 400, "style: unknown style 'van_gogh'; this network has: starry_night"),
    ("style of a one-style network", 400, "has one style"),
    ("bad strength", 400, "strength: must be in [0, 1], got 1.5"),
    ("strength not a number", 400, "strength: expected a number, got 'strong'"),
])
def test_a_bad_upload_or_option_gets_one_line_and_a_4xx(server, photo, monkeypatch, case, status,
                                                        message):
    jpeg = _encode(photo)
    body, params = jpeg, {"model": "starry_night", "name": "notes.png"}
    if case == "text":
        body = b"just some notes, not an image\n" * 10
    elif case == "truncated":
        body = jpeg[:len(jpeg) // 2]
    elif case == "empty":
        body = b""
    elif case == "too many bytes":
        monkeypatch.setattr(server.demo, "max_bytes", 2000)
        body = jpeg + bytes(3000)
    elif case == "too many pixels":
        monkeypatch.setattr(server.demo, "max_pixels", 32 * 32)
    elif case == "over the serving limit":
        body = _png_declaring(3000, 2000)
    elif case == "a declared bomb":
        body = _png_declaring(100000, 100000)
    elif case == "no model":
        params["model"] = ""
    elif case == "unknown model":
        params["model"] = "../savedmodels/zoo"  # names only: never a path from a request
    elif case == "no style":
        params["model"] = "zoo"
    elif case == "unknown style":
        params.update(model="zoo", style="van_gogh")
    elif case == "style of a one-style network":
        params["style"] = "wave"
    elif case == "bad strength":
        params["strength"] = "1.5"
    elif case == "strength not a number":
        params["strength"] = "strong"
    got, result = post(server, body, **params)
    assert got == status, result
    assert set(result) == {"error"}
    assert message in result["error"]
    assert "\n" not in result["error"] and "Traceback" not in result["error"]


def test_after_a_refused_upload_the_connection_still_works(server, monkeypatch, photo):
    monkeypatch.setattr(server.demo, "max_bytes", 2000)
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        connection.request("POST", "/api/stylize?model=starry_night", body=_encode(photo))
        refused = connection.getresponse()
        assert refused.status == 413
        refused.read()
        connection.request("GET", "/api/models")  # the same connection (keep-alive)
        assert connection.getresponse().status == 200
    finally:
        connection.close()


def _clip(path, frames=6, size="32x24"):
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc=size={size}:rate=10", "-frames:v", str(frames), "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def _wait_for_job(srv, job_id, timeout=60):
    deadline = time.time() + timeout
    while True:
        status, _, data = _request(srv, "GET", f"/api/jobs/{job_id}")
        job = json.loads(data)
        assert status == 200, job
        if job["state"] != "running" or time.time() > deadline:
            return job
        time.sleep(0.2)


@pytest.mark.slow
def test_a_video_runs_as_a_job_with_progress(server, tmp_path):
    import imageio.v2 as imageio

    clip = _clip(tmp_path / "clip.mp4").read_bytes()
    status, job = post(server, clip, path="/api/video", model="zoo", style="candy",
                       name="ma vidéo/../clip\"1\".mp4")  # a name to tidy for a header
    assert status == 202, job
    assert job["state"] == "running" and job["total"] == 6 and job["done"] == 0
    job = _wait_for_job(server, job["job"])
    assert job["state"] == "done", job
    assert job["done"] == job["total"] == 6 and job["filename"] == "clip_1__zoo_candy.mp4"
    status, headers, mp4 = _request(server, "GET", job["url"])
    assert status == 200 and headers["Content-Type"] == "video/mp4"
    assert headers["Content-Disposition"] == 'attachment; filename="clip_1__zoo_candy.mp4"'
    (tmp_path / "out.mp4").write_bytes(mp4)
    reader = imageio.get_reader(str(tmp_path / "out.mp4"), format="FFMPEG")
    frames = [frame for frame in reader]  # (list() asks its length: infinite for ffmpeg)
    reader.close()
    assert len(frames) == 6 and frames[0].shape == (24, 32, 3)


@pytest.mark.parametrize("case, status, message", [
    ("not a video", 400, "notes.mp4: not a readable video"),
    ("frames too large", 413, "notes.mp4: frames of 32 x 24 = 768 pixels, over the limit of 700"),
    ("no style", 400, "has 10 styles; choose one"),
])
def test_a_bad_video_upload_is_refused_before_any_job(server, tmp_path, monkeypatch, case,
                                                      status, message):
    body = _clip(tmp_path / "clip.mp4").read_bytes()
    folders = set(os.listdir(server.demo.work_dir))
    params = {"model": "zoo", "style": "wave", "name": "notes.mp4"}
    if case == "not a video":
        body = b"not a video at all\n" * 100
    elif case == "frames too large":
        monkeypatch.setattr(server.demo, "max_pixels", 700)
    else:
        del params["style"]
    got, result = post(server, body, path="/api/video", **params)
    assert got == status and message in result["error"], result
    assert set(os.listdir(server.demo.work_dir)) == folders  # nothing left of the upload


def test_unknown_pages_and_jobs_are_404(server):
    for path in ("/nope", "/api/jobs/0123abcd", "/../setup.py"):
        status, _, data = _request(server, "GET", path)
        assert status == 404 and "error" in json.loads(data)


# -- the page in a real browser ----------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None

needs_browser = pytest.mark.skipif(
    CHROMIUM is None or sync_playwright is None,
    reason="the browser tests need Chromium (apt-get install chromium) and Playwright for "
           "Python (pip install playwright, in the test extra): missing "
           + " and ".join(name for name, absent in (("chromium", CHROMIUM is None),
                                                    ("playwright", sync_playwright is None))
                          if absent))
SCREENSHOTS = os.environ.get("KPERCEPTUAL_APP_SCREENSHOTS")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """``python -m kperceptual.app --port=0`` running; its URL, read from what it prints."""
    cwd = tmp_path_factory.mktemp("app_cwd")  # no savedmodels/ here: the shipped models only
    temporary = tmp_path_factory.mktemp("app_tmp")
    env = dict(os.environ, PYTHONPATH=REPO, TMPDIR=str(temporary))
    process = subprocess.Popen([sys.executable, "-m", "kperceptual.app", "--port=0"], cwd=cwd,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    lines, url = [], None
    deadline = time.time() + 120
    while url is None and time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "serving on http://" in line:
            url = line.split("serving on ", 1)[1].split()[0]
    if url is None:
        process.kill()
        pytest.fail("the app did not start:\n" + "".join(lines))
    threading.Thread(target=lambda: [lines.append(x) for x in process.stdout],
                     daemon=True).start()
    yield url
    process.terminate()  # SIGTERM: stops as Ctrl-C does
    assert process.wait(timeout=30) == 0
    assert not os.listdir(temporary)  # its uploads and videos went with it
    text = "".join(lines)
    assert "Traceback" not in text, text
    # Each model it ran (the tests this process ran chose which) was logged with its version.
    ran = set(re.findall(r"kperceptual\.app: (\S+) v(\d+)\b", text))
    assert ran <= set(re.findall(r"loaded (\S+) v(\d+) ", text)), text


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1200, "height": 820},
                                  accept_downloads=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_url)
    page.wait_for_selector("body[data-ready='1']", timeout=30000)
    yield page
    context.close()
    assert not errors, errors  # no JavaScript error on the page


def _shot(page, name):
    if SCREENSHOTS:
        os.makedirs(SCREENSHOTS, exist_ok=True)
        page.screenshot(path=os.path.join(SCREENSHOTS, f"app_{name}.png"), full_page=True)


def _wait_for_output(page, width, timeout=60000):
    """Waits for the result image of ``width`` pixels; returns its PNG as an array."""
    page.wait_for_function(f"document.getElementById('output').naturalWidth === {width}",
                           timeout=timeout)
    data = page.evaluate("""async () => {
        const r = await fetch(document.getElementById('output').src);
        return [r.headers.get('content-type'), Array.from(new Uint8Array(await r.arrayBuffer()))];
    }""")
    assert data[0] == "image/png"
    png = bytes(data[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(png)))


@pytest.mark.slow
@needs_browser
def test_browser_uploads_a_photo_and_gets_the_stylised_image(page, tmp_path):
    photo = images.resize(images.read_image("skimage:chelsea"), 192, 288)
    images.write_image(str(tmp_path / "chelsea.jpg"), photo)
    page.select_option("#model", "starry_night")
    page.set_input_files("#image-file", str(tmp_path / "chelsea.jpg"))  # runs on choosing
    output = _wait_for_output(page, 288)
    assert output.shape == (192, 288, 3)
    assert page.text_content("#error") == ""
    assert "starry_night v" in page.text_content("#status")
    assert page.get_attribute("#download", "download") == "chelsea_starry_night.png"
    # a mix of the zoo's styles, at 80% strength
    page.select_option("#model", "zoo")
    page.check("#mix")
    page.fill("#mix-box input[data-style='wave']", "0.6")
    page.fill("#mix-box input[data-style='the_scream']", "0.4")
    page.fill("#mix-box input[data-style='starry_night']", "0")
    page.fill("#strength", "0.8")
    page.click("#run-image")
    page.wait_for_function("document.getElementById('output-caption').textContent"
                           ".includes('wave:0.6,the_scream:0.4')", timeout=60000)
    assert _wait_for_output(page, 288).shape == (192, 288, 3)
    assert page.get_attribute("#download", "download") == "chelsea_zoo_wave0.6-the_scream0.4.png"
    _shot(page, "style")


@pytest.mark.slow
@needs_browser
def test_browser_super_resolution_before_and_after(page, tmp_path):
    small = images.resize(images.read_image("skimage:astronaut"), 64, 64)
    images.write_image(str(tmp_path / "astronaut_small.png"), small)
    page.select_option("#model", "sr_x4_feat")
    assert page.is_hidden("#color-box")
    page.set_input_files("#image-file", str(tmp_path / "astronaut_small.png"))
    assert _wait_for_output(page, 256).shape == (256, 256, 3)
    assert page.is_visible("#before") and page.is_visible("#compare-slider")
    before = page.evaluate("document.getElementById('before').naturalWidth")
    assert before == 256
    page.fill("#compare-slider", "30")
    assert page.evaluate("document.getElementById('output').style.clipPath") == \
        "inset(0px 0px 0px 30%)"
    _shot(page, "super_resolution")


@pytest.mark.slow
@needs_browser
def test_browser_webcam_frame_with_chromiums_fake_camera(page):
    page.select_option("#model", "starry_night")
    page.select_option("#max-size", "256")
    page.click("#tab-webcam")
    page.click("#camera-start")
    page.wait_for_function("document.getElementById('camera').videoWidth > 0", timeout=30000)
    assert page.evaluate("document.getElementById('camera').videoWidth") == 640
    page.click("#capture")
    assert _wait_for_output(page, 256).shape == (192, 256, 3)  # 640 x 480 at --max_size 256
    assert page.get_attribute("#download", "download") == "webcam_starry_night.png"
    _shot(page, "webcam")


@pytest.mark.slow
@needs_browser
def test_browser_shows_one_line_for_a_bad_upload(page, tmp_path):
    (tmp_path / "holiday.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    page.set_input_files("#image-file", str(tmp_path / "holiday.jpg"))
    page.wait_for_function("document.getElementById('error').textContent !== ''",
                           timeout=30000)
    error = page.text_content("#error")
    assert error.startswith("holiday.jpg: not a readable image"), error
    assert "\n" not in error and "Traceback" not in error
    assert page.is_hidden("#image-result")
    _shot(page, "error")


@pytest.mark.slow
@needs_browser
def test_browser_video_with_progress_and_download(page, tmp_path):
    _clip(tmp_path / "clip.mp4", frames=8, size="64x48")
    page.select_option("#model", "zoo")
    page.select_option("#style", "mosaic")
    page.click("#tab-video")
    page.set_input_files("#video-file", str(tmp_path / "clip.mp4"))
    page.click("#run-video")
    page.wait_for_function("document.getElementById('output-video').src.includes('/api/jobs/')",
                           timeout=60000)
    assert page.evaluate("[document.getElementById('video-progress').value, "
                         "document.getElementById('video-progress').max]") == [8, 8]
    assert "8 frames" in page.text_content("#status")
    # the browser plays what it got (H.264 in MP4), at the clip's size
    page.wait_for_function("document.getElementById('output-video').readyState >= 1",
                           timeout=30000)
    assert page.evaluate("document.getElementById('output-video').videoWidth") == 64
    _shot(page, "video")
    with page.expect_download() as download:
        page.click("#download")
    assert download.value.suggested_filename == "clip_zoo_mosaic.mp4"
    saved = tmp_path / "downloaded.mp4"
    download.value.save_as(saved)
    assert saved.stat().st_size > 1000
