"""Issue 15, item 10: TF Serving's models.config is read and written as the ModelServerConfig
text proto it is: comments, other entries and quotes are safe."""

import os

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from kperceptual.serving import tf_saved_model


def _parsed(path):
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(open(path, encoding="utf-8").read(), config)
    return {c.name: c.base_path for c in config.model_config_list.config}


def test_a_file_starting_with_a_comment_is_read_and_its_comments_kept(tmp_path):
    path = tmp_path / "models.config"
    path.write_text('# served by the team\nmodel_config_list {\n  # the old one\n'
                    '  config { name: "old" base_path: "/models/old" '
                    'model_platform: "tensorflow" }  # brace } in a comment\n}\n# end\n')
    _, added = tf_saved_model.update_models_config(str(tmp_path), "new", "/models/new")
    assert added
    text = path.read_text()
    for comment in ("# served by the team", "# the old one", "# brace } in a comment",
                    "# end"):
        assert comment in text
    assert _parsed(path) == {"old": "/models/old", "new": "/models/new"}


def test_a_quote_in_the_base_path_cannot_inject_an_entry(tmp_path):
    evil = '/models/x" } config { name: "injected" base_path: "/etc'
    tf_saved_model.update_models_config(str(tmp_path), "x", evil)
    assert _parsed(tmp_path / "models.config") == {"x": evil}


def test_a_file_tf_serving_would_not_read_is_one_line_and_kept(tmp_path):
    path = tmp_path / "models.config"
    path.write_text("model_config_list { config { name: 3 } }")
    with pytest.raises(ValueError, match="models.config: not a TF Serving model config") as e:
        tf_saved_model.update_models_config(str(tmp_path), "x", "/models/x")
    assert "\n" not in str(e.value)
    assert path.read_text() == "model_config_list { config { name: 3 } }"


def test_an_empty_or_comment_only_file_gets_the_entry(tmp_path):
    path = tmp_path / "models.config"
    path.write_text("# to be filled\n")
    tf_saved_model.update_models_config(str(tmp_path), "x", "/models/x")
    assert path.read_text().startswith("# to be filled\n")
    assert _parsed(path) == {"x": "/models/x"}
    assert not [f for f in os.listdir(tmp_path) if f != "models.config"]
