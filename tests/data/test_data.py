"""Training data: tf.data pipelines (folders, bad files, determinism, resume, tfds (mocked),
bundled photos, shards), the PyDataset loader that gives the same batches, and the loader choice,
also on a machine without TensorFlow."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from helpers import BLOCK_TENSORFLOW, REPO
from kperceptual import tf_fence
from kperceptual.data import loaders
from kperceptual.data import sources as data
from kperceptual.data import tf_pipeline


def _batches(ds, n):
    return [b.numpy() for b in ds.take(n)]


def test_folder_pipeline_skips_and_counts_a_corrupt_file(photo_folder):
    source = data.TrainingImages(str(photo_folder), 24)
    assert len(source.files) == 4  # recursive; jpg, png, webp and the broken jpg; no .txt
    batches = _batches(tf_pipeline.dataset(source, batch_size=3, seed=0), 4)  # 12 images = 4 epochs
    assert all(b.shape == (3, 24, 24, 3) and b.dtype == np.uint8 for b in batches)
    assert list(source.skipped) == [str(photo_folder / "broken.jpg")]
    assert "not a readable image" in source.skipped[str(photo_folder / "broken.jpg")]


def test_order_is_deterministic_under_seed_and_changes_with_it(photo_folder):
    def first_batches(seed):
        return _batches(tf_pipeline.dataset(data.TrainingImages(str(photo_folder), 16), 2, seed=seed), 3)

    a, b, c = first_batches(7), first_batches(7), first_batches(8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def test_resume_continues_the_same_stream(tmp_path, photos):
    from kperceptual.imaging import images

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(5):  # 5 distinct images (shifted crops of real photos)
        images.write_image(str(folder / f"{i}.png"), photos["astronaut"][i * 40:i * 40 + 200])
    source = data.TrainingImages(str(folder), 16)
    full = _batches(tf_pipeline.dataset(source, 2, seed=3), 6)
    resumed = _batches(tf_pipeline.dataset(source, 2, seed=3, start_step=2), 4)
    for x, y in zip(full[2:], resumed):
        np.testing.assert_array_equal(x, y)


def test_bundled_photos_source():
    ds = tf_pipeline.dataset(data.TrainingImages("skimage", 20), 4, seed=0)
    assert ds.take(1).get_single_element().shape == (4, 20, 20, 3)


def test_tfds_source_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        source = data.TrainingImages("tfds:tf_flowers", 20)
        batches = _batches(tf_pipeline.dataset(source, 2, seed=1), 4)  # repeats past its 6 examples
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
    ds = tf_pipeline.dataset(data.TrainingImages(str(photo_folder), 16), batch_size=4)
    assert ds.element_spec.shape == tf.TensorShape([4, 16, 16, 3])


# -- the backend-neutral loader (ImageBatches), sharding, loader choice -----------------------
@pytest.fixture
def tiny_folder(tmp_path):
    """Five distinct tiny noise images and one corrupt file."""
    from PIL import Image

    root = tmp_path / "tiny"
    root.mkdir()
    for i in range(5):
        pixels = np.random.default_rng(i).integers(0, 256, (12 + i, 20, 3), np.uint8)
        Image.fromarray(pixels).save(root / f"{i}.png")
    (root / "bad.jpg").write_bytes(b"not an image")
    return root


def _parts(batch):
    """A batch as a tuple of numpy arrays (one for images, two for pairs)."""
    parts = batch if isinstance(batch, tuple) else (batch,)
    return tuple(np.asarray(part) for part in parts)


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert len(_parts(x)) == len(_parts(y))
        for u, v in zip(_parts(x), _parts(y)):
            assert u.dtype == v.dtype == np.uint8
            np.testing.assert_array_equal(u, v)


def _make(kind, folder):
    if kind == "images":
        return data.TrainingImages(str(folder), 8)
    if kind == "pairs":
        return data.SuperResolutionPairs(str(folder), 8, 2)
    return data.TrainingImages("skimage", 8)


@pytest.mark.parametrize("kind", ["images", "pairs"])
@pytest.mark.parametrize("start_step", [0, 3])
def test_py_dataset_gives_the_tf_data_batches(tiny_folder, kind, start_step):
    tf_source, py_source = _make(kind, tiny_folder), _make(kind, tiny_folder)
    expected = [_parts(b) for b in tf_pipeline.dataset(tf_source, 3, seed=2, start_step=start_step).take(5)]
    batches = py_source.py_dataset(3, seed=2, start_step=start_step, num_batches=5)
    assert batches.num_batches == 5
    _assert_same([batches[k] for k in range(5)], expected)
    bad = str(tiny_folder / "bad.jpg")
    assert list(tf_source.skipped) == list(py_source.skipped) == [bad]
    with pytest.raises(IndexError):
        batches[5]


def test_py_dataset_gives_the_tf_data_batches_of_bundled_photos():
    expected = [_parts(b) for b in tf_pipeline.dataset(_make("skimage", None), 2, seed=1).take(2)]
    _assert_same(list(_make("skimage", None).py_dataset(2, seed=1, num_batches=2)), expected)


def test_py_dataset_in_any_order_gives_the_same_batches(tiny_folder):
    in_order = _make("pairs", tiny_folder).py_dataset(2, seed=4)
    shuffled = _make("pairs", tiny_folder).py_dataset(2, seed=4, threads=1, workers=1)
    assert in_order.num_batches is None and shuffled.workers == 1
    expected = [in_order[k] for k in range(6)]
    order = [5, 1, 0, 3, 2, 4, 5]
    _assert_same([shuffled[k] for k in order], [expected[k] for k in order])


def test_py_dataset_of_unreadable_files_is_an_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"not an image")
    (tmp_path / "b.png").write_bytes(b"nor this")
    with pytest.raises(data.DataError, match="none of its images can be read"):
        data.TrainingImages(str(tmp_path), 8).py_dataset(2)[0]


def test_two_shards_split_each_global_batch(tiny_folder):
    (tiny_folder / "bad.jpg").unlink()  # with a bad file the shards' batches move apart
    source = data.SuperResolutionPairs(str(tiny_folder), 8, 2)
    whole = [_parts(b) for b in tf_pipeline.dataset(source, 4, seed=5, start_step=1).take(3)]
    shards = [[_parts(b) for b in tf_pipeline.dataset(source, 4, 5, 1, num_shards=2, shard_index=i).take(3)]
              for i in range(2)]
    for k in range(3):
        assert shards[0][k][0].shape == (2, 4, 4, 3)
        joined = [np.concatenate([shards[0][k][j], shards[1][k][j]]) for j in range(2)]
        _assert_same([tuple(joined)], [whole[k]])


def test_two_shards_of_a_tfds_source():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        source = data.TrainingImages("tfds:tf_flowers", 8)
        whole = [b.numpy() for b in tf_pipeline.dataset(source, 4, seed=1).take(2)]
        shards = [[b.numpy() for b in tf_pipeline.dataset(source, 4, 1, num_shards=2, shard_index=i).take(2)]
                  for i in range(2)]
    for k in range(2):
        np.testing.assert_array_equal(np.concatenate([shards[0][k], shards[1][k]]), whole[k])


def test_shards_must_split_the_batch_evenly(tiny_folder):
    source = data.TrainingImages(str(tiny_folder), 8)
    with pytest.raises(data.DataError, match="does not split evenly into 2 shards"):
        tf_pipeline.dataset(source, 3, num_shards=2)
    with pytest.raises(data.DataError, match="shard index 2"):
        tf_pipeline.dataset(source, 4, num_shards=2, shard_index=2)


def test_distributed_dataset_gives_each_input_pipeline_its_shard(tiny_folder):
    from kperceptual.data import tf_pipeline

    class OneOfTwoWorkers:  # what MultiWorkerMirroredStrategy gives worker 1 of 2
        def __init__(self, replicas):
            self.replicas = replicas

        def distribute_datasets_from_function(self, fn):
            return fn(tf.distribute.InputContext(2, 1, self.replicas))

    source = data.TrainingImages(str(tiny_folder), 8)
    shard = tf_pipeline.distributed_dataset(source, OneOfTwoWorkers(2), 4, seed=3)
    expected = tf_pipeline.dataset(source, 4, seed=3, num_shards=2, shard_index=1)
    got = [b.numpy() for b in shard.take(2)]
    assert all(b.dtype == np.float32 for b in got)  # collectives cannot average uint8
    _assert_same([_parts(b.astype(np.uint8)) for b in got], [_parts(b) for b in expected.take(2)])
    # A worker with two replicas: its half of each global batch of 8, a quarter per replica.
    halves = [b.numpy() for b in tf_pipeline.dataset(source, 8, seed=3, num_shards=2, shard_index=1).take(2)]
    quarters = [b.numpy() for b in
                tf_pipeline.distributed_dataset(source, OneOfTwoWorkers(4), 8, seed=3).take(4)]
    for k in range(2):
        np.testing.assert_array_equal(np.concatenate(quarters[2 * k:2 * k + 2]), halves[k])


def test_loader_choice_with_tensorflow(tiny_folder):
    assert loaders.LOADERS == ("auto", "tf_data", "py_dataset")
    assert tf_fence.tensorflow_available()
    assert loaders.resolve_loader("auto") == loaders.resolve_loader("tf_data") == "tf_data"
    assert loaders.resolve_loader("py_dataset") == "py_dataset"
    with pytest.raises(data.DataError, match="auto, tf_data, py_dataset"):
        loaders.resolve_loader("torch")
    source = data.TrainingImages(str(tiny_folder), 8)
    assert isinstance(loaders.batches(source, 2, loader="py_dataset"), data.ImageBatches)
    assert len(list(loaders.batches(source, 2, loader="auto", num_batches=3))) == 3


def test_tfds_source_has_no_py_dataset():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=2):
        source = data.TrainingImages("tfds:tf_flowers", 8)
    with pytest.raises(data.DataError, match="with the tf_data loader"):
        loaders.batches(source, 2, loader="py_dataset")


NO_TENSORFLOW = BLOCK_TENSORFLOW + """
import keras
from kperceptual import tf_fence
from kperceptual.data import loaders
from kperceptual.data import sources as data


