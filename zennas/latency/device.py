"""Who measured: GPU identity via nvidia-ml-py (NVML), CPU identity, and canonical GPU family names.

A latency number is only meaningful with the device that produced it. `identify(device)` returns a
JSON-ready dict recorded next to every timing: for a GPU the raw and canonical names, PCI device id,
compute capability, driver/CUDA/cuDNN versions and the clock state (SM clock, power limit,
temperature, clock-event reasons) read right after the measurement, so throttled runs can be flagged.

torch and pynvml are imported inside the functions: `canonical_gpu_name` stays importable anywhere.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from zennas.errors import ConfigError, DependencyError, TimingError

# NVML clock-event ("throttle") reason bits (nvml.h `nvmlClocksEventReason*`; stable across drivers).
CLOCK_EVENT_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# Reasons that mean the GPU ran below the clock it could otherwise sustain: a timing taken under them is flagged.
THROTTLE_REASONS = frozenset(
    {"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"}
)

_VENDOR_PREFIXES = ("NVIDIA ", "Tesla ", "Quadro ", "GeForce ")
# RTX model suffixes that belong to the family (RTX 6000 Ada != RTX 6000, RTX 3080 Ti != RTX 3080).
_RTX_SUFFIXES = {"ti": "Ti", "super": "SUPER", "ada": "Ada", "blackwell": "Blackwell"}
_RTX_DROP = {"generation"}
# Datacenter families: a letter from {A, B, H, L, P, T, V} + digits + optional upper-case suffix (A10G, L40S,
# V100S); an optional leading G covers the Grace superchips (GH200, GB200).
_FAMILY = re.compile(r"(?<![A-Za-z0-9])(G?[ABHLPTV]\d+[A-Z]*)(?=$|[\s\-_])")


def decode_name(raw: str | bytes) -> str:
    """A name from NVML as str: old bindings return bytes."""
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    return str(raw)


def canonical_gpu_name(raw: str | bytes) -> tuple[str, str]:
    """(family, variant) of an NVML device name, e.g. "Tesla V100-SXM2-32GB" -> ("V100", "SXM2-32GB").

    Vendor/brand prefixes ("NVIDIA ", "Tesla ", "Quadro ", "GeForce ") are stripped. RTX names map to
    RTX<model>[suffix] ("NVIDIA RTX 6000 Ada Generation" -> "RTX6000Ada", "NVIDIA RTX A6000" -> "RTXA6000");
    otherwise the family is the first token made of a letter in {A, B, H, L, P, T, V} and digits plus an
    upper-case suffix ("A10G", "L40S"). The variant keeps what remains: form factor, memory, MIG profile
    ("80GB HBM3", "PCIe", "SXM4-40GB MIG 1g.5gb"). A name matching neither rule (e.g. "TITAN V",
    "GTX 1080 Ti") never raises: its family is the cleaned name and its variant is "".
    """
    name = " ".join(decode_name(raw).split())
    stripped = True
    while stripped:
        stripped = False
        for prefix in _VENDOR_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix) :], True
    tokens = name.split(" ")
    if "RTX" in tokens:
        at = tokens.index("RTX")
        rest = tokens[at + 1 :]
        family = "RTX"
        if rest and rest[0].upper() == "PRO":
            family, rest = family + "PRO", rest[1:]
        if rest and any(c.isdigit() for c in rest[0]):
            family, rest = family + rest[0], rest[1:]
            variant = tokens[:at]
            for token in rest:
                if token.lower() in _RTX_SUFFIXES:
                    family += _RTX_SUFFIXES[token.lower()]
                elif token.lower() not in _RTX_DROP:
                    variant.append(token)
            return family, " ".join(variant)
    match = _FAMILY.search(name)
    if match is None:
        return name, ""
    variant = (name[: match.start()] + " " + name[match.end() :]).strip(" -_")
    return match.group(1), " ".join(variant.split())


def parse_device(device: str) -> tuple[str, int | None]:
    """'cpu' -> ('cpu', None); 'cuda' -> ('cuda', 0); 'cuda:N' -> ('cuda', N); anything else is a ConfigError."""
    text = str(device).strip().lower()
    if text == "cpu":
        return "cpu", None
    if text == "cuda":
        return "cuda", 0
    match = re.fullmatch(r"cuda:(\d+)", text)
    if match:
        return "cuda", int(match.group(1))
    raise ConfigError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")


def visible_device_entry(index: int, visible: str | None) -> int | str:
    """The NVML device behind CUDA device `index` under CUDA_VISIBLE_DEVICES=`visible`: an NVML index or a UUID.

    Entries are integers or GPU-/MIG- UUIDs (a UUID prefix is allowed, as in CUDA). Like CUDA, parsing stops
    at the first invalid entry. Unset means every device in NVML order; an empty value hides all GPUs.
    CUDA enumerates fastest-first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, so integer mapping is exact only then
    or with one GPU; `gpu_identity` prefers the UUID torch reports when it can.
    """
    if index < 0:
        raise ConfigError(f"CUDA device index must be >= 0, got {index}")
    if visible is None:
        return index
    entries: list[int | str] = []
    for raw in visible.split(","):
        entry = raw.strip()
        if re.fullmatch(r"\d+", entry):
            entries.append(int(entry))
        elif entry.startswith(("GPU-", "MIG-")):
            entries.append(entry)
        else:
            break
    if index >= len(entries):
        raise TimingError(
            f"CUDA device {index} is not visible: CUDA_VISIBLE_DEVICES={visible!r} exposes {len(entries)} device(s)"
        )
    return entries[index]


def _nvml() -> Any:
    """The pynvml module, initialised; DependencyError/TimingError in one line when there is no driver or GPU."""
    try:
        import pynvml
    except ImportError as exc:
        raise DependencyError(
            "nvidia-ml-py is required for GPU identity: pip install nvidia-ml-py (import name pynvml)"
        ) from exc
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        raise TimingError(f"no NVIDIA driver/GPU: NVML failed to initialise ({exc})") from exc
    return pynvml


@contextmanager
def _nvml_session() -> Iterator[Any]:
    """pynvml between nvmlInit and nvmlShutdown."""
    nvml = _nvml()
    try:
        yield nvml
    finally:
        with suppress(Exception):  # shutdown failing must not hide the identity or the original error
            nvml.nvmlShutdown()


def _torch_uuid(index: int) -> str | None:
    """The UUID torch sees for CUDA device `index` ('GPU-...'), or None when torch/CUDA cannot tell."""
    try:
        import torch

        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            return None
        uuid = str(torch.cuda.get_device_properties(index).uuid)
    except Exception:
        return None
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"


def _handle(nvml: Any, index: int) -> Any:
    """NVML handle of CUDA device `index`: by torch's UUID when known, else through CUDA_VISIBLE_DEVICES."""
    uuid = _torch_uuid(index)
    if uuid is not None:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(uuid)
        except Exception:
            pass  # e.g. a MIG UUID on an older driver: fall back to the environment mapping
    entry = visible_device_entry(index, os.environ.get("CUDA_VISIBLE_DEVICES"))
    count = nvml.nvmlDeviceGetCount()
    if isinstance(entry, int):
        if entry >= count:
            raise TimingError(f"CUDA device {index} maps to NVML device {entry}, but NVML sees only {count}")
        return nvml.nvmlDeviceGetHandleByIndex(entry)
    for i in range(count):  # full UUID or a prefix of one
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        if decode_name(nvml.nvmlDeviceGetUUID(handle)).startswith(entry):
            return handle
    try:
        return nvml.nvmlDeviceGetHandleByUUID(entry)  # MIG instances are not enumerated by index
    except Exception as exc:
        raise TimingError(f"CUDA_VISIBLE_DEVICES entry {entry!r} matches no NVML device") from exc


