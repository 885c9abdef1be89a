"""``python -m apse.experiments``: the command line of :mod:`apse.experiments.cli`."""
from apse.experiments.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
