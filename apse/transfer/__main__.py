"""``python -m apse.transfer``: runs :func:`apse.transfer.cli.main`."""
from apse.transfer.cli import main

raise SystemExit(main())
