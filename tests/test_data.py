"""tf.data pipelines: folders, bad files, determinism, resume, tfds (mocked), bundled photos."""

import numpy as np
import pytest
import tensorflow as tf

from kperceptual import data


def _batches(ds, n):
    return [b.numpy() for b in ds.take(n)]


def test_folder_pipeline_skips_and_counts_a_corrupt_file(photo_folder):
    source = data.TrainingImages(str(photo_folder), 24)
    assert len(source.files) == 4  # recursive; jpg, png, webp and the broken jpg; no .txt
    batches = _batches(source.dataset(batch_size=3, seed=0), 4)  # 12 images = 4 epochs
    assert all(b.shape == (3, 24, 24, 3) and b.dtype == np.uint8 for b in batches)
    assert list(source.skipped) == [str(photo_folder / "broken.jpg")]
    assert "not a readable image" in source.skipped[str(photo_folder / "broken.jpg")]


def test_order_is_deterministic_under_seed_and_changes_with_it(photo_folder):
    def first_batches(seed):
        return _batches(data.TrainingImages(str(photo_folder), 16).dataset(2, seed=seed), 3)

    a, b, c = first_batches(7), first_batches(7), first_batches(8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def test_resume_continues_the_same_stream(tmp_path, photos):
    from kperceptual import images

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(5):  # 5 distinct images (shifted crops of real photos)
        images.write_image(str(folder / f"{i}.png"), photos["astronaut"][i * 40:i * 40 + 200])
    source = data.TrainingImages(str(folder), 16)
    full = _batches(source.dataset(2, seed=3), 6)
    resumed = _batches(source.dataset(2, seed=3, start_step=2), 4)
    for x, y in zip(full[2:], resumed):
        np.testing.assert_array_equal(x, y)


def test_bundled_photos_source():
    ds = data.TrainingImages("skimage", 20).dataset(4, seed=0)
    assert ds.take(1).get_single_element().shape == (4, 20, 20, 3)


def test_tfds_source_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        source = data.TrainingImages("tfds:tf_flowers", 20)
        batches = _batches(source.dataset(2, seed=1), 4)  # repeats past its 6 examples
    assert all(b.shape == (2, 20, 20, 3) and b.dtype == np.uint8 for b in batches)
    assert source.describe() == "tensorflow-datasets tfds:tf_flowers"


def test_unknown_tfds_name_and_empty_folder_are_errors(tmp_path):
    with pytest.raises(data.DataError, match="not a tensorflow-datasets dataset"):
        data.TrainingImages("tfds:no_such_dataset_xyz", 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DataError, match="no images"):
        data.TrainingImages(str(tmp_path / "empty"), 16)
    with pytest.raises(data.DataError, match="no such folder"):
        data.TrainingImages(str(tmp_path / "missing"), 16)


def test_pipeline_is_batched_to_the_global_batch_and_prefetched(photo_folder):
    ds = data.TrainingImages(str(photo_folder), 16).dataset(batch_size=4)
    assert ds.element_spec.shape == tf.TensorShape([4, 16, 16, 3])
