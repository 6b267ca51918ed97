"""Registry of named published networks (ZenNet, GENet) and resolution of ARCH arguments.

Torch-free: it maps names to architecture text and metadata; `zennas.create_model` builds them.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from zennas.arch import ArchSpec, get_dialect, parse
from zennas.arch.limits import MAX_TEXT_CHARS, check_num_classes, check_resolution, check_text_size
from zennas.errors import ConfigError, UnknownModelError, excerpt
from zennas.registry import Registry


@dataclass(frozen=True)
class ModelEntry:
    """A named published network: its architecture text and the settings it was published with."""

    name: str
    arch: str
    resolution: int
    num_classes: int
    use_se: bool
    family: str
    dataset: str
    status: str
    source_name: str  # name in the zoo file / original repository
    published: dict = field(default_factory=dict, compare=False)  # params/flops/top1 as printed

    def spec(self) -> ArchSpec:
        """Parsed architecture."""
        return parse(self.arch)


# Filled from the zoo file on the first lookup: the zoo is data, no module registers models.
MODELS: Registry[ModelEntry] = Registry("model", loader=lambda: _read_zoo(), error=UnknownModelError)

# Defaults for architectures given as text rather than by name: (resolution, num_classes).
DIALECT_DEFAULTS: dict[str, tuple[int, int]] = {
    "zennas-v1": (224, 1000),
    "genet": (224, 1000),
    "binas": (224, 1000),
    "tinynas": (224, 0),  # TinyNAS structures are backbones
    "nb201": (32, 10),
}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add a named model; duplicate names are an error."""
    return MODELS.register(entry.name, entry)


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style wildcard pattern (case-insensitive)."""
    pattern = pattern.lower()
    return sorted(name for name in MODELS if fnmatch.fnmatchcase(name, pattern))


def get_model_entry(name: str) -> ModelEntry:
    """Look up a registered model by name (case-insensitive)."""
    key = name.strip().lower()
    entry = MODELS.find(key)
    if entry is not None:
        return entry
    close = [n for n in MODELS if key.split("-")[0] in n][:6]
    hint = f"; similar: {', '.join(close)}" if close else ""
    raise UnknownModelError(
        f"{name!r} is neither a registered model nor an architecture string; run `zennas models` to list models{hint}"
    )


def is_model_name(name: str) -> bool:
    """True if `name` is a registered model name."""
    return name.strip().lower() in MODELS


_BARE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*")


def resolve_arch(text: str, dialect: str | None = None, *, rechain: bool = False) -> tuple[ArchSpec, ModelEntry | None]:
    """An ARCH argument -> (spec, entry): a registered name, a file holding a string, or the string itself."""
    if not isinstance(text, str):
        raise ConfigError(f"an architecture must be a name, a string or a file, got {type(text).__name__}")
    check_text_size(text)
    if dialect is not None:
        get_dialect(dialect)  # an unknown dialect is the first thing to fix
    candidate = text.strip()
    if is_model_name(candidate):
        if dialect is not None:
            raise ConfigError(
                f"{candidate!r} is a registered model name; a dialect applies only to architecture text, so drop it"
            )
        entry = get_model_entry(candidate)
        return entry.spec(), entry
    path = Path(candidate)
    try:
        is_file = "\n" not in candidate and path.is_file()
    except (OSError, ValueError):  # not a usable path (too long, NUL byte): treat it as text
        is_file = False
    if is_file:
        return parse(_read_arch_file(path), dialect, rechain=rechain), None
    if _looks_like_path(candidate):
        if dialect is None and _BARE_NAME.fullmatch(candidate) and not candidate.lower().endswith(_PATH_SUFFIXES):
            get_model_entry(candidate)  # raises UnknownModelError with suggestions
        raise UnknownModelError(
            f"no such file or model name {excerpt(candidate)!r}: ARCH is a registered model name (run `zennas "
            "models` to list them), an architecture string, or the path of a file holding one; check the spelling"
        )
    return parse(text, dialect, rechain=rechain), None


def resolve_spec(
    arch: str | ArchSpec, dialect: str | None = None, *, rechain: bool = False
) -> tuple[ArchSpec, ModelEntry | None]:
    """An ARCH argument or an ArchSpec -> (spec, entry); an ArchSpec is taken as it is, with no entry."""
    if isinstance(arch, ArchSpec):
        return arch, None
    if not isinstance(arch, str):
        raise ConfigError(f"an architecture must be a name, a string or an ArchSpec, got {type(arch).__name__}")
    return resolve_arch(arch, dialect, rechain=rechain)


def settings_for(
    spec: ArchSpec,
    entry: ModelEntry | None,
    resolution: int | None = None,
    num_classes: int | None = None,
    use_se: bool | None = None,
) -> tuple[int, int, bool | None]:
    """Fill unset resolution/classes/SE from the registered model, else from the dialect defaults.

    Raises ConfigError for a resolution or class count beyond what zennas can count and build,
    before anything is counted, built or allocated.
    """
    default_res, default_classes = DIALECT_DEFAULTS.get(spec.dialect, (224, 1000))
    if entry is not None:
        default_res, default_classes = entry.resolution, entry.num_classes
        if use_se is None:
            use_se = entry.use_se
    resolution = default_res if resolution is None else resolution
    num_classes = default_classes if num_classes is None else num_classes
    check_resolution(resolution)
    check_num_classes(num_classes)
    return resolution, num_classes, use_se


# Endings of files that hold architecture text (strings, TinyNAS structures, JSON exports).
_PATH_SUFFIXES = (".txt", ".arch", ".json", ".py", ".yaml", ".yml", ".toml", ".csv", ".cfg", ".log")
_TOKEN_START = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\(")


def _looks_like_path(text: str) -> bool:
    """Whether an ARCH argument that is no file was meant as a file or model name rather than a string.

    Every dialect's text starts with `NAME(` (ZenNAS, GENet) or with '[', '{' or '|' (BINAS, TinyNAS,
    NB201); other text with a path separator or no '(' at all, or any text with a file ending, is a name.
    """
    if "\n" in text or len(text) > 4096:  # longer than any path the OS accepts
        return False
    if text.lower().endswith(_PATH_SUFFIXES):
        return True
    if text[:1] in "[{|" or _TOKEN_START.match(text):
        return False
    return "/" in text or "\\" in text or "(" not in text


def _read_arch_file(path: Path) -> str:
    """The text of an architecture file, refused unread when it is too large to be one network."""
    try:
        size = path.stat().st_size
        if size > MAX_TEXT_CHARS * 4:  # a character takes at most 4 bytes in UTF-8
            raise ConfigError(
                f"architecture file {excerpt(str(path))!r} has {size:,} bytes, more than one network's text can "
                f"hold (at most {MAX_TEXT_CHARS:,} characters); give the file of one architecture"
            )
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read architecture file {excerpt(str(path))!r}: {error}") from None


def _zennet_name(zoo_name: str, status: str) -> str:
    """Readable lower-case name of a ZenNet zoo entry, e.g. zennet-400m-se, zennet-0.8ms, zennet-cifar10-1m."""
    rest = zoo_name.removeprefix("zennet_")
    prefix = "zennet-v1-" if status.startswith("superseded") else "zennet-"
    if rest.startswith("cifar"):
        dataset, _, size = rest.partition("_model_size")
        size = size.split("_")[0].lower()  # '05m', '1m', '2m'
        size = "0.5m" if size == "05m" else size
        return f"zennet-{dataset}-{size}"
    kind = rest.removeprefix("imagenet1k_").split("_")[0]  # flops400M / latency08ms
    se = "-se" if "_SE_" in rest else ""
    if kind.startswith("flops"):
        return f"{prefix}{kind.removeprefix('flops').lower()}{se}"
    digits = kind.removeprefix("latency").removesuffix("ms")  # '08' -> 0.8 ms, '12' -> 1.2 ms
    return f"{prefix}{int(digits) / 10:g}ms{se}"


def _read_zoo() -> None:
    data = json.loads(resources.files("zennas").joinpath("data/zoo.json").read_text())
    for item in data:
        if item["family"] == "GENet":
            name = item["published_name"].lower()
        else:
            name = _zennet_name(item["name"], item["status"])
        register_model(
            ModelEntry(
                name=name,
                arch=item["arch_string"],
                resolution=item["resolution"],
                num_classes=item["num_classes"],
                use_se=item["use_se"],
                family=item["family"],
                dataset=item["dataset"],
                status=item["status"].split(" ")[0],
                source_name=item["name"],
                published={k: item.get(k) for k in ("params", "flops", "top1", "figures_source", "latency")},
            )
        )
