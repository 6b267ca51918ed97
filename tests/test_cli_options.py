"""The CLI package: train options generated from the configs, shared choices agree, and a cheap start."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from cli import main
from zennas.cli.fields import Flag, config_options
from zennas.train import config as cfg

COMMANDS = {
    "classification": cfg.TrainConfig,
    "longtail": cfg.LongtailConfig,
    "detection": cfg.DetectionConfig,
    "reid": cfg.ReidConfig,
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_config_field_is_an_option_with_the_config_default(command):
    config = COMMANDS[command]
    params = {p.name: p for p in main.commands["train"].commands[command].params}
    fields = dataclasses.fields(config)
    assert sorted(params) == sorted(f.name for f in fields)
    for f in fields:
        p = params[f.name]
        if f.default is dataclasses.MISSING:
            assert p.required, f.name
        else:
            assert not p.required and p.default == f.default, (f.name, p.default, f.default)


def test_options_parse_into_the_config_the_library_would_build(tmp_path):
    seen = {}

    @click.command()
    @config_options(cfg.ReidConfig, {"p": Flag(decls=("--ids-per-batch", "-P"))})
    def probe(**options):
        seen["config"] = cfg.ReidConfig(**options)

    args = ["--data", "d", "--out", "o", "--arch", "a", "-P", "8", "--no-channels-last", "--rerank"]
    result = CliRunner().invoke(probe, args)
    assert result.exit_code == 0, result.output
    assert seen["config"] == cfg.ReidConfig(data="d", out="o", arch="a", p=8, channels_last=False, rerank=True)


def test_a_flag_for_a_field_the_config_lacks_is_refused():
    with pytest.raises(TypeError, match="TrainConfig has no field no_such_field"):
        config_options(cfg.TrainConfig, {"no_such_field": Flag("x")})


def test_a_required_field_is_a_required_option():
    result = CliRunner().invoke(main, ["train", "classification", "--data", "x", "--arch", "zennet-cifar10-1m"])
    assert result.exit_code == 2 and "Missing option '--out'" in result.output


def test_the_torch_free_choices_agree_with_the_torch_modules():
    from zennas.export import EXPORTERS
    from zennas.train.core import AMP_DTYPES
    from zennas.train.longtail import METHODS
    from zennas.train.methods import RECIPES

    assert cfg.ONNX_EXPORTERS == EXPORTERS
    assert (*AMP_DTYPES, "off") == cfg.AMP_MODES
    assert tuple(RECIPES) == cfg.LONGTAIL_METHODS == METHODS


def test_the_command_line_starts_without_torch():
    code = "import sys; from cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
    code += "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")
