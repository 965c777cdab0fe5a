"""``python -m nrknet.data.synthetic``: the same as ``nrknet-synth``."""

from nrknet.synth import main

raise SystemExit(main())
