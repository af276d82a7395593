"""config.json's Grad-CAM layer: recorded when exported, taken from the architecture for older files, checked."""

from __future__ import annotations

import json

import pytest
from test_server_support import source_model

from miscause import repository
from miscause.errors import MiscauseError
from miscause.grad_cam_layers import GRAD_CAM_LAYERS


def test_older_config_gets_its_architectures_layer_and_round_trips(tmp_path):
    raw = json.loads((source_model() / repository.CONFIG).read_text())
    raw.pop("grad_cam_layer", None)
    config = repository.ModelConfig.from_json(raw, "config.json")
    assert config.grad_cam_layer == GRAD_CAM_LAYERS[config.architecture]
    assert config.saliency_options("grad_cam") == {"layer": config.grad_cam_layer}
    assert config.saliency_options("gradient") == {}
    repository.write_config(tmp_path, config)
    assert json.loads((tmp_path / repository.CONFIG).read_text())["grad_cam_layer"] == config.grad_cam_layer
    assert repository.read_config(tmp_path) == config


def test_recorded_layer_wins_and_a_bad_one_is_a_clear_error():
    raw = json.loads((source_model() / repository.CONFIG).read_text())
    assert repository.ModelConfig.from_json({**raw, "grad_cam_layer": "groups.1"}, "c").grad_cam_layer == "groups.1"
    with pytest.raises(MiscauseError, match="c: grad_cam_layer must be a layer name, got 3"):
        repository.ModelConfig.from_json({**raw, "grad_cam_layer": 3}, "c")
    unknown = repository.ModelConfig.from_json({**raw, "architecture": "mlp"}, "c")
    assert unknown.grad_cam_layer is None and "grad_cam_layer" not in unknown.to_json()
    with pytest.raises(MiscauseError, match="no Grad-CAM layer for architecture 'mlp'"):
        unknown.saliency_options("grad_cam")
