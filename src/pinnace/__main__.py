"""``python -m pinnace``."""

from pinnace.cli.main import main

main()
