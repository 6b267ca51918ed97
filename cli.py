"""zennas command line entry point (`zennas = "cli:main"`); the commands live in zennas.cli."""

from zennas.cli import main

if __name__ == "__main__":
    main()
