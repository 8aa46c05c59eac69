"""Runs one piece of a cross-backend or multi-worker test in its own process (the Keras backend
is fixed per process: KERAS_BACKEND). Prints one JSON line (the last line of stdout). A test on
this process's own backend (TensorFlow) may import it and call ``save`` and ``load`` in process.

    python tests/backend_worker.py train CONFIG_JSON WEIGHTS_NPZ [sgd] [--start=NPZ] [--no_export]
                                         [--one_device]
        trainer.train(StyleTrainingConfig(**config)) (with plain SGD: updates linear in the
        gradient, so runs that differ only in float rounding stay close); saves the weights.
        --start: first saves the weights it starts from, as ``initial`` does (no process of
        its own for them); --no_export: no SavedModel (for tests that compare weights only:
        off the TensorFlow backend an export is a TensorFlow process of its own);
        --one_device: JAX, the Distribution make_distribution gives a process with one device
        (no keras.distribution: the default device) whatever the devices of this one.
    python tests/backend_worker.py initial CONFIG_JSON WEIGHTS_NPZ
        saves the network weights trainer.train starts from (seeded with config.seed).
    python tests/backend_worker.py steps CONFIG_JSON BATCH_NPY STEPS
        the objective on a fixed batch before and after STEPS fit steps on it.
    python tests/backend_worker.py two_replicas CONFIG_JSON BATCH_NPY STEPS
        as steps, under a tensorflow MirroredStrategy over two logical CPUs (a process of its
        own: strategies in one process share collective keys).
    python tests/backend_worker.py train_two_replicas CONFIG_JSON WEIGHTS_NPZ
        trainer.train under a tensorflow MirroredStrategy over two logical CPUs (no export);
        saves each replica's copy of every network weight, as "REPLICA|PATH".
    python tests/backend_worker.py save FOLDER INPUT_NPY
        writes FOLDER/<backend>_{style,sr}.keras (seeded random networks) and their outputs.
    python tests/backend_worker.py load FOLDER INPUT_NPY
        loads every other backend's .keras files; writes this backend's outputs for them.
    python tests/backend_worker.py save_and_load FOLDER INPUT_NPY
        save, then load, in one process.
    python tests/backend_worker.py serve
        reads one command a line from stdin (a JSON list: the name and arguments above), runs
        it and prints its JSON line after REPLY, until stdin ends: one process (one backend
        start-up) for many commands (``helpers.worker_call``). A command's exception is its
        reply's "error" (the traceback); the process goes on.
"""

import json
import os
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# This tree's package, not an installed copy (run as a script, sys.path[0] is tests/).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kperceptual import config as config_lib  # noqa: E402
from kperceptual import choices  # noqa: E402
from kperceptual import networks
from kperceptual.training import trainer

BACKEND = keras.backend.backend()


def _config(text):
    values = json.loads(text)
    cls = (config_lib.SuperResolutionConfig if values.pop("task", "style") == "super_resolution"
           else config_lib.StyleTrainingConfig)
    return cls(**values)


def train(config_json, weights_path, optimizer="adam", *options):
    config = _config(config_json)
    export, distribution = trainer.export_saved_model, None
    for option in options:
        if option.startswith("--start="):
            initial(config_json, option[len("--start="):])  # train seeds again before building
        elif option == "--no_export":
            trainer.export_saved_model = lambda *args, **kwargs: None
        elif option == "--one_device":
            from kperceptual.training import distribute

            distribution = distribute.Distribution(config.strategy)
        else:
            raise SystemExit(f"backend_worker.py train: unknown option {option}")
    sgd = lambda: keras.optimizers.SGD(config.learning_rate)  # noqa: E731
    try:
        result = trainer.train(config, distribution, verbose=0,
                               optimizer=sgd if optimizer == "sgd" else None)
    finally:
        trainer.export_saved_model = export  # the next command of a served process exports
    np.savez(weights_path, *result.pop("network").get_weights())
    return result


