"""List the models a name loads: ``python -m kperceptual.models [--models_dir=DIR]``.

Your own models (``--models_dir``) first, then the shipped ones, each with its version, task
and styles. A thin command over ``kperceptual.inference.loading.available_models``.
"""

from kperceptual.inference.loading import available_models
from kperceptual.serving.layout import user_models_dir

def main(argv):
    """``python -m kperceptual.models [--models_dir=DIR]``: the models a name loads."""
    from absl import flags

    del argv
    rows = available_models(flags.FLAGS.models_dir)
    if not rows:
        print(f"no models in {flags.FLAGS.models_dir}/ and none shipped")
    for m in rows:
        what = (f"super-resolution x{m['scale']} ({m['loss']})" if m["task"] == "super_resolution"
                else f"style: {', '.join(m['styles'])}" if m["styles"] else m["task"])
        note = " (shadowed by yours: the name loads yours)" if m["shadowed"] else ""
        print(f"{m['name']:<16} v{m['version']:<3} {m['source']:<8} {what}{note}\n"
              f"{'':<16} {m['path']}")


if __name__ == "__main__":
    from absl import app, flags

    from kperceptual import cli

    flags.DEFINE_string("models_dir", user_models_dir(), "Your models (TF Serving's layout); the "
                                                     "shipped ones are listed after them.")
    app.run(main, flags_parser=cli.flags_parser("kperceptual.models"))
