"""``python -m nrknet.data.synthetic``: the same as ``nrknet-synth``."""

from nrknet.data.synthetic.cli import main

raise SystemExit(main())