def initial(config_json, weights_path):
    config = _config(config_json)
    keras.utils.set_random_seed(config.seed)  # as trainer.train does before building
    np.savez(weights_path, *trainer.build_trainer(config).network.get_weights())
    return {}


def _two_cpu_strategy():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def two_replicas(config_json, batch_path, count):
    return steps(config_json, batch_path, count, strategy=_two_cpu_strategy())


def train_two_replicas(config_json, weights_path):
    from kperceptual.training import distribute

    strategy = _two_cpu_strategy()
    built, build = [], trainer.build_trainer
    trainer.build_trainer = lambda *args, **kwargs: built.append(build(*args, **kwargs)) or \
        built[-1]
    trainer.export_saved_model = lambda *args, **kwargs: None  # (a process of its own)
    result = trainer.train(_config(config_json), distribute.Distribution(
        "mirrored", strategy=strategy, replicas=2), verbose=0)
    np.savez(weights_path, **{
        f"{replica}|{v.path}": keras.ops.convert_to_numpy(
            strategy.experimental_local_results(v.value)[replica])
        for v in built[0].network.weights for replica in range(2)})
    return {"steps": result["steps"], "replicas": strategy.num_replicas_in_sync}


def steps(config_json, batch_path, count, strategy=None):
    config = _config(config_json)
    keras.utils.set_random_seed(config.seed)
    with trainer.dtype_policy(config.precision):
        t = trainer.build_trainer(config, strategy,
                                  jit_compile=choices.JIT_COMPILE[config.jit_compile])
    batch = np.load(batch_path)

    def objective():
        x = keras.ops.convert_to_tensor(batch, "float32")
        return float(keras.ops.convert_to_numpy(t.compute_loss(x, None, t(x))))

    before = objective()
    history = t.fit(batch, batch_size=len(batch), epochs=int(count), shuffle=False, verbose=0)
    return {"before": before, "after": objective(), "history": history.history,
            "variable_dtypes": sorted({v.dtype for v in t.network.weights}),
            "optimizer": type(t.optimizer).__name__,
            "replicas": strategy.num_replicas_in_sync if strategy else 1}


def _networks():
    keras.utils.set_random_seed(len(BACKEND))  # different weights from each backend
    return {"style": networks.StyleTransferNetwork(),
            "sr": networks.SuperResolutionNetwork(scale=2, norm="batch")}


def _run(network, image):
    return keras.ops.convert_to_numpy(network(image, training=False))


def save(folder, input_path):
    image = np.load(input_path)
    for kind, network in _networks().items():
        network.save(os.path.join(folder, f"{BACKEND}_{kind}.keras"))
        np.save(os.path.join(folder, f"{BACKEND}_{kind}_by_{BACKEND}.npy"), _run(network, image))
    return {"saved": BACKEND}


def load(folder, input_path):
    image = np.load(input_path)
    loaded = {}
    for name in sorted(os.listdir(folder)):
        origin, _, rest = name.partition("_")
        if name.endswith(".keras") and origin != BACKEND:
            network = keras.saving.load_model(os.path.join(folder, name))
            np.save(os.path.join(folder, f"{name[:-6]}_by_{BACKEND}.npy"), _run(network, image))
            loaded[name] = type(network).__name__
    return {"loaded": loaded}


def save_and_load(folder, input_path):
    return {**save(folder, input_path), **load(folder, input_path)}


REPLY = "backend_worker reply: "  # what starts a served command's reply line


def serve():
    for line in iter(sys.stdin.readline, ""):
        command, *args = json.loads(line)
        try:
            reply = {"backend": BACKEND, **globals()[command](*args)}
        except (Exception, SystemExit):
            reply = {"backend": BACKEND, "error": traceback.format_exc()}
        print(REPLY + json.dumps(reply, default=str), flush=True)


if __name__ == "__main__":
    keras.config.disable_traceback_filtering()
    command, *args = sys.argv[1:]
    if command == "serve":
        serve()
    else:
        print(json.dumps({"backend": BACKEND, **globals()[command](*args)}, default=str))
