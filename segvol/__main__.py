"""``python -m segvol`` (also what ``torchrun -m segvol`` runs)."""

import sys

from segvol.cli import main

sys.exit(main())
