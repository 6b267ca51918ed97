"""Device identity: canonical GPU names, NVML field extraction (fake pynvml), CUDA_VISIBLE_DEVICES, CPU identity."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch

from zennas.errors import ConfigError, DependencyError, TimingError
from zennas.latency import device as dev
from zennas.latency.device import (
    CLOCK_EVENT_REASONS,
    canonical_gpu_name,
    clock_event_names,
    cpu_identity,
    gpu_identity,
    identify,
    parse_device,
    visible_device_entry,
)

# REFERENCE 7.6 raw names (first block) and other names NVML reports, with the expected (family, variant).
NAMES = [
    ("Tesla V100-SXM2-32GB", "V100", "SXM2-32GB"),
    ("Tesla T4", "T4", ""),
    ("NVIDIA A100-SXM4-80GB", "A100", "SXM4-80GB"),
    ("NVIDIA H100 80GB HBM3", "H100", "80GB HBM3"),
    ("NVIDIA H100 PCIe", "H100", "PCIe"),
    ("NVIDIA H200", "H200", ""),
    ("NVIDIA L4", "L4", ""),
    ("NVIDIA GeForce RTX 4090", "RTX4090", ""),
    ("NVIDIA RTX A6000", "RTXA6000", ""),
    ("NVIDIA RTX 6000 Ada Generation", "RTX6000Ada", ""),
    ("NVIDIA A100-SXM4-40GB MIG 1g.10gb", "A100", "SXM4-40GB MIG 1g.10gb"),
    ("NVIDIA H100 80GB HBM3 MIG 3g.40gb", "H100", "80GB HBM3 MIG 3g.40gb"),
    ("NVIDIA A10G", "A10G", ""),
    ("NVIDIA L40S", "L40S", ""),
    ("NVIDIA B200", "B200", ""),
    ("NVIDIA H20", "H20", ""),
    ("NVIDIA A100-PCIE-40GB", "A100", "PCIE-40GB"),
    ("NVIDIA A100 80GB PCIe", "A100", "80GB PCIe"),
    ("Tesla V100S-PCIE-32GB", "V100S", "PCIE-32GB"),
    ("Tesla P100-PCIE-16GB", "P100", "PCIE-16GB"),
    ("NVIDIA H100 NVL", "H100", "NVL"),
    ("NVIDIA GH200 480GB", "GH200", "480GB"),
    ("Quadro RTX 8000", "RTX8000", ""),
    ("NVIDIA GeForce RTX 3080 Ti", "RTX3080Ti", ""),
    ("NVIDIA GeForce RTX 4090 Laptop GPU", "RTX4090", "Laptop GPU"),
    ("Quadro P5000", "P5000", ""),
    # unknown shapes: the cleaned name, never an exception
    ("NVIDIA TITAN V", "TITAN V", ""),
    ("NVIDIA TITAN RTX", "TITAN RTX", ""),
    ("NVIDIA GeForce GTX 1080 Ti", "GTX 1080 Ti", ""),
    ("", "", ""),
]


@pytest.mark.parametrize(("raw", "family", "variant"), NAMES)
def test_canonical_gpu_name(raw, family, variant):
    assert canonical_gpu_name(raw) == (family, variant)


def test_canonical_gpu_name_decodes_bytes_and_spaces():
    assert canonical_gpu_name(b"Tesla V100-SXM2-32GB") == ("V100", "SXM2-32GB")
    assert canonical_gpu_name("  NVIDIA   H100   PCIe ") == ("H100", "PCIe")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("cpu", ("cpu", None)), ("cuda", ("cuda", 0)), ("cuda:3", ("cuda", 3)), ("CUDA:1", ("cuda", 1))],
)
def test_parse_device(text, expected):
    assert parse_device(text) == expected


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:-1", "mps", "cuda:a"])
def test_parse_device_rejects(text):
    with pytest.raises(ConfigError, match="cpu', 'cuda' or 'cuda:N'"):
        parse_device(text)


def test_visible_device_entry():
    assert visible_device_entry(1, None) == 1
    assert visible_device_entry(0, "2,0") == 2
    assert visible_device_entry(1, " 2 , 0 ") == 0
    assert visible_device_entry(0, "GPU-abc12,1") == "GPU-abc12"
    assert visible_device_entry(0, "MIG-1234") == "MIG-1234"
    with pytest.raises(TimingError, match="exposes 1 device"):  # CUDA stops at the first invalid entry
        visible_device_entry(1, "0,bogus,1")
    with pytest.raises(TimingError, match="exposes 0 device"):
        visible_device_entry(0, "")
    with pytest.raises(ConfigError):
        visible_device_entry(-1, None)


def test_clock_event_names():
    assert clock_event_names(0) == []
    assert clock_event_names(0x1 | 0x4 | 0x40) == ["gpu_idle", "sw_power_cap", "hw_thermal_slowdown"]
    assert clock_event_names(0x800 | 0x8) == ["hw_slowdown", "unknown_0x800"]


def test_clock_event_bits_match_nvidia_ml_py():
    pynvml = pytest.importorskip("pynvml")
    names = {
        "GpuIdle": "gpu_idle",
        "ApplicationsClocksSetting": "applications_clocks_setting",
        "SwPowerCap": "sw_power_cap",
        "HwSlowdown": "hw_slowdown",
        "SyncBoost": "sync_boost",
        "SwThermalSlowdown": "sw_thermal_slowdown",
        "HwThermalSlowdown": "hw_thermal_slowdown",
        "HwPowerBrakeSlowdown": "hw_power_brake_slowdown",
        "DisplayClockSetting": "display_clock_setting",
    }
    for nvml_name, ours in names.items():
        bit = getattr(pynvml, f"nvmlClocksEventReason{nvml_name}")
        assert CLOCK_EVENT_REASONS[bit] == ours


class NotSupportedError(Exception):
    """What NVML raises for a query the device does not support."""


DEVICES = [
    {
        "name": b"Tesla V100-SXM2-32GB",  # old bindings return bytes
        "uuid": b"GPU-aaaa1111",
        "cc": (7, 0),
        "total": 34359738368,
        "pci": (0x1DB5 << 16) | 0x10DE,
        "bus": b"00000000:06:00.0",
        "sm": 1530,
        "max_sm": 1530,
        "power_mw": 300000,
        "temp": 41,
        "reasons": 0x1,
        "mig": None,  # not supported on V100
    },
    {
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-bbbb2222",
        "cc": (9, 0),
        "total": 85520809984,
        "pci": (0x2330 << 16) | 0x10DE,
        "bus": "00000000:19:00.0",
        "sm": 1755,
        "max_sm": 1980,
        "power_mw": 700000,
        "temp": 63,
        "reasons": 0x4 | 0x40,
        "mig": [0, 0],
    },
]


def fake_pynvml(devices=DEVICES, *, init_error: Exception | None = None) -> types.ModuleType:
    """A pynvml stand-in over `devices`; handles are indices, every call is logged in `calls`."""
    nvml = types.ModuleType("pynvml")
    nvml.calls = []
    nvml.NVML_CLOCK_SM = 1
    nvml.NVML_TEMPERATURE_GPU = 0

    def log(name):
        def wrap(fn):
            def inner(*args):
                nvml.calls.append(name)
                return fn(*args)

            return inner

        return wrap

    def init():
        if init_error is not None:
            raise init_error

    def mig(h):
        if devices[h]["mig"] is None:
            raise NotSupportedError("Not Supported")
        return devices[h]["mig"]

    def by_uuid(uuid):
        for i, d in enumerate(devices):
            if dev.decode_name(d["uuid"]) == uuid:
                return i
        raise NotSupportedError("Not Found")

    nvml.nvmlInit = log("init")(init)
    nvml.nvmlShutdown = log("shutdown")(lambda: None)
    nvml.nvmlDeviceGetCount = lambda: len(devices)
    nvml.nvmlDeviceGetHandleByIndex = log("by_index")(lambda i: i)
    nvml.nvmlDeviceGetHandleByUUID = log("by_uuid")(by_uuid)
    nvml.nvmlDeviceGetName = lambda h: devices[h]["name"]
    nvml.nvmlDeviceGetUUID = lambda h: devices[h]["uuid"]
    nvml.nvmlDeviceGetCudaComputeCapability = lambda h: devices[h]["cc"]
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=devices[h]["total"], used=0, free=0)
    nvml.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(pciDeviceId=devices[h]["pci"], busId=devices[h]["bus"])
    nvml.nvmlSystemGetDriverVersion = lambda: b"550.54.15"
    nvml.nvmlSystemGetCudaDriverVersion = lambda: 12040
    nvml.nvmlDeviceGetClockInfo = lambda h, clock: devices[h]["sm"]
    nvml.nvmlDeviceGetMaxClockInfo = lambda h, clock: devices[h]["max_sm"]
    nvml.nvmlDeviceGetPowerManagementLimit = lambda h: devices[h]["power_mw"]
    nvml.nvmlDeviceGetTemperature = lambda h, sensor: devices[h]["temp"]
    nvml.nvmlDeviceGetCurrentClocksEventReasons = lambda h: devices[h]["reasons"]
    nvml.nvmlDeviceGetMigMode = mig
    return nvml


@pytest.fixture
def nvml(monkeypatch):
    """The fake pynvml installed; torch reports no CUDA UUID and CUDA_VISIBLE_DEVICES is unset."""
    fake = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(dev, "_torch_uuid", lambda index: None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return fake


def test_gpu_identity_fields(nvml):
    ident = gpu_identity(0)
    assert ident["name"] == "Tesla V100-SXM2-32GB"
    assert (ident["family"], ident["variant"]) == ("V100", "SXM2-32GB")
    assert ident["uuid"] == "GPU-aaaa1111"
    assert ident["pci_device_id"] == "0x1db5"
    assert ident["pci_bus_id"] == "00000000:06:00.0"
    assert ident["compute_capability"] == "7.0"
    assert ident["memory_total_bytes"] == 34359738368
    assert ident["driver_version"] == "550.54.15"
    assert ident["cuda_driver_version"] == "12.4"
    assert (ident["sm_clock_mhz"], ident["max_sm_clock_mhz"]) == (1530, 1530)
    assert ident["power_limit_w"] == 300.0
    assert ident["temperature_c"] == 41
    assert ident["clock_event_reasons"] == ["gpu_idle"]
    assert ident["mig_mode"] is None  # NotSupportedError -> None, not a crash
    assert ident["torch_cuda"] == torch.version.cuda
    assert "cudnn" in ident
    assert nvml.calls[0] == "init" and nvml.calls[-1] == "shutdown"
    json.dumps(ident)


def test_gpu_identity_second_device_throttled(nvml):
    ident = gpu_identity(1)
    assert (ident["family"], ident["variant"], ident["compute_capability"]) == ("H100", "80GB HBM3", "9.0")
    assert ident["clock_event_reasons"] == ["sw_power_cap", "hw_thermal_slowdown"]
    assert ident["mig_mode"] is False


def test_cuda_visible_devices_integer_list(nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    assert gpu_identity(0)["uuid"] == "GPU-bbbb2222"
    assert gpu_identity(1)["uuid"] == "GPU-aaaa1111"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    with pytest.raises(TimingError, match="NVML sees only 2"):
        gpu_identity(0)


def test_cuda_visible_devices_uuid_and_prefix(nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb2222,GPU-aaaa")
    assert gpu_identity(0)["family"] == "H100"
    assert gpu_identity(1)["family"] == "V100"  # a UUID prefix, as CUDA accepts
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-ffff")
    with pytest.raises(TimingError, match="matches no NVML device"):
        gpu_identity(0)


def test_torch_uuid_wins_over_environment(nvml, monkeypatch):
    monkeypatch.setattr(dev, "_torch_uuid", lambda index: "GPU-bbbb2222")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert gpu_identity(0)["family"] == "H100"
    assert "by_uuid" in nvml.calls


def test_no_driver_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(init_error=RuntimeError("NVML Shared Library Not Found")))
    with pytest.raises(TimingError) as info:
        gpu_identity(0)
    message = str(info.value)
    assert message.startswith("no NVIDIA driver/GPU") and "NVML Shared Library Not Found" in message
    assert "\n" not in message


def test_missing_nvidia_ml_py(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    with pytest.raises(DependencyError, match="pip install nvidia-ml-py") as info:
        gpu_identity(0)
    assert "\n" not in str(info.value)


def test_cpu_identity():
    ident = cpu_identity()
    assert ident["kind"] == "cpu" and isinstance(ident["name"], str) and ident["name"]
    assert ident["logical_cores"] >= 1 and ident["usable_cores"] >= 1
    assert ident["torch_threads"] == torch.get_num_threads()
    assert ident["torch"] == torch.__version__
    json.dumps(ident)


def test_identify_dispatch(nvml):
    assert identify("cpu")["kind"] == "cpu"
    ident = identify("cuda:1")
    assert ident["family"] == "H100" and ident["index"] == 1 and ident["host"]["kind"] == "cpu"
    assert identify("cuda")["family"] == "V100"
    with pytest.raises(ConfigError):
        identify("tpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_gpu_identity():
    ident = identify("cuda")
    assert ident["family"] and ident["compute_capability"]
    raw = torch.cuda.get_device_name(0)
    assert canonical_gpu_name(raw)[0] == ident["family"]
    json.dumps(ident)
