"""Model registry, create_model, and the CLI contract (help, JSON, errors)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import param_count

import cli
import zennas
from zennas.errors import UnknownModelError
from zennas.models import ModelEntry, get_model_entry, list_models, register_model

EXPECTED_NAMES = {
    "zennet-400m-se": "zennet_imagenet1k_flops400M_SE_res224",
    "zennet-0.8ms": "zennet_imagenet1k_latency08ms_res224",
    "zennet-1.2ms": "zennet_imagenet1k_latency12ms_res224",
    "zennet-cifar10-1m": "zennet_cifar10_model_size1M_res32",
    "zennet-cifar100-0.5m": "zennet_cifar100_model_size05M_res32",
    "zennet-v1-400m-se": "zennet_imagenet1k_flops400M_SE_res192",
    "genet-light": "GENet_small",
    "genet-normal": "GENet_normal",
    "genet-large": "GENet_large",
}


def test_every_zoo_model_has_a_readable_name(zoo):
    names = list_models()
    assert len(names) == len(zoo) == 25
    for name, source in EXPECTED_NAMES.items():
        assert get_model_entry(name).source_name == source
    assert get_model_entry("ZenNet-400M-SE").name == "zennet-400m-se"  # case-insensitive


def test_registry_settings_come_from_the_zoo(zoo):
    by_source = {(e["name"], e["status"].split(" ")[0]): e for e in zoo}
    for name in list_models():
        entry = get_model_entry(name)
        z = by_source[(entry.source_name, entry.status)]
        assert (entry.num_classes, entry.use_se, entry.arch) == (z["num_classes"], z["use_se"], z["arch_string"])


def test_wildcards():
    assert list_models("genet-*") == ["genet-large", "genet-light", "genet-normal"]
    assert list_models("zennet-[0-9]*m-se") == ["zennet-400m-se", "zennet-600m-se", "zennet-900m-se"]
    assert list_models("zennet-v1-*") == [
        "zennet-v1-0.1ms", "zennet-v1-0.2ms", "zennet-v1-0.3ms", "zennet-v1-0.5ms", "zennet-v1-0.8ms",
        "zennet-v1-400m-se", "zennet-v1-600m-se",
    ]  # fmt: skip
    assert list_models("zennet-?.?ms") == [f"zennet-{t}ms" for t in ("0.1", "0.2", "0.3", "0.5", "0.8", "1.2")]
    assert list_models("nothing*") == []


def test_duplicates_rejected_and_unknown_names_explained():
    with pytest.raises(ValueError, match="already registered"):
        register_model(ModelEntry("genet-light", "x", 1, 1, False, "GENet", "d", "current", "x"))
    with pytest.raises(UnknownModelError, match="neither a registered model nor an architecture string"):
        zennas.create_model("zennet-404m")


def test_create_model_builds_registered_and_raw_architectures(zoo):
    net = zennas.create_model("zennet-cifar10-0.5m")
    golden = next(e for e in zoo if e["name"] == "zennet_cifar10_model_size05M_res32")
    assert param_count(net) == golden["computed_for_this_report"]["learnable_params_incl_BN_affine"]
    assert tuple(net(torch.zeros(2, 3, 32, 32)).shape) == (2, 10)
    raw = zennas.create_model("SuperConvK3BNRELU(3,8,2,1)SuperConvK1BNRELU(8,16,1,1)", num_classes=5)
    assert tuple(raw(torch.zeros(1, 3, 16, 16)).shape) == (1, 5)
    # The SE flag follows the zoo unless overridden.
    se = zennas.create_model("zennet-cifar10-0.5m", use_se=True)
    assert param_count(se) > param_count(net)


def test_import_zennas_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, zennas, zennas.arch, zennas.counting, zennas.models; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- CLI --------------------------------------------------------------------------------------


def run(*args: str):
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("command", [[], ["info"], ["models"], ["spaces"]])
def test_help(command):
    result = run(*command, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output


def test_info_json_of_a_published_model(zoo):
    result = run("info", "zennet-400m-se", "--convention", "zennas", "--json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    golden = next(e for e in zoo if e["name"] == "zennet_imagenet1k_flops400M_SE_res224")["computed_for_this_report"]
    assert data["params"] == golden["learnable_params_incl_BN_affine"]
    assert data["macs"] == golden["conv_linear_MACs"]
    assert data["flops"] == golden["repo_get_FLOPs_convention_without_SE"]
    assert data["layers"] == golden["sum_of_sub_layers"]
    assert data["dialect"] == "zennas-v1" and data["use_se"] is True
    assert data["canonical"].startswith("SuperConvK3BNRELU(3,16,2,1)")
    assert [s["stride"] for s in data["stages"]] == [2, 4, 8, 16, 32]
    assert data["stages"][-1]["shape"] == [2048, 7, 7]


def test_info_options_change_the_figures():
    base = json.loads(run("info", "genet-light", "--json").output)
    backbone = json.loads(run("info", "genet-light", "--num-classes", "0", "--json").output)
    assert base["params"] - backbone["params"] == 1920 * 1000 + 1000
    assert base["macs"] - backbone["macs"] == 1920 * 1000
    small = json.loads(run("info", "genet-light", "--resolution", "96", "--json").output)
    assert small["stages"][-1]["shape"] == [1920, 3, 3]
    no_se = json.loads(run("info", "zennet-400m-se", "--no-se", "--json").output)
    assert no_se["params"] == 5_698_208


def test_info_reads_strings_and_files(tmp_path):
    text = "SuperConvK3BNRELU(3,8,2,1)SuperResK3K3(8,16,2,8,1)SuperConvK1BNRELU(16,32,1,1)"
    from_text = json.loads(run("info", text, "--resolution", "32", "--num-classes", "10", "--json").output)
    path = tmp_path / "arch.txt"
    path.write_text(text + "\n")
    from_file = json.loads(run("info", str(path), "--resolution", "32", "--num-classes", "10", "--json").output)
    assert from_text == from_file
    # conv 3x3 3->8 s2 + BN, K3K3 unit with projection, 1x1 head conv + BN, Linear 32->10:
    expected = (3 * 8 * 9 + 16) + (8 * 8 * 9 + 16 + 8 * 16 * 9 + 32 + 8 * 16 + 16 + 32) + (16 * 32 + 64) + 330
    assert from_text["params"] == expected
    human = run("info", text)
    assert human.exit_code == 0 and "params" in human.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["info", "zennet-404m"], "neither a registered model"),
        (["info", "SuperConvK3BNRELU(3,8,2,1)SuperConvK1BNRELU(9,16,1,1)"], "takes 9 input channels"),
        (["info", "SuperConvK3BNRELU(3,8,2"], "unbalanced parentheses"),
        (["info", "genet-light", "--convention", "zennas"], "does not apply to genet"),
        (["info", "genet-light", "--dialect", "klingon"], "unknown dialect"),
        (["models", "nothing*"], "no model matches"),
    ],
)
def test_errors_are_one_line_and_non_zero(args, message):
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code != 0
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_models_and_spaces_listing():
    result = run("models", "genet-*")
    assert result.exit_code == 0 and [line.split()[0] for line in result.output.splitlines()[1:]] == [
        "genet-large",
        "genet-light",
        "genet-normal",
    ]
    rows = json.loads(run("models", "--json").output)
    assert len(rows) == 25 and {"name", "resolution", "use_se", "num_classes"} <= set(rows[0])
    spaces = run("spaces")
    assert spaces.exit_code == 0
    listed = {line.split()[0] for line in spaces.output.splitlines()}
    assert {"zennas-res", "zennas-idw", "genet", "maedet", "deepmad-se", "binas", "nb201"} <= listed


def test_info_accepts_every_dialect(tmp_path):
    binas = (
        "[['ds_r1_k3_s1_e1_c16_nre'], ['ir_r1_k3_s2_e3_c24_nre', 'ir_r1_k3_s1_e3_c24_nre'], "
        "['ir_r1_k5_s2_e3_c40_nre', 'ir_r1_k5_s1_e3_c40_nre'], ['ir_r1_k5_s2_e3_c80', 'ir_r1_k5_s1_e3_c80'], "
        "['ir_r1_k5_s1_e3_c112', 'ir_r1_k5_s1_e3_c112'], ['ir_r1_k5_s2_e3_c192', 'ir_r1_k5_s1_e3_c192'], "
        "['cn_r1_k1_s1_c960']]"
    )  # longer than a file name may be: must be read as text, not crash in a path check
    tinynas = tmp_path / "best_structure.txt"
    tinynas.write_text(
        "{'space_arch': 'CnnNet', 'best_structures': [[{'class': 'ConvKXBNRELU', 'in': 3, 'out': 16, 's': 2, "
        "'k': 3}, {'class': 'SuperResK1KXK1', 'in': 16, 'out': 64, 's': 2, 'k': 3, 'L': 1, 'btn': 16}]]}"
    )
    nb201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|"
    seen = {}
    for arch in (binas, str(tinynas), nb201):
        result = CliRunner().invoke(cli.main, ["info", arch, "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        seen[data["dialect"]] = data
    assert set(seen) == {"binas", "tinynas", "nb201"}
    assert seen["tinynas"]["num_classes"] == 0  # TinyNAS structures are backbones by default
    assert seen["nb201"]["params"] == 802_426  # official NATS-Bench value for index 11 (0.802426 M)


def test_unreadable_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "arch.txt"
    bad.write_bytes(b"\xff\xfe")
    result = CliRunner().invoke(cli.main, ["info", str(bad)])
    assert result.exit_code == 1 and "cannot read architecture file" in result.output
    assert len(result.output.strip().splitlines()) == 1