def clock_event_names(mask: int) -> list[str]:
    """Names of the NVML clock-event (throttle) reason bits set in `mask`; unknown bits as hex."""
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENT_REASONS)
    if unknown:
        names.append(f"unknown_{unknown:#x}")
    return names


def _query(fn: Any, *args: Any) -> Any:
    """One NVML query; None when this device/driver does not support it (NVML raises NotSupported)."""
    try:
        return fn(*args)
    except Exception:
        return None


def _torch_cuda_versions() -> dict[str, Any]:
    """torch's CUDA runtime and cuDNN versions (None when not built with them)."""
    try:
        import torch
    except ImportError:
        return {"torch_cuda": None, "cudnn": None}
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"torch_cuda": torch.version.cuda, "cudnn": cudnn}


def gpu_identity(index: int = 0) -> dict[str, Any]:
    """NVML identity and clock state of CUDA device `index` (torch numbering, CUDA_VISIBLE_DEVICES respected).

    Units: memory in bytes, clocks in MHz, power in watts, temperature in degrees C. Fields a device does
    not support are None. Raises DependencyError without nvidia-ml-py, TimingError without a driver/GPU.
    """
    with _nvml_session() as nvml:
        handle = _handle(nvml, index)
        raw = decode_name(nvml.nvmlDeviceGetName(handle))
        family, variant = canonical_gpu_name(raw)
        cc = _query(nvml.nvmlDeviceGetCudaComputeCapability, handle)
        memory = _query(nvml.nvmlDeviceGetMemoryInfo, handle)
        pci = _query(nvml.nvmlDeviceGetPciInfo, handle)
        cuda_driver = _query(nvml.nvmlSystemGetCudaDriverVersion)
        power_mw = _query(nvml.nvmlDeviceGetPowerManagementLimit, handle)
        reasons = _query(nvml.nvmlDeviceGetCurrentClocksEventReasons, handle)
        mig = _query(nvml.nvmlDeviceGetMigMode, handle)
        driver = _query(nvml.nvmlSystemGetDriverVersion)
        identity = {
            "kind": "cuda",
            "index": index,
            "name": raw,
            "family": family,
            "variant": variant,
            "uuid": decode_name(nvml.nvmlDeviceGetUUID(handle)),
            # pciDeviceId packs (device id << 16) | vendor id (0x10de for NVIDIA)
            "pci_device_id": None if pci is None else f"{(pci.pciDeviceId >> 16) & 0xFFFF:#06x}",
            "pci_bus_id": None if pci is None else decode_name(pci.busId),
            "compute_capability": None if cc is None else f"{cc[0]}.{cc[1]}",
            "memory_total_bytes": None if memory is None else int(memory.total),
            "driver_version": None if driver is None else decode_name(driver),
            # nvmlSystemGetCudaDriverVersion returns 1000 * major + 10 * minor (12040 -> "12.4")
            "cuda_driver_version": None if cuda_driver is None else f"{cuda_driver // 1000}.{cuda_driver % 1000 // 10}",
            "sm_clock_mhz": _query(nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM),
            "max_sm_clock_mhz": _query(nvml.nvmlDeviceGetMaxClockInfo, handle, nvml.NVML_CLOCK_SM),
            "power_limit_w": None if power_mw is None else power_mw / 1000.0,
            "temperature_c": _query(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU),
            "clock_event_reasons": None if reasons is None else clock_event_names(int(reasons)),
            "mig_mode": None if mig is None else bool(mig[0]),
        }
    identity.update(_torch_cuda_versions())
    return identity


def _cpu_model() -> str:
    """CPU model from /proc/cpuinfo ('model name'), else platform.processor()."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name") and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_identity() -> dict[str, Any]:
    """CPU model, logical cores (and those this process may use), torch threads, platform and versions."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "kind": "cpu",
        "name": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }


def identify(device: str) -> dict[str, Any]:
    """Identity of 'cpu', 'cuda' or 'cuda:N'; a GPU identity also carries its host CPU under 'host'."""
    kind, index = parse_device(device)
    if kind == "cpu":
        return cpu_identity()
    identity = gpu_identity(0 if index is None else index)
    identity["host"] = cpu_identity()
    return identity