def must_fail(fn, *args):
    try:
        fn(*args)
    except data.DataError as e:
        print(e)
    else:
        raise AssertionError(f"no DataError from {fn.__name__}{args}")


assert not tf_fence.tensorflow_available() and loaders.resolve_loader("auto") == "py_dataset"
must_fail(loaders.resolve_loader, "tf_data")
must_fail(data.TrainingImages, "tfds:mnist", 8)
source = data.SuperResolutionPairs(sys.argv[1], 8, 2)
asked = []

class Logged(data.ImageBatches):
    def __getitem__(self, index):
        asked.append(index)
        return super().__getitem__(index)

low, high = loaders.batches(source, 2, seed=1, start_step=1)[0]
assert low.shape == (2, 4, 4, 3) and high.shape == (2, 8, 8, 3)
model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.UpSampling2D(2)])
model.compile(loss="mse")
model.fit(Logged(source, 2, workers=1), epochs=2, steps_per_epoch=2, shuffle=False, verbose=0)
assert sorted(set(asked)) == [0, 1, 2, 3], asked  # endless: epoch 2 goes on from batch 2
model.fit(source.py_dataset(2), epochs=2, steps_per_epoch=2, shuffle=False, verbose=0)
assert list(source.skipped) == [sys.argv[1] + "/bad.jpg"]
assert "tensorflow" not in sys.modules, "TensorFlow was imported"
print("trained on", keras.backend.backend())
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_training_data_without_tensorflow(tiny_folder, backend):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, str(tiny_folder)], env=env,
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tf_data needs TensorFlow, which is not installed; use py_dataset" in result.stdout
    assert ("tfds:mnist: reading tensorflow-datasets needs TensorFlow, which is not installed; "
            "train from a folder of images or skimage") in result.stdout
    assert f"trained on {backend}" in result.stdout
