"""zennas command line: a thin click group that parses options, calls the library and prints."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import click

from zennas.errors import ZennasError
from zennas.io import writable_file
from zennas.train import LONGTAIL_METHODS


def _one_line_errors(fn):
    """Turn library errors into click's one-line `Error: ...` and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ZennasError as error:
            raise click.ClickException(" ".join(str(error).split())) from None
        except OSError as error:  # a path given from outside that the library did not check: still one line
            where = f"{error.filename}: " if error.filename else ""
            raise click.ClickException(f"{where}{error.strerror or error}") from None

    return wrapper


class _Device(click.ParamType):
    """A device name checked against this machine at parse time (zennas.device); passed on as text."""

    name = "device"

    def convert(self, value, param, ctx):
        from zennas.device import resolve_device

        try:
            resolve_device(value)
        except ZennasError as error:
            self.fail(str(error), param, ctx)
        return value


DEVICE = _Device()
# Seeds feed numpy generators, which take non-negative integers (torch's take up to 64 bits).
SEED = click.IntRange(0, 2**63 - 1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="zennas")
def main() -> None:
    """Zero-shot, hardware-aware neural architecture search."""


@main.command()
@click.argument("arch")
@click.option("--resolution", "-r", type=click.IntRange(min=1), help="Input side (default: the model's own).")
@click.option("--num-classes", type=click.IntRange(min=0), help="Classifier outputs; 0 = backbone only.")
@click.option("--se/--no-se", "use_se", default=None, help="Force SE modules on or off (default: the model's own).")
@click.option(
    "--convention",
    type=click.Choice(["correct", "zennas", "tinynas"]),
    default="correct",
    show_default=True,
    help="Also report FLOPs in a published repository's convention (computed without SE).",
)
@click.option("--dialect", help="Parse ARCH in this dialect instead of detecting it.")
@click.option("--rechain", is_flag=True, help="Repair legacy strings whose block inputs do not chain (ZenNAS).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_one_line_errors
def info(arch, resolution, num_classes, use_se, convention, dialect, rechain, as_json) -> None:
    """Exact params, MACs, layers and stage shapes of ARCH (a model name, a string or a file)."""
    from zennas.api import info as describe

    result = describe(
        arch,
        resolution=resolution,
        num_classes=num_classes,
        use_se=use_se,
        convention=convention,
        dialect=dialect,
        rechain=rechain,
    )
    if as_json:
        click.echo(json.dumps(result))
        return
    title = result["name"] or result["hash"]
    click.echo(
        f"{title}  [{result['dialect']}]  {result['canonical'][:96]}{'...' if len(result['canonical']) > 96 else ''}"
    )
    click.echo(
        f"  input {result['resolution']}x{result['resolution']}, classes {result['num_classes']}, "
        f"SE {'on' if result['use_se'] else 'off'}"
    )
    click.echo(f"  params {result['params']:,}   MACs {result['macs']:,}   layers {result['layers']}")
    if "flops" in result:
        click.echo(
            f"  FLOPs ({result['convention_note']}) {result['flops']:,}   params {result['convention_params']:,}"
        )
    if "published" in result:
        pub = result["published"]
        click.echo(f"  published: params {pub['params']}, FLOPs {pub['flops']}, top-1 {pub['top1']}")
    click.echo("  stages (stride: C x H x W):")
    for stage in result["stages"]:
        c, h, w = stage["shape"]
        click.echo(f"    /{stage['stride']:<3d} {c} x {h} x {w}")


@main.command()
@_one_line_errors
def spaces() -> None:
    """List the search spaces."""
    from zennas.spaces import get_space, list_spaces

    for name in list_spaces():
        space = get_space(name)
        click.echo(f"{name:<12} {space.dialect:<10} {space.description}")


@main.command()
@click.argument("pattern", default="*")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list.")
@_one_line_errors
def models(pattern, as_json) -> None:
    """List registered models whose name matches PATTERN (shell wildcards, e.g. 'zennet-*ms')."""
    from zennas.models import get_model_entry, list_models

    names = list_models(pattern)
    if not names:
        raise click.ClickException(f"no model matches {pattern!r}; run `zennas models` to list all")
    rows = []
    for name in names:
        e = get_model_entry(name)
        rows.append(
            {
                "name": name,
                "family": e.family,
                "dataset": e.dataset,
                "resolution": e.resolution,
                "num_classes": e.num_classes,
                "use_se": e.use_se,
                "status": e.status,
                "top1": e.published.get("top1"),
            }
        )
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(f"{'name':<22} {'family':<7} {'dataset':<12} {'res':>4} {'classes':>7} {'SE':>3} {'top-1':>6}  status")
    for r in rows:
        click.echo(
            f"{r['name']:<22} {r['family']:<7} {r['dataset']:<12} {r['resolution']:>4} {r['num_classes']:>7} "
            f"{'yes' if r['use_se'] else 'no':>3} {r['top1'] or '-':>6}  {r['status']}"
        )


def _fmt(value: float | None, width: int = 12) -> str:
    """A number for a table cell: compact, aligned, '-' for missing."""
    if value is None or value != value:
        return f"{'-':>{width}}"
    return f"{value:>{width}.{max(1, min(6, width - 6))}g}"


@contextlib.contextmanager
def _progress(total: int, label: str, status: Callable[[], str] | None = None) -> Iterator[Callable[[int], None]]:
    """Progress on stderr: a bar on a terminal, else a line per ~5 % (readable in a nohup log) with an ETA.

    `status` adds a short text (e.g. the best score so far). The ETA counts from the first progress
    reported, so a resumed job that starts part-way gets its own rate.
    """
    if sys.stderr.isatty():

        def show(_: object) -> str:
            return status() if status is not None else ""

        with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=status is not None,
                               item_show_func=show if status is not None else None) as bar:  # fmt: skip
            yield lambda done: bar.update(done - bar.pos)
        return
    start = time.monotonic()
    step = max(1, total // 20)
    seen: dict[str, int | None] = {"last": -1, "first": None}

    def advance(done: int) -> None:
        if seen["first"] is None:
            seen["first"] = done - 1
        if done // step != seen["last"] // step or done == total:
            seen["last"] = done
            elapsed = time.monotonic() - start
            eta = elapsed / max(1, done - seen["first"]) * (total - done)
            extra = f" {status()}" if status is not None else ""
            click.echo(f"{label} {done}/{total}{extra} ({elapsed:.0f} s, ETA {eta:.0f} s)", err=True)

    yield advance


@main.command("score")
@click.argument("arch")
@click.option("--proxy", "-p", "proxy", required=True, help="Comma-separated proxy names, e.g. zen,naswot,params.")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), help="Input batch (default: each proxy's own).")
@click.option("--resolution", "-r", type=click.IntRange(min=1), help="Input side (default: the model's own).")
@click.option("--num-classes", type=click.IntRange(min=0), help="Classifier outputs (default: the model's own).")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True, help="Independent seeded runs.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Base seed of every repeat.")
@click.option("--device", type=DEVICE, default="auto", show_default=True,
              help="cpu, cuda, cuda:1 ... (auto = CUDA if present).")  # fmt: skip
@click.option("--mode", help="Shorthand for --option mode=MODE (e.g. zen's 'zennas' compatibility mode).")
@click.option("--option", "-o", "option_pairs", multiple=True, metavar="KEY=VALUE", help="Proxy option; repeatable.")
@click.option("--dialect", help="Parse ARCH in this dialect instead of detecting it.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object {proxy: {mean, std, values, ...}}.")
@_one_line_errors
def score_command(
    arch, proxy, batch_size, resolution, num_classes, repeats, seed, device, mode, option_pairs, dialect, as_json
) -> None:
    """Score ARCH (a model name, a string or a file) with zero-cost proxies."""
    from zennas.bench import parse_options
    from zennas.proxies import score

    options = parse_options(option_pairs)
    if mode is not None:
        options["mode"] = mode
    results = score(
        arch, proxy, batch_size=batch_size, resolution=resolution, num_classes=num_classes, repeats=repeats,
        seed=seed, device=device, options=options, dialect=dialect,
    )  # fmt: skip
    if as_json:
        click.echo(json.dumps({name: r.to_json() for name, r in results.items()}))
        return
    click.echo(f"{'proxy':<14} {'mean':>12} {'std':>12} {'n':>3} {'better':>7}  {'s/repeat':>9}  notes")
    for name, r in results.items():
        seconds = r.meta.get("seconds_per_repeat")
        notes = "DEGENERATE: " + str(r.meta.get("reason", "output ignores the input")) if r.degenerate else ""
        if not notes:
            source = r.meta.get("input", "?")
            notes = f"input {source}" + ("" if "analytic" in str(source) else f", batch {r.meta.get('batch_size')}")
        click.echo(
            f"{name:<14} {_fmt(r.mean)} {_fmt(r.std)} {len(r.values):>3} "
            f"{'higher' if r.higher_is_better else 'lower':>7}  {_fmt(seconds, 9)}  {notes}"
        )


