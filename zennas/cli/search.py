"""`zennas search`: the best-scoring architecture of a space within latency, FLOPs, params and depth budgets."""

from __future__ import annotations

import time

import click

from zennas.cli.common import one_line_errors, progress
from zennas.cli.latency import open_latency_table
from zennas.cli.options import (
    NON_NEGATIVE,
    OVERWRITE_HELP,
    POSITIVE,
    device_option,
    input_options,
    proxy_options,
    seed_option,
)


@click.command("search")
@click.option("--space", default="zennas-res", show_default=True, help="Search space (zennas spaces).")
@click.option("--preset", help="A published search setting of the space (e.g. imagenet-flops400M for zennas-idw).")
@click.option("--proxy", "-p", default="zen", show_default=True,
              help="A registered proxy, or a weighted sum on raw scales: zen=1,naswot=0.5.")  # fmt: skip
@click.option("--proxy-option", "proxy_option_pairs", multiple=True, metavar="KEY=VALUE",
              help="Option of the objective's proxies (as zennas score -o), e.g. mode=zennas; repeatable.")  # fmt: skip
@click.option("--budget", help="Latency budget per image with a unit: 1ms, 0.8ms/image, 800us.")
@click.option("--budget-batch-size", type=POSITIVE,
              help="Batch of the latency budget (default: the table's budget batch; 64 for V100).")  # fmt: skip
@click.option("--gpu", help="Use the shipped latency table of this GPU family (e.g. V100).")
@click.option("--table", help="Latency table file or shipped name (zennas tables).")
@click.option("--flops-budget", help="MACs budget, e.g. 400M (counted as --convention says); overrides a preset's.")
@click.option("--params-budget", help="Parameter budget, e.g. 5.5M (as --convention says); overrides a preset's.")
@click.option("--max-layers", type=POSITIVE,
              help="At most this many layers (REFERENCE 1.4 counting). Default: the preset's; with a budget and no "
                   "preset, the cap of the space's nearest published preset of that budget.")  # fmt: skip
@click.option("--convention", type=click.Choice(["correct", "zennas", "tinynas"]),
              help="Counting of the FLOPs/params budgets (zennas: the repository's, no SE). Default: the space's "
                   "(zennas for Zen-NAS presets) while the preset states such a budget, else correct.")  # fmt: skip
@input_options("Input side (default: the preset's or 224).", "Classifier outputs (default: the preset's or 1000).")
@click.option("--iterations", type=POSITIVE,
              help="Children generated, screened or scored (default: 1000, or none with --time-limit; Zen-NAS "
                   "scripts: 480,000).")  # fmt: skip
@click.option("--time-limit", help="Stop at the first batch past this much search time: 90s, 8m, 1h (--resume with "
                                   "a longer limit continues).")  # fmt: skip
@click.option("--population", type=POSITIVE, default=64, show_default=True, help="Zen-NAS: 512.")
@click.option("--batch", type=POSITIVE, default=16, show_default=True,
              help="Children scored per batch (the result does not depend on --workers, only on this).")  # fmt: skip
@click.option(
    "--no-funnel",
    is_flag=True,
    help="Score every child with the proxy; by default a closed form, where one covers the objective "
    "(sampled zen), screens --screen-ratio x --batch children and the best --batch are scored.",
)
@click.option("--screen-ratio", type=click.IntRange(min=2), default=64, show_default=True,
              help="With the funnel: children screened per child scored.")  # fmt: skip
@seed_option()
@click.option("--workers", type=POSITIVE, default=1, show_default=True,
              help="Local scoring processes; with --device cuda, candidates in flight on one GPU.")  # fmt: skip
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None,
              help="Score on Ray: --ray (local cluster) or --ray ADDRESS (needs zennas[ray]).")  # fmt: skip
@click.option("--strategy", type=click.Choice(["evolution", "random", "milp"]), default="evolution", show_default=True)
@click.option("--init", "init", help="Seed architecture (default: the space's first seed); must meet every budget.")
@click.option("--proxy-batch-size", type=POSITIVE,
              help="Batch of the proxy's input (default: its own; for zen on the CPU, 4).")  # fmt: skip
@click.option("--threads", type=POSITIVE, default=1, show_default=True, help="torch threads per scorer.")
@device_option("cpu", "Where proxies run: cpu, cuda, cuda:1.")
@click.option("--rescore", type=NON_NEGATIVE,
              help="Re-score the top K at the end with --rescore-repeats draws; the best mean wins (default: 8 with "
                   "the funnel, where single draws pick among many close children; else 0).")  # fmt: skip
@click.option("--rescore-repeats", type=click.IntRange(min=2), default=4, show_default=True)
@click.option("--checkpoint-every", type=POSITIVE, default=64, show_default=True)
@click.option("--out", "out", help="Output folder (default: runs/search-<UTC time>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@one_line_errors
def search_command(
    space, preset, proxy, proxy_option_pairs, budget, budget_batch_size, gpu, table, flops_budget, params_budget,
    max_layers, convention, resolution, num_classes, iterations, time_limit, population, batch, no_funnel,
    screen_ratio, seed, workers, ray_address, strategy, init, proxy_batch_size, threads, device, rescore,
    rescore_repeats, checkpoint_every, out, resume, overwrite, no_plots,
) -> None:  # fmt: skip
    """Find the best-scoring architecture within the budgets, e.g. `zennas search --budget 1ms --gpu V100`."""
    from zennas.search.budget import parse_count_budget, parse_duration, parse_latency_budget
    from zennas.search.constraints import describe_constraints
    from zennas.search.evolution import Settings
    from zennas.wiring import search, search_problem

    if gpu is not None and table is not None:
        raise click.UsageError("give --gpu or --table, not both")
    chosen = open_latency_table(table, gpu, None) if (gpu or table) else None
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
        space, preset=preset, proxy=proxy, proxy_options=proxy_options(None, proxy_option_pairs), table=chosen, **given,
        proxy_batch_size=proxy_batch_size, seed=seed, threads=threads, device=device, resuming=out if resume else None,
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
    with progress(total, "search (s)" if by_time else "search", status) as advance:

        def on_progress(state) -> None:
            c = state.counts
            screened = f", screened {c['screened']:,}" if c["screened"] else ""
            shown["status"] = (f"best {max(m.score for m in state.population):.6g} (it {state.iteration:,}: "
                               f"scored {c['scored']:,}{screened})")  # fmt: skip
            advance(min(total, round(state.wall_time_s)) if by_time else state.iteration)

        return search(problem, settings, out, progress=on_progress, **options)


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
