"""zennas command line: a thin click group that parses options, calls the library and prints."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from collections.abc import Callable, Iterator

import click

from zennas.errors import ZennasError


def _one_line_errors(fn):
    """Turn library errors into click's one-line `Error: ...` and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ZennasError as error:
            raise click.ClickException(" ".join(str(error).split())) from None

    return wrapper


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
def _progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """Progress on stderr: a bar on a terminal, else a line per ~5 % (readable in a nohup log)."""
    if sys.stderr.isatty():
        with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
            yield lambda done: bar.update(done - bar.pos)
        return
    start = time.monotonic()
    step = max(1, total // 20)

    def advance(done: int) -> None:
        if done % step == 0 or done == total:
            click.echo(f"{label} {done}/{total} ({time.monotonic() - start:.0f} s)", err=True)

    yield advance


@main.command("score")
@click.argument("arch")
@click.option("--proxy", "-p", "proxy", required=True, help="Comma-separated proxy names, e.g. zen,naswot,params.")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), help="Input batch (default: each proxy's own).")
@click.option("--resolution", "-r", type=click.IntRange(min=1), help="Input side (default: the model's own).")
@click.option("--num-classes", type=click.IntRange(min=0), help="Classifier outputs (default: the model's own).")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True, help="Independent seeded runs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Base seed of every repeat.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 ... (auto = CUDA if present).")
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
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", "-b", type=click.IntRange(min=1), help="Input batch (default: each proxy's own).")
@click.option("--resolution", "-r", type=click.IntRange(min=1), help="Override the dataset's input side.")
@click.option("--num-classes", type=click.IntRange(min=0), help="Override the dataset's class count.")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--device", default="auto", show_default=True)
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


if __name__ == "__main__":
    main()
