"""``python -m kperceptual.train`` as a user runs it: bad flags, a real run, kill -9 and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import REPO, SHARED_DATA

TINY = ["--style_image=skimage:hubble_deep_field", "--train_data=skimage", "--image_size=32",
        "--style_size=64", "--batch_size=2", "--precision=float32", "--log_every=1",
        "--sample_every=1"]


def run_train(args, tmp_path, **kw):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    dirs = [f"--model_dir={tmp_path / 'run'}", f"--export_dir={tmp_path / 'export'}"]
    return subprocess.run([sys.executable, "-m", "kperceptual.train", *dirs, *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, **kw)


@pytest.mark.parametrize("flag,value,message", [
    ("style_image", "missing.jpg", "--style_image: missing.jpg: no such file"),
    ("style_image", "notes.txt", "not a readable image"),
    ("train_data", "empty_folder", "--train_data: empty_folder: no images"),
    ("train_data", "tfds:no_such_dataset_xyz",
     "--train_data: tfds:no_such_dataset_xyz: not a tensorflow-datasets dataset"),
    ("image_size", "0", "--image_size: must be positive"),
    ("image_size", "4", "--image_size: must be at least 8 pixels"),
    ("seed", "-1", "--seed: must not be negative"),
    ("content_weight", "nan", "--content_weight: must be a finite number"),
    ("style_layers", "relu1_2,relu9_9", "--style_layers: unknown VGG16 layer relu9_9"),
    ("batch_size", "four", "--batch_size"),
    ("vgg_weights", "caffe", "--vgg_weights: unknown value 'caffe'"),
    ("colour", "1", "colour"),
    ("loader", "bogus", "--loader: unknown value 'bogus'; expected one of auto, tf_data"),
    ("strategy", "ring", "--strategy: unknown value 'ring'"),
    ("jit_compile", "yes", "--jit_compile: unknown value 'yes'; expected one of auto, on, off"),
    ("mixed_precision", "float8", "--precision: unknown value 'float8'"),
    ("stability_weight", "-1", "--stability_weight: must be a finite number >= 0"),
    ("stability_noise", "inf", "--stability_noise: must be a finite number >= 0"),
])
@pytest.mark.slow
def test_bad_flags_exit_2_with_one_line(tmp_path, flag, value, message):
    (tmp_path / "empty_folder").mkdir()
    (tmp_path / "notes.txt").write_text("not an image")
    args = [a for a in TINY if not a.startswith(f"--{flag}=")] + [f"--{flag}={value}"]
    result = run_train(args, tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if not value.startswith("tfds:"):  # only a tfds name needs TensorFlow (and its log) to check
        assert len(lines) == 1, result.stderr
    assert lines[-1].startswith("kperceptual.train: ") and message in lines[-1], lines[-1]
    assert not (tmp_path / "run").exists()  # nothing was started


@pytest.mark.slow
def test_train_command_trains_exports_loses_at_most_checkpoint_every_steps_to_kill_9_and_resumes(
        tmp_path):
    # One model_dir throughout (each of these was a run of its own: the resume after kill -9
    # is also the resume that exports the next version).
    tiny = [*TINY, "--name=tiny"]
    result = run_train([*tiny, "--steps=2", "--checkpoint_every=1"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trained tiny to step 2 (2 this run" in result.stdout
    assert os.path.isfile(tmp_path / "export" / "tiny" / "1" / "saved_model.pb")

    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    ckpt_dir = tmp_path / "run" / "checkpoints"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kperceptual.train", f"--model_dir={tmp_path / 'run'}",
         f"--export_dir={tmp_path / 'export'}", *tiny, "--steps=100000", "--checkpoint_every=2"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240  # until the killed run wrote two checkpoints of its own
        while time.time() < deadline and not (ckpt_dir / "ckpt-00000006.npz").exists():
            time.sleep(0.5)
        assert (ckpt_dir / "ckpt-00000006.npz").exists(), "training never reached step 6"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    from kperceptual.training import checkpoints

    saved = checkpoints.list_checkpoints(str(ckpt_dir))[-1][0]  # complete checkpoints only
    assert saved >= 6
    again = run_train([*tiny, f"--steps={saved + 1}", "--checkpoint_every=2"], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"trained tiny to step {saved + 1} (1 this run" in again.stdout
    assert os.path.isfile(tmp_path / "export" / "tiny" / "2" / "saved_model.pb")


@pytest.mark.slow
@pytest.mark.parametrize("strategy,message", [
    ("data_parallel", "--strategy: data_parallel is not available on the tensorflow backend"),
    ("multi_worker", "--strategy: multi_worker needs TF_CONFIG"),
])
def test_strategies_this_backend_or_cluster_lacks_exit_2(tmp_path, monkeypatch, strategy,
                                                         message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = run_train([*TINY, f"--strategy={strategy}"], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kperceptual.train: ") and message in last, last
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_commands_start_without_tensorflows_noise(tmp_path):
    # TensorFlow's native start-up lines (oneDNN, CUDA) are held back unless --verbosity > 0.
    import skimage.data

    from kperceptual.imaging import images

    images.write_image(str(tmp_path / "cat.png"), skimage.data.chelsea()[:40, :48])
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO
    args = [sys.executable, "-m", "kperceptual.stylize", "--model=starry_night", "cat.png"]
    quiet = subprocess.run(args + ["--output=a"], cwd=tmp_path, env=env, capture_output=True,
                           text=True)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    loud = subprocess.run(args + ["--output=b", "--verbosity=1"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert loud.returncode == 0 and "oneDNN" in loud.stderr


def test_every_pipeline_flagfile_reads_and_validates():
    # pipelines/*.flags say how each shipped model was made, and the README's first command
    # runs one: each gives a config that passes every check train makes before it trains
    # (train.config_from_flags). A later piece of a run starts from an earlier piece's output
    # under runs/, which a fresh clone lacks: that one flag is left out for it. The data most
    # of them name are in ../shared; without it only those needing it may fail, and only on
    # it. One process, no training.
    script = """
import contextlib, glob, io, json
from absl import flags
from kperceptual import cli, train
def check(args):
    flags.FLAGS.unparse_flags()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            cli.flags_parser(train.PROGRAM)([train.PROGRAM, *args])
            train.config_from_flags()
        return "ok"
    except BaseException as e:
        return f"{type(e).__name__}: {e} {stderr.getvalue().strip()}"
results = {}
for path in sorted(glob.glob("pipelines/*.flags")):
    results[path] = check(["--flagfile=" + path])
    if "--init_from: runs/" in results[path]:
        results[path] = "later piece: " + check(["--flagfile=" + path, "--init_from="])
print(json.dumps(results))
"""
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["pipelines/quickstart.flags"] == "ok" and len(results) >= 10
    failed = {path: r for path, r in results.items() if r not in ("ok", "later piece: ok")}
    if not os.path.isdir(SHARED_DATA):
        failed = {path: r for path, r in failed.items() if "../shared/" not in r}
    assert failed == {}
