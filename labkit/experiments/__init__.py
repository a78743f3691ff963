"""Everything that trains or measures for a notebook, in one place.

A notebook (or a ``benchmarks/`` script, a thin command-line wrapper) calls an experiment, gets rows
of plain data back, hands them to :mod:`labkit.figures` to draw and, for a committed result, to
:func:`labkit.results.write`. Widgets never train: they look up what an experiment precomputed.

* :mod:`labkit.experiments.energy_zoo`: the digit classifiers of notebook 05 and their energy rows.
* :mod:`labkit.experiments.kernel_timings`: live GPU timings of the lab's kernels and the committed ones.
* :mod:`labkit.experiments.pruning_sweep`, :mod:`labkit.experiments.pruning_explorer`: notebooks 01-02.
* :mod:`labkit.experiments.llm_evidence`, :mod:`labkit.experiments.llm_energy`: notebook 06.
* :mod:`labkit.experiments.llm_compress`: notebook 07 (healing, quantization, the map of every model).
* :mod:`labkit.experiments.llm_sweep`: how the language-model sweeps score and write their rows.
* :mod:`labkit.experiments.llm_activation`: notebook 08 (activation sparsity against structured pruning).
* :mod:`labkit.experiments.isoflop`: compute-optimal training, IsoFLOP curves of the tiny character GPT.
* :mod:`labkit.experiments.llm_cache`: a response cache in front of SmolLM2, time and energy against the hit rate.
"""