@main.command("export")
@click.argument("arch")
@click.option("--onnx", "onnx_path", required=True, metavar="FILE", help="Where to write the ONNX file.")
@click.option("--resolution", "-r", type=click.IntRange(min=1), help="Input side (default: the model's own).")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=1, show_default=True, help="Input batch.")
@click.option("--dynamic-batch", is_flag=True, help="Name dim 0 'batch' instead of fixing it (traced at batch >= 2).")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset, 18 or newer.")
@click.option("--weights", metavar="FILE.safetensors", help="Load these weights first (default: random init).")
@click.option("--fuse-bn", "fuse", is_flag=True, help="Fold every BatchNorm that directly follows a conv into it.")
@click.option(
    "--check", is_flag=True, help="Compare onnxruntime (CPU) with the unfused PyTorch model in FP32; exit 1 on FAIL."
)
@click.option("--num-classes", type=click.IntRange(min=0), help="Classifier outputs; 0 = backbone only.")
@click.option("--se/--no-se", "use_se", default=None, help="Force SE modules on or off (default: the model's own).")
@click.option("--multi-scale", is_flag=True, help="Outputs c2..c5: the stage features at strides 4, 8, 16, 32.")
@click.option("--dialect", help="Parse ARCH in this dialect instead of detecting it.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_one_line_errors
def export_command(
    arch, onnx_path, resolution, batch_size, dynamic_batch, opset, weights, fuse, check, num_classes, use_se,
    multi_scale, dialect, as_json,
) -> None:  # fmt: skip
    """Export ARCH (a model name, a string or a file) to ONNX, optionally checked against PyTorch."""
    from torch import nn

    from zennas.api import create_model, settings_for
    from zennas.counting import check_forward_size, count
    from zennas.export import check_onnx, export_onnx, fuse_bn, load_safetensors, output_names_for
    from zennas.models import resolve_arch

    spec, entry = resolve_arch(arch, dialect)
    resolution, num_classes, use_se = settings_for(spec, entry, resolution, num_classes, use_se)
    # The check of a dynamic-batch file also runs batch + 2 (zennas.export.check_onnx).
    largest_batch = batch_size + 2 if dynamic_batch else batch_size
    check_forward_size(count(spec, resolution=resolution, num_classes=num_classes, use_se=use_se), largest_batch)
    model = create_model(spec, num_classes=num_classes, use_se=use_se, multi_scale=multi_scale)
    if weights:
        load_safetensors(model, weights)
    exported = fuse_bn(model) if fuse else model
    shape = (batch_size, 3, resolution, resolution)
    label = entry.name if entry else f"architecture {spec.hash}"
    info = export_onnx(
        exported, onnx_path, input_shape=shape, opset=opset, dynamic_batch=dynamic_batch,
        output_names=output_names_for(model), name=label,
    )  # fmt: skip
    report = check_onnx(onnx_path, model, input_shape=shape) if check else None
    bn_count = [sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) for net in (model, exported)]
    if as_json:
        result = {
            "name": entry.name if entry else None,
            "hash": spec.hash,
            "dialect": spec.dialect,
            "resolution": resolution,
            "batch_size": batch_size,
            "num_classes": num_classes,
            "use_se": use_se,
            "multi_scale": multi_scale,
            "weights": weights,
            "batchnorm": {"before": bn_count[0], "after": bn_count[1]},
            "export": info.to_json(),
            "check": report.to_json() if report else None,
        }
        click.echo(json.dumps(result))
    else:
        click.echo(f"wrote {info.path} ({label}): exporter {info.exporter}, opset {info.opset}")
        if fuse:
            click.echo(f"  BatchNorm layers: {bn_count[0]} -> {bn_count[1]} after folding into convs")
        for name, dims in zip(info.input_names, info.input_shapes, strict=True):
            click.echo(f"  input  {name:<8} [{', '.join(str(d) for d in dims)}]")
        for name, dims in zip(info.output_names, info.output_shapes, strict=True):
            click.echo(f"  output {name:<8} [{', '.join(str(d) for d in dims)}]")
        for note in info.notes:
            click.echo(f"  note: {note}")
        if report is not None:
            click.echo(
                f"check: onnxruntime CPU vs PyTorch FP32 (eval, seed {report.seed}); "
                "rel = max|ort - torch| / max|torch|"
            )
            for o in report.outputs:
                errors = f"max abs {o.max_abs_error:.3g}  max rel {o.max_rel_error:.3g}"
                click.echo(f"  {o.name:<8} batch {o.batch_size:<3} {errors}")
            verdict = "PASS" if report.passed else "FAIL"
            click.echo(f"{verdict}: max relative error {report.max_rel_error:.3g} (tolerance {report.rel_tolerance:g})")
    if report is not None and not report.passed:
        sys.exit(1)


@main.group()
def bench() -> None:
    """Validate proxies against a ground truth (rank correlations)."""


@bench.command("proxies")
@click.option("--ground-truth", "csv_path", required=True, help="CSV with an architecture and an accuracy column.")
@click.option("--arch-column", default="arch", show_default=True)
@click.option("--acc-column", default="cifar10_test", show_default=True)
@click.option("--index-column", default="index", show_default=True, help="Row key for --limit/split, if present.")
@click.option(
    "--dataset",
    type=click.Choice(["cifar10", "cifar100", "imagenet16-120"]),
    help="Resolution/classes preset; default: inferred from --acc-column (cifar100 / imagenet16 / cifar10).",
)
@click.option("--dialect", help="Parse the architecture column in this dialect instead of detecting it.")
@click.option("--proxy", "-p", "proxy", default="params,flops", show_default=True, help="Comma-separated proxies.")
@click.option("--limit", type=click.IntRange(min=1), help="Score a fixed pseudo-random subset of N rows.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--batch-size", "-b", type=click.IntRange(min=1), help="Input batch (default: each proxy's own).")
@click.option("--resolution", "-r", type=click.IntRange(min=1), help="Override the dataset's input side.")
@click.option("--num-classes", type=click.IntRange(min=0), help="Override the dataset's class count.")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--mode", help="Shorthand for --option mode=MODE.")
@click.option("--option", "-o", "option_pairs", multiple=True, metavar="KEY=VALUE", help="Proxy option; repeatable.")
@click.option("--data", "data_path", help="Real input batch: .npz with images [N,3,R,R] and labels [N].")
@click.option("--cache", "cache_dir", default=".zennas-cache", show_default=True, help="Score cache folder.")
@click.option("--no-cache", is_flag=True, help="Compute everything, store nothing.")
@click.option(
    "--degenerate",
    type=click.Choice(["worst", "drop"]),
    default="worst",
    show_default=True,
    help="worst: rank degenerate networks below all others; drop: leave them out.",
)
@click.option("--aggregate", help="'auto' (choose members on a fixed half, report the other) or a member list.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch CPU threads.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object {proxy: {spearman, kendall, n}}.")
@click.option("--plot", "plot_path", help="Scatter of proxy rank vs accuracy per proxy (.svg built in).")
@_one_line_errors
def bench_proxies_command(
    csv_path, arch_column, acc_column, index_column, dataset, dialect, proxy, limit, seed, batch_size, resolution,
    num_classes, repeats, device, mode, option_pairs, data_path, cache_dir, no_cache, degenerate, aggregate, threads,
    as_json, plot_path,
) -> None:  # fmt: skip
    """Score every architecture of a CSV and print Spearman/Kendall of each proxy against accuracy."""
    from zennas.bench import ScoreCache, bench_proxies, dataset_settings, load_data, parse_options, read_ground_truth
    from zennas.bench.plot import write_plot

    options = parse_options(option_pairs)
    if mode is not None:
        options["mode"] = mode
    resolution, num_classes, dataset = dataset_settings(acc_column, dataset, resolution, num_classes)
    truth = read_ground_truth(
        csv_path, arch_column=arch_column, acc_column=acc_column, index_column=index_column, dialect=dialect,
        limit=limit,
    )  # fmt: skip
    if plot_path:
        writable_file(plot_path)  # checked before the scoring, not after it
    cache = None if no_cache else ScoreCache(cache_dir)
    data = load_data(data_path) if data_path else None
    with _progress(len(truth), "scoring") as advance:
        report = bench_proxies(
            truth, proxy.split(","), batch_size=batch_size, resolution=resolution, num_classes=num_classes,
            repeats=repeats, seed=seed, device=device, options=options, data=data, cache=cache,
            degenerate=degenerate, aggregate=aggregate, progress=advance, threads=threads,
        )  # fmt: skip
    if plot_path:
        write_plot(
            plot_path, {n: s.oriented for n, s in report.scores.items()}, truth.accuracy, report.correlations,
            acc_column,
        )  # fmt: skip
    if as_json:
        click.echo(json.dumps(report.to_json()))
        return
    st = report.settings
    click.echo(
        f"ground truth: {st['csv']} [{acc_column}], n = {st['n']}; resolution {st['resolution']}, "
        f"classes {st['num_classes']}" + (f" (dataset {dataset})" if dataset else "")
    )
    click.echo(f"seed {seed}, repeats {repeats}, batch {st['batch_size']}, --data: {st['data']}")
    lower = ", ".join(st["lower_is_better"]) or "none"
    click.echo(f"orientation: higher score = predicted better (negated lower-is-better proxies: {lower})")
    click.echo(
        "degenerate networks: " + ("ranked below every other (worst)" if degenerate == "worst" else "left out (drop)")
    )
    click.echo(
        f"{'proxy':<14} {'spearman':>9} {'kendall':>9} {'n':>6} {'degen.':>7} {'computed':>9} {'s/cell':>8}  input"
    )
    for name, c in report.correlations.items():
        s = report.scores[name]
        seconds = sum(s.seconds) / len(s.seconds) if s.seconds else None
        click.echo(
            f"{name:<14} {c.spearman:>9.4f} {c.kendall:>9.4f} {c.n:>6} {c.degenerate:>7} {s.computed:>9} "
            f"{_fmt(seconds, 8)}  {st['input'][name]}"
        )
    if report.aggregate is not None:
        agg = report.aggregate
        click.echo(
            f"aggregate (rank average) members: {', '.join(agg.members)} [{agg.selected_by}; "
            f"selection half n = {agg.selection_n}]; held-out half:"
        )
        for name, c in sorted(agg.held_out.items(), key=lambda item: -item[1].spearman):
            click.echo(f"  {name:<12} {c.spearman:>9.4f} {c.kendall:>9.4f} {c.n:>6}")
    if cache is not None:
        click.echo(f"cache: {cache.root} ({cache.hits} reused, {cache.writes} stored)")


