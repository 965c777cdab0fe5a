"""The paper's studies: overrides per table row (``experiments.study``), the table collector
(``experiments.collect``) and cost estimates; run from the repository root as
``python -m experiments.<name>``."""
