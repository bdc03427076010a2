"""``python -m netdiff_lib.cli``: the netdiff command line."""

import sys

from netdiff_lib.cli import main

sys.exit(main())
