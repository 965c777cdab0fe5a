"""``python -m nrknet.demo``: the same as ``nrknet-demo``."""

import sys

from nrknet.demo.command import main

sys.exit(main())
