"""``python -m apps.transfer.client push|pull``: the same as ``flaskmono-transfer``."""

import sys

from apps.transfer.client.cli import main

sys.exit(main())