# ------------------------------------------------------------------------------------------------
# Latency: tables, prediction, profiling, validation
# ------------------------------------------------------------------------------------------------


class _ArchOrSubcommand(click.Group):
    """`zennas latency ARCH ...` predicts; `zennas latency validate ...` runs the subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["predict", *args]
        return super().parse_args(ctx, args)


def _open_latency_table(table: str | None, gpu: str | None, precision: str | None):
    from zennas.latency.shipped import open_table, table_for_gpu

    if (table is None) == (gpu is None):
        raise click.UsageError("give exactly one of --table FILE|NAME or --gpu NAME (e.g. --gpu V100)")
    if gpu is not None:
        return table_for_gpu(gpu, precision=precision)
    chosen = open_table(table)
    if precision is not None and chosen.header["precision"] != precision:
        raise click.UsageError(
            f"table {chosen.name!r} was measured in {chosen.header['precision']}, not {precision}; "
            "drop --precision or pick a table of that precision (zennas tables)"
        )
    return chosen


def _engine_options(engine: str, threads: int | None, exporter: str | None) -> dict:
    """Engine options from CLI flags: threads (CPU engines), exporter (engines that run ONNX)."""
    options: dict = {"threads": threads} if threads and engine in ("torch", "onnxruntime") else {}
    if exporter and engine in ("onnxruntime", "tensorrt"):
        options["exporter"] = exporter
    return options


TIMING_HELP = "graph: one CUDA-graph replay per run (GPU only); eager: kernels launched one by one by the host."


def _timing_options(engine: str, timing: str | None) -> dict:
    """The engine option of --timing graph|eager (torch and onnxruntime have CUDA-graph replay)."""
    if timing is None:
        return {}
    if engine not in ("torch", "onnxruntime"):
        if timing == "graph":
            raise click.UsageError(f"--timing graph applies to the torch and onnxruntime engines, not {engine}")
        return {}
    return {"cuda_graph": timing == "graph"}


def _measure_device(table, device: str | None) -> str:
    """--device, else where the table was measured: "cuda" for a GPU table (one-line error without CUDA)."""
    if device is not None:
        return device
    if table.device_kind == "cpu":
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        family = table.header["device"].get("family") or table.header["device"].get("name") or "a GPU"
        raise click.ClickException(
            f"table {table.name!r} is a GPU table (measured on {family}) and this machine has no CUDA device to "
            "time the network the same way; run on a GPU, or add --device cpu to time it on this CPU in FP32 "
            "(not comparable with the table)"
        )
    return "cuda"


def _table_engine(
    table, engine: str | None, device: str, threads: int | None = None, exporter: str | None = None,
    timing: str | None = None,
):  # fmt: skip
    """A timing engine configured like the one that measured `table`, unless the flags say otherwise.

    The table's engine, CPU threads, ONNX exporter and, on a GPU, its timing mode (graph or eager),
    channels_last and TF32 are the defaults, so that a measurement compares like with like (a 1-thread
    table timed with 2 threads would be off by the thread speed-up, an eager table timed by graph
    replay by the launch gaps).
    """
    from zennas.latency.engines import get_engine

    header_options = table.header.get("engine_options") or {}
    same_engine = engine is None or engine == table.header.get("engine")
    engine = engine or table.header.get("engine") or "torch"
    options: dict = {}
    if same_engine:
        if device == "cpu" or engine != "torch":  # torch takes no thread count on a GPU
            threads = threads or header_options.get("threads")
        exporter = exporter or header_options.get("exporter")
        if device != "cpu":
            timing = timing or table.timing["mode"]
            if engine == "torch":
                options.update({k: header_options[k] for k in ("channels_last", "tf32") if k in header_options})
    options.update(_engine_options(engine, threads, exporter))
    options.update(_timing_options(engine, timing))
    precision = table.header["precision"] if device != "cpu" else "fp32"
    return get_engine(engine, device=device, precision=precision, **options)


def _timing_label(measured) -> str:
    """How a Timing was taken, for output: graph replay or eager on a GPU, nothing on the CPU."""
    if "cuda_graph" not in measured.options:
        return ""
    return ", graph replay" if measured.options["cuda_graph"] else ", eager"


@main.command("tables")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list of table headers.")
@_one_line_errors
def tables_command(as_json) -> None:
    """List the shipped latency tables."""
    from zennas.latency.shipped import shipped_tables
    from zennas.latency.table import load_table

    loaded = [load_table(path) for path in shipped_tables().values()]
    if as_json:
        click.echo(json.dumps([{**t.header, "entries": len(t.entries)} for t in loaded]))
        return
    click.echo(f"{'name':<28} {'device':<10} {'engine':<12} {'precision':<9} {'batch':<14} {'entries':>8}  budget")
    for t in loaded:
        h = t.header
        device = h["device"].get("family") or h["device"].get("name", "?")
        batches = "/".join(map(str, t.batch_sizes))
        budget = (h.get("budget") or {}).get("meaning", "")
        line = f"{t.name:<28} {device:<10} {h['engine']:<12} {h['precision']:<9} {batches:<14} {len(t.entries):>8}"
        click.echo(f"{line}  {budget}")


@main.group("latency", cls=_ArchOrSubcommand)
def latency_group() -> None:
    """Predict latency from a table: `zennas latency ARCH (--table T | --gpu V100)`; `zennas latency validate`."""


@latency_group.command("predict", hidden=True)
@click.argument("arch")
@click.option("--table", "table", help="Table file or shipped table name (zennas tables).")
@click.option("--gpu", help="Use the shipped table of this GPU family, e.g. V100.")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), help="Batch (default: the table's budget batch).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]), help="Require this precision.")
@click.option("--resolution", "-r", type=click.IntRange(min=1), help="Input side (default: the model's own).")
@click.option("--num-classes", type=click.IntRange(min=0), help="Classifier outputs (default: the model's own).")
@click.option("--se/--no-se", "use_se", default=None, help="Force SE modules on or off (default: the model's own).")
@click.option("--dialect", help="Parse ARCH in this dialect instead of detecting it.")
@click.option("--measure", is_flag=True, help="Also time the whole network the table's way and print both.")
@click.option("--engine", help="Timing engine for --measure (default: the table's, with its threads and exporter).")
@click.option("--device", type=DEVICE,
              help="Device for --measure (cpu, cuda, cuda:1; default: the table's, cuda for a GPU table).")  # fmt: skip
@click.option("--timing", type=click.Choice(["graph", "eager"]), help=f"For --measure: {TIMING_HELP} "
              "Default: the table's.")  # fmt: skip
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True, help="Timed runs for --measure.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_one_line_errors
def latency_predict_command(
    arch, table, gpu, batch_size, precision, resolution, num_classes, use_se, dialect, measure, engine, device, timing,
    runs, as_json,
) -> None:  # fmt: skip
    """Predicted latency of ARCH (a model name, a string or a file)."""
    from zennas.api import settings_for
    from zennas.latency.predict import predict
    from zennas.models import resolve_arch

    chosen = _open_latency_table(table, gpu, precision)
    spec, entry = resolve_arch(arch, dialect)
    resolution, num_classes, use_se = settings_for(spec, entry, resolution, num_classes, use_se)
    p = predict(spec, chosen, resolution=resolution, num_classes=num_classes, use_se=use_se, batch_size=batch_size)
    out = {**p.to_dict(), "table_header": {k: chosen.header[k] for k in ("device", "engine", "precision")}}
    if measure:
        from zennas.build import BuildOptions, build

        device = _measure_device(chosen, device)
        timer = _table_engine(chosen, engine, device, timing=timing)
        engine = timer.name
        model = build(spec, BuildOptions(num_classes=num_classes, use_se=use_se))
        measured = timer.time(model, (p.batch_size, 3, resolution, resolution), runs=runs)
        out["measured"] = measured.to_dict()
        out["ratio"] = p.latency_ms_per_batch / measured.ms_per_batch
        out["relative_error"] = (p.latency_ms_per_batch - measured.ms_per_batch) / measured.ms_per_batch
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(f"table: {chosen.describe()}")
    click.echo(
        f"predicted: {p.latency_ms_per_image:.4f} ms/image, {p.latency_ms_per_batch:.4f} ms/batch "
        f"(batch {p.batch_size}, resolution {resolution}; {p.operators} operators, "
        f"{p.extrapolated_operators} extrapolated" + (", corrected" if p.corrected else "") + ")"
    )
    if p.not_costed:
        missing = ", ".join(f"{k} x{v}" for k, v in p.not_costed.items())
        click.echo(f"not costed by this table: {missing}")
    if measure:
        click.echo(
            f"measured:  {measured.ms_per_image:.4f} ms/image, {measured.ms_per_batch:.4f} ms/batch (median of "
            f"{runs}; {engine}, {timer.device}, {measured.precision}{_timing_label(measured)})"
        )
        click.echo(f"predicted/measured: {out['ratio']:.3f} (relative error {out['relative_error']:+.1%})")
        table_family, family = chosen.header["device"].get("family"), measured.identity.get("family")
        if table_family and family and str(table_family).upper() != str(family).upper():
            click.echo(f"note: measured on {family}, the table on {table_family}")


@latency_group.command("validate")
@click.option("--table", "table", required=True, help="Table file or shipped table name.")
@click.option("--space", required=True, help="Search space to sample (zennas spaces).")
@click.option("--samples", type=click.IntRange(min=3), default=50, show_default=True)
@click.option("--engine", help="Timing engine (default: the table's, with its threads and exporter).")
@click.option("--device", type=DEVICE, help="Device (default: the table's, cuda for a GPU table).")
@click.option("--timing", type=click.Choice(["graph", "eager"]), help=f"{TIMING_HELP} Default: the table's.")
@click.option("--resolution", "-r", type=click.IntRange(min=1), help="Input side (default: the table's budget).")
@click.option("--num-classes", type=click.IntRange(min=0), default=1000, show_default=True)
@click.option("--batch-size", "-b", type=click.IntRange(min=1), help="Batch (default: the table's budget batch).")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=5, show_default=True, help="Timed runs per round.")
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Interleaved rounds over each chunk of networks (a measurement: median of runs x rounds).",
)
@click.option("--chunk", type=click.IntRange(min=1), default=64, show_default=True,
              help="Networks measured together, round by round (at most 250M parameters per chunk).")  # fmt: skip
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads of the engine (default: the table's).")
@click.option("--exporter", type=click.Choice(["torchscript", "dynamo", "auto"]),
              help="ONNX exporter for onnxruntime/tensorrt (default: the table's).")  # fmt: skip
@click.option("--fit", is_flag=True, help="Fit an affine correction on half the samples; report the other half.")
@click.option("--save-fit", help="With --fit: write the table with the fitted correction to this file "
              "(a latency table already there is replaced; any other file is refused).")  # fmt: skip
@click.option("--log", "log_path", help="JSON-lines log of measurements (resume). Default under .zennas-cache/.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True),
              help="Seconds after which no new chunk starts; the report covers the networks measured.")  # fmt: skip
@click.option("--plot", "plot_path", help="Predicted-vs-measured scatter (.svg).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_one_line_errors
def latency_validate_command(
    table, space, samples, engine, device, timing, resolution, num_classes, batch_size, seed, runs, rounds, chunk,
    threads, exporter, fit, save_fit, log_path, time_limit, plot_path, as_json,
) -> None:  # fmt: skip
    """Measure random members of a space end to end and compare with the table's predictions."""
    from zennas.latency.shipped import open_table
    from zennas.latency.table import save_table
    from zennas.latency.validate import default_log_path, validate, write_scatter_svg

    chosen = open_table(table)
    if plot_path:
        writable_file(plot_path)  # checked before the measurements, not after them
    if fit and save_fit:
        from zennas.latency.profile import table_destination

        table_destination(save_fit)  # a folder or a file that is not a latency table: refused before measuring
    budget = chosen.header.get("budget") or {}
    resolution = resolution or int(budget.get("resolution") or 224)
    device = _measure_device(chosen, device)
    timer = _table_engine(chosen, engine, device, threads, exporter, timing)
    engine = timer.name
    if log_path is None:
        log_path = default_log_path(chosen, space, engine, device, resolution)
        log_path.parent.mkdir(parents=True, exist_ok=True)
    with _progress(samples, "measuring") as advance:
        report = validate(
            space, chosen, timer, samples=samples, resolution=resolution, num_classes=num_classes,
            batch_size=batch_size, seed=seed, runs=runs, rounds=rounds, chunk=chunk, fit=fit, log=log_path,
            time_limit_s=time_limit, progress=lambda done, total: advance(done),
        )  # fmt: skip
    if plot_path:
        write_scatter_svg(plot_path, report)
    if fit and save_fit:
        header = {**chosen.header, "correction": {k: report.fit[k] for k in ("intercept_ms", "slope", "fitted_on")}}
        header["correction"]["fitted_with"] = report.settings
        save_table(save_fit, header, chosen.entries)
    if as_json:
        click.echo(json.dumps(report.to_json()))
        return
    a = report.overall
    click.echo(
        f"{space}: {a.n} networks, table {chosen.name}, {engine} on {device}"
        f"{', graph replay' if timer.options.get('cuda_graph') else ''}, batch {report.settings['batch_size']}, "
        f"resolution {resolution}"
    )
    if report.settings["outside_table"]:
        click.echo(f"{report.settings['outside_table']} sampled networks lie outside the table and were skipped")
    if report.settings["not_measured_in_time"]:
        click.echo(f"{report.settings['not_measured_in_time']} networks were not measured within --time-limit "
                   "(rerun with the same --log to add them)")  # fmt: skip
    click.echo(f"within +-10%: {a.within_10pct:.1%}  within +-5%: {a.within_5pct:.1%}  MAPE {a.mape:.2f}%  "
               f"Spearman {a.spearman:.4f}")  # fmt: skip
    if report.fit is not None:
        f = report.fit
        b, c = f["held_out_before"], f["held_out_after"]
        click.echo(f"fit on {f['fitted_on']}: measured = {f['intercept_ms']:.4f} ms + {f['slope']:.4f} x sum")
        for label, m in (("held-out before", b), ("held-out after ", c)):
            click.echo(
                f"{label}: within10 {m['within_10pct']:.1%} within5 {m['within_5pct']:.1%} MAPE {m['mape']:.2f}% "
                f"Spearman {m['spearman']:.4f} (n {m['n']})"
            )


