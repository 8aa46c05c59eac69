"""Runs one ``python -m kperceptual.<verb>`` command's main on many argument lists in one
process, as ``app.run`` would (the same flags parser, every flag reset to its default before
each), so the tests of its one-line errors pay one start-up of TensorFlow instead of one each.
Prints one JSON line: a list of {"returncode", "stderr"}, one per case.

    python tests/cli_cases.py VERB CASES_JSON

CASES_JSON is a JSON list of argument lists (without the program name). An exception main
lets out is the case's stderr (its traceback) with return code 1, as Python would exit.
``helpers.assert_one_line_errors`` runs it, and runs the first case as the real command too (a
``python -m`` process), which must end the same way.
"""

import contextlib
import importlib
import io
import json
import os
import sys
import traceback

# This tree's package, not an installed copy (run as a script, sys.path[0] is tests/).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_case(module, args):
    from absl import flags

    from kperceptual import cli

    stderr = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(stderr):
        try:
            flags.FLAGS.unparse_flags()
            argv = cli.flags_parser(module.PROGRAM)([module.PROGRAM, *args])
            code = module.main(argv) or 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, (int, type(None))):
                print(e.code, file=sys.stderr)
        except Exception:
            traceback.print_exc()
            code = 1
    return {"returncode": code, "stderr": stderr.getvalue()}


def main():
    verb, cases = sys.argv[1], json.loads(sys.argv[2])
    module = importlib.import_module(f"kperceptual.{verb}")
    results = [run_case(module, args) for args in cases]
    sys.stdout.flush()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
