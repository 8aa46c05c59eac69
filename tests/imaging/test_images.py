"""Image I/O: colour modes, EXIF orientation, bad files, no overwriting."""

import numpy as np
import pytest
from PIL import Image

from kperceptual.imaging import images


def _save(path, image, **kw):
    image.save(path, **kw)
    return str(path)


def test_modes_become_rgb_uint8(tmp_path, photos):
    rgb = Image.fromarray(photos["chelsea"])
    paths = {
        "L": _save(tmp_path / "grey.png", rgb.convert("L")),
        "RGBA": _save(tmp_path / "rgba.png", rgb.convert("RGBA")),
        "P": _save(tmp_path / "palette.png", rgb.convert("P")),
        "CMYK": _save(tmp_path / "cmyk.jpg", rgb.convert("CMYK")),
        "I;16": _save(tmp_path / "sixteen.png",
                      Image.fromarray((np.asarray(rgb.convert("L"), np.uint16) * 257))),
    }
    for mode, path in paths.items():
        array = images.read_image(path)
        assert array.dtype == np.uint8 and array.shape == photos["chelsea"].shape, mode
    grey16 = images.read_image(paths["I;16"])
    np.testing.assert_array_equal(grey16[..., 0], np.asarray(rgb.convert("L")))


def test_exif_orientation_is_respected(tmp_path, photos):
    image = Image.fromarray(photos["chelsea"])  # 300 x 451 (h x w)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = _save(tmp_path / "rotated.jpg", image, exif=exif.tobytes())
    assert images.read_image(path).shape == (451, 300, 3)


@pytest.mark.parametrize("content,reason", [(b"", "0 bytes"), (b"GIF89a garbage", "not a readable"),
                                            (None, "cannot open")])
def test_bad_files_raise_one_line_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "bad.gif"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(images.ImageError) as e:
        images.read_image(str(path))
    message = str(e.value)
    assert message.startswith(str(path)) and reason in message and "\n" not in message


def test_truncated_jpeg_is_an_error(tmp_path, photos):
    path = tmp_path / "whole.jpg"
    images.write_image(str(path), photos["coffee"])
    data = path.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(images.ImageError, match="cut.jpg"):
        images.read_image(str(tmp_path / "cut.jpg"))


def test_write_never_overwrites_unless_asked(tmp_path, photos):
    path = str(tmp_path / "out.png")
    images.write_image(path, photos["astronaut"])
    with pytest.raises(images.ImageError, match="already exists"):
        images.write_image(path, photos["chelsea"])
    np.testing.assert_array_equal(images.read_image(path), photos["astronaut"])
    images.write_image(path, photos["chelsea"], overwrite=True)
    np.testing.assert_array_equal(images.read_image(path), photos["chelsea"])


def test_resize_and_crop(photos):
    out = images.resize_and_center_crop(photos["coffee"], 64)  # 400 x 600
    assert out.shape == (64, 64, 3)
    assert images.resize_long_side(photos["coffee"], 120).shape == (80, 120, 3)


def test_list_images_is_recursive_and_sorted(photo_folder):
    found = images.list_images(str(photo_folder))
    names = [p[len(str(photo_folder)) + 1:] for p in found]
    assert names == ["astronaut.jpg", "broken.jpg", "sub/chelsea.png", "sub/coffee.webp"]


def test_bundled_photo_names_are_checked():
    assert images.read_image("skimage:astronaut").shape == (512, 512, 3)
    with pytest.raises(images.ImageError, match="unknown bundled photo"):
        images.read_image("skimage:mona_lisa")


def test_a_dark_16_bit_image_stays_dark(tmp_path):
    # Values up to 255 of 65535: under 0.4% of full scale, so black in 8 bits (not full scale).
    dark = np.tile(np.arange(0, 256, dtype=np.uint16), (8, 1))
    path = _save(tmp_path / "dark16.png", Image.fromarray(dark))
    with Image.open(path) as opened:
        assert opened.mode.startswith("I")
    assert images.read_image(path).max() <= 1


def test_tiff_and_gif_are_read(tmp_path, photos):
    small = images.resize_long_side(photos["coffee"], 40)
    tif = _save(tmp_path / "photo.tiff", Image.fromarray(small))
    np.testing.assert_array_equal(images.read_image(tif), small)
    frames = [Image.fromarray(small), Image.fromarray(255 - small)]
    gif = _save(tmp_path / "anim.gif", frames[0], save_all=True, append_images=frames[1:])
    first = images.read_image(gif).astype(int)
    assert first.shape == small.shape
    assert np.abs(first - small).mean() < np.abs(first - (255 - small)).mean()
    assert [p.rsplit("/", 1)[-1] for p in images.list_images(str(tmp_path))] == \
        ["anim.gif", "photo.tiff"]