# A run's --out must be new, empty, or a run of the same kind (zennas.io.claim_output_folder).
OVERWRITE_HELP = (
    "Start afresh in a non-empty --out: the files this command writes there (its checkpoint, history and results) "
    "are deleted first and then written anew; other files are left alone. Without it such a folder is refused."
)


@main.command("search")
@click.option("--space", default="zennas-res", show_default=True, help="Search space (zennas spaces).")
@click.option("--preset", help="A published search setting of the space (e.g. imagenet-flops400M for zennas-idw).")
@click.option("--proxy", "-p", default="zen", show_default=True,
              help="A registered proxy, or a weighted sum on raw scales: zen=1,naswot=0.5.")  # fmt: skip
@click.option("--proxy-option", "proxy_option_pairs", multiple=True, metavar="KEY=VALUE",
              help="Option of the objective's proxies (as zennas score -o), e.g. mode=zennas; repeatable.")  # fmt: skip
@click.option("--budget", help="Latency budget per image with a unit: 1ms, 0.8ms/image, 800us.")
@click.option("--budget-batch-size", type=click.IntRange(min=1),
              help="Batch of the latency budget (default: the table's budget batch; 64 for V100).")  # fmt: skip
@click.option("--gpu", help="Use the shipped latency table of this GPU family (e.g. V100).")
@click.option("--table", help="Latency table file or shipped name (zennas tables).")
@click.option("--flops-budget", help="MACs budget, e.g. 400M (counted as --convention says); overrides a preset's.")
@click.option("--params-budget", help="Parameter budget, e.g. 5.5M (as --convention says); overrides a preset's.")
@click.option("--max-layers", type=click.IntRange(min=1),
              help="At most this many layers (REFERENCE 1.4 counting). Default: the preset's; with a budget and no "
                   "preset, the cap of the space's nearest published preset of that budget.")  # fmt: skip
