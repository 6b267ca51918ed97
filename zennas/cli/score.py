"""`zennas score` (zero-cost proxies of one architecture) and `zennas bench proxies` (their rank
correlation with a ground truth)."""

from __future__ import annotations

import click

from zennas.cli.common import echo_json, fmt, one_line_errors, progress
from zennas.cli.options import (
    POSITIVE,
    PROXY_OPTIONS,
    arch_options,
    batch_size_option,
    device_option,
    dialect_option,
    input_options,
    json_option,
    proxy_options,
    seed_option,
)
from zennas.io import writable_file

PROXY_BATCH_HELP = "Input batch (default: each proxy's own)."
AUTO_DEVICE_HELP = "cpu, cuda, cuda:1 ... (auto = CUDA if present)."


@click.command("score")
@click.argument("arch")
@click.option("--proxy", "-p", "proxy", required=True, help="Comma-separated proxy names, e.g. zen,naswot,params.")
@batch_size_option(PROXY_BATCH_HELP)
@arch_options(num_classes_help="Classifier outputs (default: the model's own).", se=False)
@click.option("--repeats", type=POSITIVE, default=1, show_default=True, help="Independent seeded runs.")
@seed_option("Base seed of every repeat.")
@device_option("auto", AUTO_DEVICE_HELP)
@PROXY_OPTIONS
@dialect_option()
@json_option("Print one JSON object {proxy: {mean, std, values, ...}}.")
@one_line_errors
def score_command(
    arch, proxy, batch_size, resolution, num_classes, repeats, seed, device, mode, option_pairs, dialect, as_json
) -> None:
    """Score ARCH (a model name, a string or a file) with zero-cost proxies."""
    from zennas.proxies import score

    options = proxy_options(mode, option_pairs)
    results = score(
        arch, proxy, batch_size=batch_size, resolution=resolution, num_classes=num_classes, repeats=repeats,
        seed=seed, device=device, options=options, dialect=dialect,
    )  # fmt: skip
    if as_json:
        return echo_json({name: r.to_json() for name, r in results.items()})
    click.echo(f"{'proxy':<14} {'mean':>12} {'std':>12} {'n':>3} {'better':>7}  {'s/repeat':>9}  notes")
    for name, r in results.items():
        seconds = r.meta.get("seconds_per_repeat")
        notes = "DEGENERATE: " + str(r.meta.get("reason", "output ignores the input")) if r.degenerate else ""
        if not notes:
            source = r.meta.get("input", "?")
            notes = f"input {source}" + ("" if "analytic" in str(source) else f", batch {r.meta.get('batch_size')}")
        click.echo(
            f"{name:<14} {fmt(r.mean)} {fmt(r.std)} {len(r.values):>3} "
            f"{'higher' if r.higher_is_better else 'lower':>7}  {fmt(seconds, 9)}  {notes}"
        )


@click.group()
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
@click.option("--limit", type=POSITIVE, help="Score a fixed pseudo-random subset of N rows.")
@seed_option()
@batch_size_option(PROXY_BATCH_HELP)
@input_options("Override the dataset's input side.", "Override the dataset's class count.")
@click.option("--repeats", type=POSITIVE, default=1, show_default=True)
@device_option("auto", AUTO_DEVICE_HELP)
@PROXY_OPTIONS
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
@click.option("--threads", type=POSITIVE, default=1, show_default=True, help="torch CPU threads.")
@json_option("Print one JSON object {proxy: {spearman, kendall, n}}.")
@click.option("--plot", "plot_path", help="Scatter of proxy rank vs accuracy per proxy (.svg built in).")
@one_line_errors
def bench_proxies_command(
    csv_path, arch_column, acc_column, index_column, dataset, dialect, proxy, limit, seed, batch_size, resolution,
    num_classes, repeats, device, mode, option_pairs, data_path, cache_dir, no_cache, degenerate, aggregate, threads,
    as_json, plot_path,
) -> None:  # fmt: skip
    """Score every architecture of a CSV and print Spearman/Kendall of each proxy against accuracy."""
    from zennas.bench import ScoreCache, bench_proxies, dataset_settings, load_data, read_ground_truth
    from zennas.bench.plot import write_plot

    options = proxy_options(mode, option_pairs)
    resolution, num_classes, dataset = dataset_settings(acc_column, dataset, resolution, num_classes)
    truth = read_ground_truth(
        csv_path, arch_column=arch_column, acc_column=acc_column, index_column=index_column, dialect=dialect,
        limit=limit,
    )  # fmt: skip
    if plot_path:
        writable_file(plot_path)  # checked before the scoring, not after it
    cache = None if no_cache else ScoreCache(cache_dir)
    data = load_data(data_path) if data_path else None
    with progress(len(truth), "scoring") as advance:
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
        return echo_json(report.to_json())
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
            f"{fmt(seconds, 8)}  {st['input'][name]}"
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
