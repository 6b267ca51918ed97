"""`zennas tables`, `zennas latency ARCH|validate` and `zennas profile`: latency tables, their
predictions, checks against measurements, and measuring a new table on this machine."""

from __future__ import annotations

import sys
import time

import click

from zennas.cli.common import echo_json, one_line_errors, progress
from zennas.cli.options import (
    EXPORTER_CHOICE,
    POSITIVE,
    TIMING_HELP,
    arch_options,
    batch_size_option,
    device_option,
    dialect_option,
    json_option,
    num_classes_option,
    options,
    resolution_option,
    rounds_options,
    seed_option,
)
from zennas.io import writable_file

TABLE_BATCH_HELP = "Batch (default: the table's budget batch)."
TABLE_OPTIONS = options(
    click.option("--table", "table", help="Table file or shipped table name (zennas tables)."),
    click.option("--gpu", help="Use the shipped table of this GPU family, e.g. V100."),
)


class _ArchOrSubcommand(click.Group):
    """`zennas latency ARCH ...` predicts; `zennas latency validate ...` runs the subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["predict", *args]
        return super().parse_args(ctx, args)


def open_latency_table(table: str | None, gpu: str | None, precision: str | None):
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


def engine_options(engine: str, threads: int | None, exporter: str | None) -> dict:
    """Engine options from CLI flags: threads (CPU engines), exporter (engines that run ONNX)."""
    options: dict = {"threads": threads} if threads and engine in ("torch", "onnxruntime") else {}
    if exporter and engine in ("onnxruntime", "tensorrt"):
        options["exporter"] = exporter
    return options


def timing_options(engine: str, timing: str | None) -> dict:
    """The engine option of --timing graph|eager (torch and onnxruntime have CUDA-graph replay)."""
    if timing is None:
        return {}
    if engine not in ("torch", "onnxruntime"):
        if timing == "graph":
            raise click.UsageError(f"--timing graph applies to the torch and onnxruntime engines, not {engine}")
        return {}
    return {"cuda_graph": timing == "graph"}


def measure_device(table, device: str | None) -> str:
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


def table_engine(
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
    options.update(engine_options(engine, threads, exporter))
    options.update(timing_options(engine, timing))
    precision = table.header["precision"] if device != "cpu" else "fp32"
    return get_engine(engine, device=device, precision=precision, **options)


def timing_label(measured) -> str:
    """How a Timing was taken, for output: graph replay or eager on a GPU, nothing on the CPU."""
    if "cuda_graph" not in measured.options:
        return ""
    return ", graph replay" if measured.options["cuda_graph"] else ", eager"


@click.command("tables")
@json_option("Print one JSON list of table headers.")
@one_line_errors
def tables_command(as_json) -> None:
    """List the shipped latency tables."""
    from zennas.latency.shipped import shipped_tables
    from zennas.latency.table import load_table

    loaded = [load_table(path) for path in shipped_tables().values()]
    if as_json:
        return echo_json([{**t.header, "entries": len(t.entries)} for t in loaded])
    click.echo(f"{'name':<28} {'device':<10} {'engine':<12} {'precision':<9} {'batch':<14} {'entries':>8}  budget")
    for t in loaded:
        h = t.header
        device = h["device"].get("family") or h["device"].get("name", "?")
        batches = "/".join(map(str, t.batch_sizes))
        budget = (h.get("budget") or {}).get("meaning", "")
        line = f"{t.name:<28} {device:<10} {h['engine']:<12} {h['precision']:<9} {batches:<14} {len(t.entries):>8}"
        click.echo(f"{line}  {budget}")


@click.group("latency", cls=_ArchOrSubcommand)
def latency_group() -> None:
    """Predict latency from a table: `zennas latency ARCH (--table T | --gpu V100)`; `zennas latency validate`."""


@latency_group.command("predict", hidden=True)
@click.argument("arch")
@TABLE_OPTIONS
@batch_size_option(TABLE_BATCH_HELP)
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]), help="Require this precision.")
@arch_options("Classifier outputs (default: the model's own).")
@dialect_option()
@click.option("--measure", is_flag=True, help="Also time the whole network the table's way and print both.")
@click.option("--engine", help="Timing engine for --measure (default: the table's, with its threads and exporter).")
@device_option(help="Device for --measure (cpu, cuda, cuda:1; default: the table's, cuda for a GPU table).")
@click.option("--timing", type=click.Choice(["graph", "eager"]), help=f"For --measure: {TIMING_HELP} "
              "Default: the table's.")  # fmt: skip
@click.option("--runs", type=POSITIVE, default=50, show_default=True, help="Timed runs for --measure.")
@json_option()
@one_line_errors
def latency_predict_command(
    arch, table, gpu, batch_size, precision, resolution, num_classes, use_se, dialect, measure, engine, device, timing,
    runs, as_json,
) -> None:  # fmt: skip
    """Predicted latency of ARCH (a model name, a string or a file)."""
    from zennas.api import settings_for
    from zennas.latency.predict import predict
    from zennas.models import resolve_arch

    chosen = open_latency_table(table, gpu, precision)
    spec, entry = resolve_arch(arch, dialect)
    resolution, num_classes, use_se = settings_for(spec, entry, resolution, num_classes, use_se)
    p = predict(spec, chosen, resolution=resolution, num_classes=num_classes, use_se=use_se, batch_size=batch_size)
    out = {**p.to_dict(), "table_header": {k: chosen.header[k] for k in ("device", "engine", "precision")}}
    if measure:
        from zennas.build import BuildOptions, build

        device = measure_device(chosen, device)
        timer = table_engine(chosen, engine, device, timing=timing)
        engine = timer.name
        model = build(spec, BuildOptions(num_classes=num_classes, use_se=use_se))
        measured = timer.time(model, (p.batch_size, 3, resolution, resolution), runs=runs)
        out["measured"] = measured.to_dict()
        out["ratio"] = p.latency_ms_per_batch / measured.ms_per_batch
        out["relative_error"] = (p.latency_ms_per_batch - measured.ms_per_batch) / measured.ms_per_batch
    if as_json:
        return echo_json(out)
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
            f"{runs}; {engine}, {timer.device}, {measured.precision}{timing_label(measured)})"
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
@device_option(help="Device (default: the table's, cuda for a GPU table).")
@click.option("--timing", type=click.Choice(["graph", "eager"]), help=f"{TIMING_HELP} Default: the table's.")
@resolution_option("Input side (default: the table's budget).")
@num_classes_option(None, default=1000, show_default=True)
@batch_size_option(TABLE_BATCH_HELP)
@seed_option()
@rounds_options(5, 10, "networks", "a measurement")
@click.option("--chunk", type=POSITIVE, default=64, show_default=True,
              help="Networks measured together, round by round (at most 250M parameters per chunk).")  # fmt: skip
@click.option("--threads", type=POSITIVE, help="CPU threads of the engine (default: the table's).")
@click.option("--exporter", type=EXPORTER_CHOICE, help="ONNX exporter for onnxruntime/tensorrt (default: the table's).")
@click.option("--fit", is_flag=True, help="Fit an affine correction on half the samples; report the other half.")
@click.option("--save-fit", help="With --fit: write the table with the fitted correction to this file "
              "(a latency table already there is replaced; any other file is refused).")  # fmt: skip
@click.option("--log", "log_path", help="JSON-lines log of measurements (resume). Default under .zennas-cache/.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True),
              help="Seconds after which no new chunk starts; the report covers the networks measured.")  # fmt: skip
@click.option("--plot", "plot_path", help="Predicted-vs-measured scatter (.svg).")
@json_option()
@one_line_errors
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
    device = measure_device(chosen, device)
    timer = table_engine(chosen, engine, device, threads, exporter, timing)
    engine = timer.name
    if log_path is None:
        log_path = default_log_path(chosen, space, engine, device, resolution)
        log_path.parent.mkdir(parents=True, exist_ok=True)
    with progress(samples, "measuring") as advance:
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
        return echo_json(report.to_json())
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


@click.command("profile")
@click.option("--space", required=True, help="Search space whose operators to measure (zennas spaces).")
@click.option("--engine", type=click.Choice(["torch", "onnxruntime", "tensorrt"]),
              help="Timing engine (default: onnxruntime on the CPU, torch on a GPU).")  # fmt: skip
@device_option("cpu")
@click.option("--precision", default="fp32", show_default=True, help="fp32, fp16, bf16 (engine permitting).")
@batch_size_option(None, default=1, show_default=True)
@resolution_option(None, default=224, show_default=True)
@num_classes_option(None, default=1000, show_default=True)
@click.option("--samples", type=POSITIVE, default=300, show_default=True,
              help="Space members whose operators (snapped to the channel grid) define the table's grid.")  # fmt: skip
@click.option("--limit", type=POSITIVE, help="Measure at most the first N grid operators.")
@rounds_options(10, 3, "operators", "an entry")
@click.option(
    "--chunk",
    type=POSITIVE,
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
@click.option("--threads", type=POSITIVE, help="CPU threads of the engine.")
@click.option("--exporter", type=EXPORTER_CHOICE, default="torchscript",
              show_default=True, help="ONNX exporter for onnxruntime/tensorrt (TorchScript: ~10x faster).")  # fmt: skip
@seed_option()
@click.option("--out", required=True, help="Table file to write (.json or .json.gz); a table already there is "
              "resumed and extended, any other file is refused.")  # fmt: skip
@one_line_errors
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
    options = {**engine_options(engine, threads, exporter), **timing_options(engine, timing)}
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