@click.option("--convention", type=click.Choice(["correct", "zennas", "tinynas"]),
              help="Counting of the FLOPs/params budgets (zennas: the repository's, no SE). Default: the space's "
                   "(zennas for Zen-NAS presets) while the preset states such a budget, else correct.")  # fmt: skip
@click.option("--resolution", "-r", type=click.IntRange(min=1), help="Input side (default: the preset's or 224).")
@click.option("--num-classes", type=click.IntRange(min=0), help="Classifier outputs (default: the preset's or 1000).")
@click.option("--iterations", type=click.IntRange(min=1),
              help="Children generated, screened or scored (default: 1000, or none with --time-limit; Zen-NAS "
                   "scripts: 480,000).")  # fmt: skip
@click.option("--time-limit", help="Stop at the first batch past this much search time: 90s, 8m, 1h (--resume with "
                                   "a longer limit continues).")  # fmt: skip
@click.option("--population", type=click.IntRange(min=1), default=64, show_default=True, help="Zen-NAS: 512.")
@click.option("--batch", type=click.IntRange(min=1), default=16, show_default=True,
              help="Children scored per batch (the result does not depend on --workers, only on this).")  # fmt: skip
@click.option(
    "--no-funnel",
    is_flag=True,
    help="Score every child with the proxy; by default a closed form, where one covers the objective "
    "(sampled zen), screens --screen-ratio x --batch children and the best --batch are scored.",
)
@click.option("--screen-ratio", type=click.IntRange(min=2), default=64, show_default=True,
              help="With the funnel: children screened per child scored.")  # fmt: skip
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local scoring processes; with --device cuda, candidates in flight on one GPU.")  # fmt: skip
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None,
              help="Score on Ray: --ray (local cluster) or --ray ADDRESS (needs zennas[ray]).")  # fmt: skip
@click.option("--strategy", type=click.Choice(["evolution", "random", "milp"]), default="evolution", show_default=True)
@click.option("--init", "init", help="Seed architecture (default: the space's first seed); must meet every budget.")
@click.option("--proxy-batch-size", type=click.IntRange(min=1), help="Batch of the proxy's input (default: its own).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch threads per scorer.")
@click.option("--device", type=DEVICE, default="cpu", show_default=True, help="Where proxies run: cpu, cuda, cuda:1.")
@click.option("--rescore", type=click.IntRange(min=0),
              help="Re-score the top K at the end with --rescore-repeats draws; the best mean wins (default: 8 with "
                   "the funnel, where single draws pick among many close children; else 0).")  # fmt: skip
@click.option("--rescore-repeats", type=click.IntRange(min=2), default=4, show_default=True)
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--out", "out", help="Output folder (default: runs/search-<UTC time>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@_one_line_errors
def search_command(
    space, preset, proxy, proxy_option_pairs, budget, budget_batch_size, gpu, table, flops_budget, params_budget,
    max_layers, convention, resolution, num_classes, iterations, time_limit, population, batch, no_funnel,
    screen_ratio, seed, workers, ray_address, strategy, init, proxy_batch_size, threads, device, rescore,
    rescore_repeats, checkpoint_every, out, resume, overwrite, no_plots,
) -> None:  # fmt: skip
    """Find the best-scoring architecture within the budgets, e.g. `zennas search --budget 1ms --gpu V100`."""
    from zennas.bench import parse_options
    from zennas.search.budget import parse_count_budget, parse_duration, parse_latency_budget
    from zennas.search.constraints import describe_constraints
    from zennas.search.evolution import Settings
    from zennas.wiring import search, search_problem

    if gpu is not None and table is not None:
        raise click.UsageError("give --gpu or --table, not both")
    chosen = _open_latency_table(table, gpu, None) if (gpu or table) else None
    if budget is not None and chosen is None and preset is None:  # a latency preset brings the V100 table
        raise click.UsageError("a latency budget needs a latency table: add --gpu V100 or --table FILE|NAME")
    if resume and out is None:
        raise click.UsageError("--resume needs the --out folder of the run to continue")
    given = {
        "latency_ms_per_image": parse_latency_budget(budget) if budget is not None else None,
        "latency_batch_size": budget_batch_size,
        "macs": parse_count_budget(flops_budget, "FLOPs") if flops_budget is not None else None,
        "params": parse_count_budget(params_budget, "params") if params_budget is not None else None,
        "max_layers": max_layers,
        "convention": convention,
        "resolution": resolution,
        "num_classes": num_classes,
    }
    problem, constraints = search_problem(
        space, preset=preset, proxy=proxy, proxy_options=parse_options(proxy_option_pairs), table=chosen, **given,
        proxy_batch_size=proxy_batch_size, seed=seed, threads=threads, device=device,
    )  # fmt: skip
    out = out or time.strftime("runs/search-%Y%m%d-%H%M%S", time.gmtime())
    time_limit_s = parse_duration(time_limit) if time_limit is not None else None
    funnel = strategy == "evolution" and not no_funnel and problem.screen is not None
    if rescore is None:  # measured: the funnel's single-draw winner judged 122.1, its re-scored best 123.8 (README)
        rescore = 8 if funnel else 0
    settings = Settings(
        iterations=iterations if iterations is not None or time_limit_s is not None else 1000,
        population=population, batch=batch, checkpoint_every=checkpoint_every, rescore=rescore,
        rescore_repeats=rescore_repeats, init=init, strategy="random" if strategy == "random" else "evolution",
        time_limit_s=time_limit_s, funnel=not no_funnel, screen_ratio=screen_ratio,
    )  # fmt: skip
    options = "".join(f", {k}={v}" for k, v in problem.proxy_options)
    given_table = f"; table {chosen.name}" if chosen is not None else ""
    click.echo(f"searching {problem.search_space.name} for {problem.to_dict()['proxy']}{options}{given_table}; "
               f"output in {out}", err=True)  # fmt: skip
    click.echo(f"budgets: {describe_constraints(constraints, SEARCH_FLAGS)}", err=True)
    if strategy == "milp":
        from zennas.wiring import run_milp

        if resume:
            raise click.UsageError("--strategy milp runs in one go (minutes); it has no --resume")
        if settings.iterations is None:
            raise click.UsageError("--strategy milp takes --iterations (proxy evaluations), not --time-limit")
        result = run_milp(
            problem, settings, out, workers=workers, ray=ray_address is not None,
            ray_address=None if ray_address in (None, "local") else ray_address, overwrite=overwrite,
        )  # fmt: skip
    else:
        if settings.strategy == "evolution" and settings.funnel:
            again = f"; the best {rescore} re-scored with {rescore_repeats} draws at the end" if rescore else ""
            click.echo(f"funnel: {problem.screen_note}{again}", err=True)
        options = {
            "resume": resume,
            "overwrite": overwrite,
            "workers": workers,
            "ray": ray_address is not None,
            "ray_address": None if ray_address in (None, "local") else ray_address,
            "plots": not no_plots,
        }
        result = _search_with_progress(search, problem, settings, out, options)
    _print_search_result(result, out)


def _search_with_progress(search, problem, settings, out, options: dict) -> dict:
    """`search(...)` with a progress bar over the iterations, or over the time limit when there is one;
    the status shows the best score and the children scored and screened so far."""
    shown: dict[str, str] = {"status": ""}

    def status() -> str:
        return shown["status"]

    by_time = settings.time_limit_s is not None
    total = round(settings.time_limit_s) if by_time else settings.iterations
    with _progress(total, "search (s)" if by_time else "search", status) as advance:

        def progress(state) -> None:
            c = state.counts
            screened = f", screened {c['screened']:,}" if c["screened"] else ""
            shown["status"] = (f"best {max(m.score for m in state.population):.6g} (it {state.iteration:,}: "
                               f"scored {c['scored']:,}{screened})")  # fmt: skip
            advance(min(total, round(state.wall_time_s)) if by_time else state.iteration)

        return search(problem, settings, out, progress=progress, **options)


def _print_search_result(result: dict, out: str) -> None:
    """The answer and its figures, as the last lines of `zennas search`."""
    if result.get("stopped"):
        click.echo(f"stopped: {result['stopped']['reason']} after {result['iterations']:,} iterations", err=True)
    funnel = result.get("funnel")
    if funnel and funnel.get("active"):
        click.echo(f"funnel: {funnel['scored']:,} children scored, {funnel['screened']:,} screened out", err=True)
    lat = result.get("latency_ms_per_image")
    click.echo(result["arch"])
    click.echo(
        f"score {result['score']:.6g} ({result['proxy']}); "
        + (f"latency {lat:.4g} ms/image at batch {result['latency_batch_size']} ({result['table']}); " if lat else "")
        + f"MACs {result['macs']:,}; params {result['params']:,}; layers {result['layers']}; "
        f"{result['iterations']} iterations in {result['wall_time_s']:.1f} s; written to {out}"
    )


# How `zennas search` sets each constraint, for the printed budgets (zennas.search.constraints).
SEARCH_FLAGS = {"latency": "--budget", "macs": "--flops-budget", "params": "--params-budget", "layers": "--max-layers",
                "resolution": "--resolution", "num_classes": "--num-classes", "table": "--gpu/--table"}  # fmt: skip


@main.command("profile")
@click.option("--space", required=True, help="Search space whose operators to measure (zennas spaces).")
@click.option("--engine", type=click.Choice(["torch", "onnxruntime", "tensorrt"]),
              help="Timing engine (default: onnxruntime on the CPU, torch on a GPU).")  # fmt: skip
@click.option("--device", type=DEVICE, default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
@click.option("--precision", default="fp32", show_default=True, help="fp32, fp16, bf16 (engine permitting).")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--resolution", "-r", type=click.IntRange(min=1), default=224, show_default=True)
@click.option("--num-classes", type=click.IntRange(min=0), default=1000, show_default=True)
@click.option("--samples", type=click.IntRange(min=1), default=300, show_default=True,
              help="Space members whose operators (snapped to the channel grid) define the table's grid.")  # fmt: skip
@click.option("--limit", type=click.IntRange(min=1), help="Measure at most the first N grid operators.")
@click.option("--runs", type=click.IntRange(min=1), default=10, show_default=True, help="Timed runs per round.")
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Interleaved rounds over each chunk of operators (an entry: median of runs x rounds).",
)
@click.option(
    "--chunk",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Operators measured together, round by round.",
)
@click.option(
    "--timer",
    type=click.Choice(["host", "kernels"]),
    help="onnxruntime only: host clock around each run, or profiler kernel times of the operator in "
    "context (default on the CPU: kernels; see `zennas.latency.engines.ort`).",
)
@click.option("--timing", type=click.Choice(["graph", "eager"]),
              help=f"{TIMING_HELP} Default: graph for torch on a GPU, eager otherwise.")  # fmt: skip
@click.option("--operators", type=click.Choice(["in-context", "alone"]),
              help="Time each operator between helper neighbours whose time is left out (in-context), or alone. "
              "Default: in-context with --timer kernels and with torch on a GPU, alone otherwise.")  # fmt: skip
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True),
              help="Seconds after which no new chunk starts; the table is written with what was measured "
              "(operators go member by member, so it covers whole networks; rerun to extend it).")  # fmt: skip
