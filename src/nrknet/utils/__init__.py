"""Helpers below the model and data code: atomic writes, the safe checkpoint reader,
distributed helpers, switches, and (:mod:`nrknet.utils.config`) the Hydra glue of the
entry points. Importing this package loads none of them."""
