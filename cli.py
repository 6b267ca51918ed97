"""zennas command line: a thin click group over the library."""

import click


@click.group()
def main() -> None:
    """Zero-shot, hardware-aware neural architecture search."""


if __name__ == "__main__":
    main()