@click.option("--warmup-ms", type=click.FloatRange(min=0), default=50.0, show_default=True,
              help="Warm-up of each operator before its timed runs (at least 3 runs as well).")  # fmt: skip
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads of the engine.")
@click.option("--exporter", type=click.Choice(["torchscript", "dynamo", "auto"]), default="torchscript",
              show_default=True, help="ONNX exporter for onnxruntime/tensorrt (TorchScript: ~10x faster).")  # fmt: skip
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--out", required=True, help="Table file to write (.json or .json.gz); a table already there is "
              "resumed and extended, any other file is refused.")  # fmt: skip
@_one_line_errors
def profile_command(
    space, engine, device, precision, batch_size, resolution, num_classes, samples, limit, runs, rounds, chunk, timer,
    timing, operators, time_limit, warmup_ms, threads, exporter, seed, out,
) -> None:  # fmt: skip
    """Measure a latency table for a space on this machine (resumable: rerun the same command)."""
    from pathlib import Path

    from zennas.latency.engines import get_engine
    from zennas.latency.profile import profile, space_grid, table_header
    from zennas.latency.table import NAME_PATTERN

    name = Path(out).name.split(".")[0]  # the table is named after its file
    if NAME_PATTERN.fullmatch(name) is None:
        raise click.UsageError(
            f"--out {out!r} would name the table {name!r}; use a file name that starts with a letter or digit and "
            "holds at most 100 letters, digits, '_' and '-' before its suffix, e.g. --out mytable.json"
        )
    engine = engine or ("onnxruntime" if device == "cpu" else "torch")
    options = {**_engine_options(engine, threads, exporter), **_timing_options(engine, timing)}
    if engine == "onnxruntime":
        options["timer"] = timer or ("kernels" if device == "cpu" and operators != "alone" else "host")
    elif timer:
        raise click.UsageError(f"--timer applies to the onnxruntime engine only, not {engine}")
    if operators == "alone" and options.get("timer") == "kernels":
        raise click.UsageError("--timer kernels times operators in context only; use --timer host to time them alone")
    timer = get_engine(engine, device=device, precision=precision, **options)
    ops = space_grid(space, resolution=resolution, num_classes=num_classes, samples=samples, seed=seed, by_member=True)
    if limit:
        ops = ops[:limit]
    command = "zennas profile " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "zennas profile"
    header = table_header(
        name=name, engine=timer, batch_size=batch_size, resolution=resolution, space=space,
        op_kinds=sorted({op.kind for op in ops}), command=command, activations={op.act for op in ops},
        in_context=None if operators is None else operators == "in-context",
    )  # fmt: skip
    started = time.monotonic()

    def progress(done: int, total: int, elapsed: float) -> None:
        if done == total or done % max(1, total // 50) == 0:
            eta = elapsed / done * (total - done)
            click.echo(f"profiled {done}/{total} ({elapsed:.0f} s, ETA {eta:.0f} s)", err=True)

    result = profile(
        ops, timer, batch_size=batch_size, out=out, header=header, runs=runs, rounds=rounds, chunk=chunk,
        min_warmup_ms=warmup_ms, time_limit_s=time_limit, progress=progress,
    )  # fmt: skip
    t = header["timing"]
    click.echo(
        f"{out}: {len(result.table.entries)} entries ({result.measured} measured now, {result.reused} reused) "
        f"in {time.monotonic() - started:.0f} s; {result.table.describe()}; {t['mode']} timing, operators "
        f"{t['operators']}"
    )
    if result.floored:
        click.echo(f"{result.floored} operators cost nothing measurable beside their helpers (recorded as 1e-6 ms)")
    if result.remaining:
        click.echo(f"{result.remaining} operators left after --time-limit; rerun the same command to add them")


@main.group("train")
def train_group() -> None:
    """Train a network found by a search (or any architecture) on a dataset."""


def _train_options(fn):
    """The options `train classification` and `train longtail` share (applied in this order)."""
    options = [
        click.option("--arch", help="Architecture: a registered name, a string or a file (or use --run)."),
        click.option("--run", "run_dir", type=click.Path(file_okay=False),
                     help="A search's --out folder (uses result.json)."),
        click.option("--data", required=True, type=click.Path(),
                     help="Folder with train/ and val/ class folders, or CIFAR."),
        click.option("--out", required=True, type=click.Path(file_okay=False),
                     help="Folder for checkpoints and metrics."),
        click.option("--epochs", type=click.IntRange(min=1),
                     help="Default: 10, or more on a small set so that the run has at least 300 steps."),
        click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Global batch."),
        click.option("--resolution", type=click.IntRange(min=8), help="Input side (default: the run's or model's)."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Peak learning rate (default: scaled)."),
        click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True),
        click.option("--weight-decay", type=click.FloatRange(min=0), help="Default: 5e-4 (SGD), 0.05 (AdamW)."),
        click.option("--warmup-epochs", type=click.FloatRange(min=0), default=1.0, show_default=True),
        click.option("--label-smoothing", type=click.FloatRange(0, 1), default=0.1, show_default=True),
        click.option("--mixup", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="Beta alpha; 0 = off."),
        click.option("--cutmix", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="Beta alpha; 0 = off."),
        click.option("--ema-decay", type=click.FloatRange(0, 1, max_open=True), default=0.9998, show_default=True),
        click.option("--grad-clip", type=click.FloatRange(min=0), default=0.0, show_default=True, help="0 = off."),
        click.option("--amp", type=click.Choice(["bf16", "fp16", "off"]), default="bf16", show_default=True,
                     help="CUDA only."),
        click.option("--hflip", type=click.FloatRange(0, 1), default=0.5, show_default=True, help=HFLIP_HELP),
        click.option("--channels-last/--no-channels-last", default=True, show_default=True, help=CHANNELS_LAST_HELP),
        click.option("--data-cache", type=click.Choice(["auto", "memory", "off"]), default="auto", show_default=True,
                     help="Keep the decoded images in memory (on the GPU when training there) and augment them a "
                          "batch at a time: auto = when they fit in a quarter of the RAM; off = read the files "
                          "every epoch."),
        click.option("--skip-bad-images", is_flag=True, help=SKIP_BAD_IMAGES_HELP),
        click.option("--teacher", help="Distil from a training --out folder, a model.safetensors, or ARCH."),
        click.option("--teacher-weights", type=click.Path(dir_okay=False), help="Weights of a teacher given as ARCH."),
        click.option("--kd-alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True),
        click.option("--kd-temperature", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True),
        click.option("--kd-feature-weight", type=click.FloatRange(min=0), default=1.0, show_default=True),
        click.option("--seed", type=SEED, default=0, show_default=True),
        click.option("--device", type=DEVICE, help="cpu, cuda or cuda:N (default: cuda if available)."),
        click.option("--workers", type=click.IntRange(min=0), help=WORKERS_HELP),
        click.option("--dialect", help="Parse --arch in this dialect instead of detecting it."),
        click.option("--resume", is_flag=True, help="Continue from the last checkpoint in --out."),
        click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


SKIP_BAD_IMAGES_HELP = "Leave out image files that do not decode (listed) instead of refusing to start."
HFLIP_HELP = ("Mirror probability. Mirroring suits natural photos (objects, scenes, people); use 0 for digits, "
              "text, signs and anything whose mirror image is another class.")  # fmt: skip
CHANNELS_LAST_HELP = ("Keep activations in NHWC memory layout, on the GPU and on the CPU. On a 2-core CPU a training "
                      "step took 0.55-0.98x the NCHW time for four zoo networks but 1.09-1.29x for an 8-GMAC one "
                      "(benchmarks/bench_train_speed.py --layouts): turn it off if epochs get slower.")  # fmt: skip
WORKERS_HELP = ("Loader processes reading files (default: up to 8 of the cores on CUDA, half of them on the CPU; "
                "none when the images are kept in memory). The numbers do not depend on it.")  # fmt: skip


def _echo_skipped(out: str, metrics: dict, shown: int = 20) -> None:
    """List the image files a --skip-bad-images run left out (all of them are in OUT/metrics.json)."""
    skipped = metrics.get("skipped_images") or []
    if skipped:
        click.echo(f"left out {len(skipped)} image(s) that do not decode (all listed in {out}/metrics.json):", err=True)
        for image in skipped[:shown]:
            click.echo(f"  {image['path']}: {image['problem']}", err=True)
        if len(skipped) > shown:
            click.echo(f"  and {len(skipped) - shown} more", err=True)


def _train_with_progress(train, config, describe: Callable[[dict], str]) -> dict:
    """Run `train(config, on_step=..., on_epoch=...)` with a progress bar per epoch and, after each
    epoch, a line `epoch N<describe(record)>`; returns the trainer's metrics."""
    bar = contextlib.ExitStack()

    seen: dict[str, Any] = {}

    def speed() -> str:
        info = seen.get("info")
        return "" if info is None else f"{info.images_per_s:,.0f} img/s, {info.data_wait:.0%} waiting for data"

    def on_step(epoch: int, step: int, steps: int, info: Any) -> None:
        seen["info"] = info
        if step == 1:  # one progress bar per epoch
            bar.close()
            bar.advance = bar.enter_context(_progress(steps, f"epoch {epoch}/{info.epochs}", speed))
        bar.advance(step)
        if step == steps:
            bar.close()

    def on_epoch(r: dict) -> None:
        rate = (f", {r['images_per_s']:,.0f} img/s, {r['data_wait']:.0%} waiting for data"
                if "images_per_s" in r else "")  # fmt: skip
        click.echo(f"epoch {r['epoch']}{describe(r)}  ({r['seconds']:.0f} s{rate})", err=True)

    with bar:
        return train(config, on_step=on_step, on_epoch=on_epoch)


def _classification_epoch(r: dict) -> str:
    ema = f"  ema top-1 {r['ema_top1']:.2f}" if r["ema_top1"] is not None else ""
    stage = " (classifier re-training)" if r.get("stage") == 2 else ""
    return f"{stage}: loss {r['train_loss']:.4f}  top-1 {r['top1']:.2f}{ema}"


@train_group.command("classification")
@_train_options
@_one_line_errors
def train_classification_command(arch, run_dir, data, out, **options) -> None:
    """Train ARCH on an image-classification dataset; checkpoints and metrics go to --out."""
    from zennas.train.classification import TrainConfig, train_classification

    config = TrainConfig(data=data, out=out, arch=arch, run=run_dir, **options)
    started = time.monotonic()
    metrics = _train_with_progress(train_classification, config, _classification_epoch)
    _echo_skipped(out, metrics)
    click.echo(
        f"{out}: top-1 {metrics['top1']:.2f} %  top-5 {metrics['top5']:.2f} % ({metrics['reported']} weights) after "
        f"{metrics['epochs']} epochs in {time.monotonic() - started:.0f} s"
    )


@train_group.command("longtail")
@_train_options
@click.option("--method", type=click.Choice(LONGTAIL_METHODS), default="ce", show_default=True, help="Recipe.")
@click.option("--imbalance-factor", type=click.FloatRange(min=1), help="Train on a long-tailed subset (n_max/n_min).")
@click.option("--subset-seed", type=int, default=0, show_default=True, help="Seed of the long-tailed subset.")
@click.option("--crt-epochs", type=click.IntRange(min=1), help="cRT classifier epochs (default: epochs/10).")
@click.option("--tau", type=click.FloatRange(min=0), default=1.0, show_default=True, help="tau-normalisation exponent.")
@click.option("--la-tau", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Logit adjustment's tau.")
@click.option("--cb-beta", type=click.FloatRange(0, 1, max_open=True), default=0.9999, show_default=True)
@click.option("--dive-temperature", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True)
@click.option("--dive-power", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True)
@click.option("--many-threshold", type=click.IntRange(min=0), default=100, show_default=True, help="Many-shot: > N.")
@click.option("--few-threshold", type=click.IntRange(min=0), default=20, show_default=True, help="Few-shot: < N.")
@_one_line_errors
def train_longtail_command(arch, run_dir, data, out, **options) -> None:
    """Train ARCH on long-tailed data with a re-balancing METHOD; reports many/medium/few-shot accuracy."""
    from zennas.train.classification import LongtailConfig, train_classification

    config = LongtailConfig(data=data, out=out, arch=arch, run=run_dir, **options)
    started = time.monotonic()
    m = _train_with_progress(train_classification, config, _classification_epoch)
    _echo_skipped(out, m)

    def group(name: str) -> str:
        return "n/a" if m[name] is None else f"{m[name]:.2f}"

    click.echo(
        f"{out}: {m['method']}: top-1 {m['top1']:.2f} %  balanced {m['balanced_top1']:.2f} %  many {group('many')}  "
        f"medium {group('medium')}  few {group('few')} (imbalance {m['imbalance']:.0f}) after {m['epochs']} epochs "
        f"in {time.monotonic() - started:.0f} s"
    )


@train_group.command("detection")
@click.option("--arch", help="Backbone: a registered name, a string or a file (or use --run).")
@click.option("--run", "run_dir", type=click.Path(file_okay=False), help="A search's --out folder (uses result.json).")
@click.option("--data", required=True, type=click.Path(), help="COCO folder: annotations/instances_{train,val}*.json.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for checkpoints and metrics.")
@click.option("--epochs", type=click.IntRange(min=1), default=12, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Global batch.")
@click.option("--resolution", type=click.IntRange(min=32),
              help="Shorter image side (default: the --run's search resolution, else the training images' median "
                   "shorter side, at most 800: images are not scaled up).")  # fmt: skip
@click.option("--max-size", type=click.IntRange(min=32), help="Longer side cap (default: resolution x 1333/800).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True),
              help="Peak learning rate (default: 2e-3 x sqrt(batch/16) AdamW, 0.01 x batch/16 SGD).")  # fmt: skip
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), help="Default: 0.05 (AdamW), 1e-4 (SGD).")
@click.option("--warmup-epochs", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--ema-decay", type=click.FloatRange(0, 1, max_open=True), default=0.9998, show_default=True)
@click.option("--grad-clip", type=click.FloatRange(min=0), default=0.0, show_default=True, help="0 = off.")
@click.option("--amp", type=click.Choice(["bf16", "fp16", "off"]), default="bf16", show_default=True, help="CUDA only.")
@click.option("--hflip", type=click.FloatRange(0, 1), default=0.5, show_default=True, help=HFLIP_HELP)
@click.option("--fpn-channels", type=click.IntRange(min=8), default=128, show_default=True, help="Multiple of 8.")
@click.option("--head-convs", type=click.IntRange(min=1), default=4, show_default=True, help="Convs per head tower.")
@click.option("--score-thresh", type=click.FloatRange(0, 1, max_open=True), default=0.05, show_default=True)
@click.option("--nms-thresh", type=click.FloatRange(0, 1, min_open=True), default=0.6, show_default=True)
@click.option("--detections-per-img", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--backbone-weights", type=click.Path(), help="Start from a classification --out folder's weights.")
@click.option("--skip-bad-boxes", is_flag=True, help="Drop (and count) degenerate or out-of-image boxes.")
@click.option("--eval-every", type=click.IntRange(min=1), default=1, show_default=True, help="Epochs between mAPs.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", type=DEVICE, help="cpu, cuda or cuda:N (default: cuda if available).")
@click.option("--workers", type=click.IntRange(min=0), help=WORKERS_HELP)
@click.option("--dialect", help="Parse --arch in this dialect instead of detecting it.")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in --out.")
@click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
@click.option("--onnx/--no-onnx", "export_onnx", default=True, show_default=True, help="Write OUT/detector.onnx.")
@click.option("--onnx-exporter", type=click.Choice(["auto", "dynamo", "torchscript"]), default="auto",
              show_default=True)  # fmt: skip
@_one_line_errors
def train_detection_command(arch, run_dir, data, out, **options) -> None:
    """Train an FCOS detector (FPN on C3-C5) on a COCO dataset; COCO mAP and detector.onnx go to --out."""
    from zennas.train.detection import DetectionConfig, train_detection

    config = DetectionConfig(data=data, out=out, arch=arch, run=run_dir, **options)
    started = time.monotonic()

    def describe(r: dict) -> str:
        scores = f"  mAP {r['map']:.3f}  mAP@0.5 {r['map_50']:.3f}" if r["map"] is not None else ""
        return f": loss {r['train_loss']:.4f}{scores}"

    m = _train_with_progress(train_detection, config, describe)
    onnx = f"; {m['onnx']['path']} (max rel. error {m['onnx']['max_rel_error']:.1e})" if "onnx" in m else ""
    click.echo(
        f"{out}: mAP {m['map']:.3f}  mAP@0.5 {m['map_50']:.3f}  mAP@0.75 {m['map_75']:.3f} ({m['reported']} weights) "
        f"after {m['epochs']} epochs in {time.monotonic() - started:.0f} s{onnx}"
    )


@main.command("eval")
@click.argument("checkpoint", type=click.Path())
@click.option("--data", required=True, type=click.Path(), help="Folder with val/ class folders (or CIFAR).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--device", type=DEVICE, default="cpu", show_default=True)
@click.option(
    "--plot", "plot_path", help="Confusion-matrix PNG (default: confusion_matrix.png in the checkpoint folder)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_one_line_errors
def eval_command(checkpoint, data, batch_size, device, plot_path, as_json) -> None:
    """Accuracy of trained weights (a training --out folder or its model.safetensors) on val/."""
    from pathlib import Path

    from zennas.train.evaluate import evaluate_checkpoint

    if plot_path is None:
        folder = Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent
        plot_path = folder / "confusion_matrix.png"
    result = evaluate_checkpoint(checkpoint, data, batch_size=batch_size, device=device, plot=plot_path)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  on {result['images']} images; "
               f"confusion matrix: {result['plot']}")  # fmt: skip


@train_group.command("reid")
@click.option("--arch", help="Backbone architecture: a registered name, a string or a file (or use --run).")
@click.option("--run", "run_dir", type=click.Path(file_okay=False), help="A search's --out folder (uses result.json).")
@click.option("--data", required=True, type=click.Path(),
              help="Market-1501 layout: bounding_box_train/, query/, bounding_box_test/.")  # fmt: skip
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for checkpoints and metrics.")
@click.option("--epochs", type=click.IntRange(min=1), default=60, show_default=True)
@click.option("--ids-per-batch", "-P", "p", type=click.IntRange(min=2), default=16, show_default=True,
              help="P: identities per batch (per process).")  # fmt: skip
@click.option("--images-per-id", "-K", "k", type=click.IntRange(min=2), default=4, show_default=True,
              help="K: images per identity in a batch.")  # fmt: skip
@click.option("--height", type=click.IntRange(min=8), default=256, show_default=True, help="Input height.")
@click.option("--width", type=click.IntRange(min=8), default=128, show_default=True, help="Input width.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True),
              help="Peak learning rate (default: (P*K)/64 x 3.5e-3 for Adam from scratch, 3.5e-4 with --pretrained, "
                   "0.05 for SGD).")  # fmt: skip
@click.option("--optimizer", type=click.Choice(["adam", "adamw", "sgd"]), default="adam", show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=5e-4, show_default=True)
@click.option("--warmup-epochs", type=click.FloatRange(min=0), default=5.0, show_default=True)
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True)
@click.option("--margin", type=click.FloatRange(min=0), default=0.3, show_default=True, help="Triplet margin.")
@click.option("--soft-margin", is_flag=True, help="Triplet loss log(1 + exp(d_ap - d_an)) instead of a margin.")
@click.option("--id-weight", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--triplet-weight", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--hflip", type=click.FloatRange(0, 1), default=0.5, show_default=True, help=HFLIP_HELP)
@click.option("--pad", type=click.IntRange(min=0), help="Pad-and-crop pixels (default: 10 at height 256, scaled).")
@click.option("--erasing", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Random-erasing probability.")  # fmt: skip
@click.option("--skip-bad-images", is_flag=True, help=SKIP_BAD_IMAGES_HELP)
@click.option("--neck", type=click.Choice(["after", "before"]), default="after", show_default=True,
              help="Embed with the BNNeck's output (after) or its input (before).")  # fmt: skip
@click.option("--metric", type=click.Choice(["cosine", "euclidean"]), default="cosine", show_default=True)
@click.option("--eval-every", type=click.IntRange(min=1), default=10, show_default=True,
              help="Evaluate every N epochs (and after the last).")  # fmt: skip
@click.option("--rerank", is_flag=True, help="Also report k-reciprocal re-ranked figures (last epoch).")
@click.option("--k1", type=click.IntRange(min=1), default=20, show_default=True, help="Re-ranking k1.")
@click.option("--k2", type=click.IntRange(min=1), default=6, show_default=True, help="Re-ranking k2.")
@click.option("--lambda", "lambda_value", type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help="Re-ranking weight of the original distance.")  # fmt: skip
@click.option("--ema-decay", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="0 = no EMA.")  # fmt: skip
@click.option("--grad-clip", type=click.FloatRange(min=0), default=0.0, show_default=True, help="0 = off.")
@click.option("--amp", type=click.Choice(["bf16", "fp16", "off"]), default="bf16", show_default=True, help="CUDA only.")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True, help=CHANNELS_LAST_HELP)
@click.option("--pretrained", type=click.Path(), help="Backbone weights: a training --out folder or .safetensors.")
@click.option("--eval-batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", type=DEVICE, help="cpu, cuda or cuda:N (default: cuda if available).")
@click.option("--workers", type=click.IntRange(min=0), help=WORKERS_HELP)
@click.option("--dialect", help="Parse --arch in this dialect instead of detecting it.")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in --out.")
@click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
@_one_line_errors
def train_reid_command(arch, run_dir, data, out, **options) -> None:
    """Train a ReID embedding (BNNeck, ID + triplet loss, P x K batches) on a Market-1501-layout folder.

    Reports CMC rank-1/5/10 and mAP in percent (Market-1501 protocol) in --out/metrics.json.
    """
    from zennas.train.reid import ReidConfig, train_reid

    config = ReidConfig(data=data, out=out, arch=arch, run=run_dir, **options)
    started = time.monotonic()

    def describe(r: dict) -> str:
        scores = f"  rank-1 {r['rank1']:.2f}  mAP {r['map']:.2f}" if "rank1" in r else ""
        return f": loss {r['train_loss']:.4f}{scores}"

    m = _train_with_progress(train_reid, config, describe)
    _echo_skipped(out, m)
    rerank = f"; re-ranked rank-1 {m['rerank_rank1']:.2f} %  mAP {m['rerank_map']:.2f} %" if config.rerank else ""
    click.echo(
        f"{out}: rank-1 {m['rank1']:.2f} %  rank-5 {m['rank5']:.2f} %  mAP {m['map']:.2f} % "
        f"(random ranking: {m['chance_rank1']:.2f} % / {m['chance_map']:.2f} %){rerank} after {m['epochs']} epochs "
        f"in {time.monotonic() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
