"""``python -m plait`` runs the ``plait`` command."""

import sys

from plait.cli import main

sys.exit(main())
