"""``python -m meshdesk`` runs the CLI."""

from __future__ import annotations

import sys

from meshdesk.cli import main

sys.exit(main())
