"""`zennas info`, `zennas models`, `zennas spaces`: what an architecture, the zoo and the spaces are."""

from __future__ import annotations

import click

from zennas.cli.common import echo_json, one_line_errors
from zennas.cli.options import arch_options, dialect_option, json_option


@click.command()
@click.argument("arch")
@arch_options()
@click.option(
    "--convention",
    type=click.Choice(["correct", "zennas", "tinynas"]),
    default="correct",
    show_default=True,
    help="Also report FLOPs in a published repository's convention (computed without SE).",
)
@dialect_option()
@click.option("--rechain", is_flag=True, help="Repair legacy strings whose block inputs do not chain (ZenNAS).")
@json_option()
@one_line_errors
def info(arch, resolution, num_classes, use_se, convention, dialect, rechain, as_json) -> None:
    """Exact params, MACs, layers and stage shapes of ARCH (a model name, a string or a file)."""
    from zennas.api import info as describe

    settings = {"resolution": resolution, "num_classes": num_classes, "use_se": use_se}
    result = describe(arch, **settings, convention=convention, dialect=dialect, rechain=rechain)
    if as_json:
        return echo_json(result)
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


@click.command()
@one_line_errors
def spaces() -> None:
    """List the search spaces."""
    from zennas.spaces import get_space, list_spaces

    for name in list_spaces():
        space = get_space(name)
        click.echo(f"{name:<12} {space.dialect:<10} {space.description}")


@click.command()
@click.argument("pattern", default="*")
@json_option("Print one JSON list.")
@one_line_errors
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
        return echo_json(rows)
    click.echo(f"{'name':<22} {'family':<7} {'dataset':<12} {'res':>4} {'classes':>7} {'SE':>3} {'top-1':>6}  status")
    for r in rows:
        click.echo(
            f"{r['name']:<22} {r['family']:<7} {r['dataset']:<12} {r['resolution']:>4} {r['num_classes']:>7} "
            f"{'yes' if r['use_se'] else 'no':>3} {r['top1'] or '-':>6}  {r['status']}"
        )
