"""Notebook alias: remove at merge. MoE figures moved to :mod:`labkit.figures.moe`, the measurements behind
them and the committed sweeps to :mod:`labkit.experiments.moe_routing`."""
from labkit.experiments.moe_routing import (  # noqa: F401
    CHAR_CLASSES,
    expert_preferences,
    gpu_benchmarks,
    load_train_sweep,
    route_text,
    sweep_table,
)
from labkit.figures.moe import (  # noqa: F401
    benchmark_figure,
    comparison_figure,
    exchange_diagram,
    load_during_training,
    preferences_figure,
    token_colouring,
)
