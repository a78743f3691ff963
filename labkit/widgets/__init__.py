"""Interactive explorers (ipywidgets + plotly FigureWidget), one module per topic.

Every explorer precomputes what it shows, so moving a control only looks results up and the
figure updates at once. Each exposes its controls and figures as attributes, so tests (and
curious learners) can drive it from Python.
"""
