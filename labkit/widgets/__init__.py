"""Interactive explorers (ipywidgets + plotly FigureWidget), one module per topic.

Every explorer precomputes what it shows, so moving a control only looks results up and the
figure updates at once. Each exposes its controls and figures as attributes, so tests (and
curious learners) can drive it from Python.

Every explorer changes its figures through :func:`redraw`, never with a bare ``batch_update``:
see there for the race it closes (explorers that came up blank after the first Run All).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy

import plotly.graph_objects as go


def sync_state(fig: go.FigureWidget) -> None:
    """Store ``fig``'s whole current data and layout in its widget model (what a new view draws from).

    Why: plotly's FigureWidget sends a change as a *message* (``_py2js_update``) that its front-end code
    applies to the model's stored figure. That code is a 5 MB JavaScript module which the browser
    loads asynchronously after the widget is created; on a busy machine it is still loading when the
    kernel sends the explorer's first updates, nobody applies them, and the view later draws the
    stale figure it was created with: empty axes (-1 to 6), a lost layout. The stored figure itself
    is ordinary widget state, which ipywidgets always delivers (and re-sends after a page reload), so
    keeping it current makes every view draw the right figure however late it renders. plotly does
    the same when a FigureWidget is displayed on its own (``_repr_mimebundle_``); an explorer shows its
    figures inside a box, where that never runs.
    """
    if not isinstance(fig, go.FigureWidget):
        raise TypeError(f"fig must be a plotly go.FigureWidget, got {type(fig).__name__}")
    fig._widget_data = deepcopy(fig._data)
    fig._widget_layout = deepcopy(fig._layout_obj._props)


@contextmanager
def redraw(fig: go.FigureWidget) -> Iterator[go.FigureWidget]:
    """``with redraw(fig): ...``: plotly's ``batch_update`` (one message for all changes), then :func:`sync_state`.

    Views that exist redraw from the message; views not yet drawn draw from the stored state.
    """
    if not isinstance(fig, go.FigureWidget):
        raise TypeError(f"fig must be a plotly go.FigureWidget, got {type(fig).__name__}")
    with fig.batch_update():
        yield fig
    sync_state(fig)


#: Pixels at the top of a figure that plotly's toolbar (the modebar) covers while the pointer is over it.
TOOLBAR_PX = 30


def leave_room_for_toolbar(fig: go.Figure, subplot_title_lines: int = 0) -> go.Figure:
    """Move ``fig``'s title below plotly's toolbar (which otherwise covers it) and grow the top margin to fit.

    The title sits in a band just under the toolbar strip; subplot titles (``subplot_title_lines`` lines
    of them) sit under the title, right above the plots. Returns ``fig``.
    """
    if isinstance(subplot_title_lines, bool) or not isinstance(subplot_title_lines, int) or subplot_title_lines < 0:
        raise ValueError(f"subplot_title_lines must be an int >= 0, got {subplot_title_lines!r}")
    height = fig.layout.height or 450  # plotly's default height
    title_band = 26  # one line of title text
    top = TOOLBAR_PX + title_band + 18 * subplot_title_lines + 8
    fig.update_layout(margin_t=top, title=dict(yref="container", y=1 - (TOOLBAR_PX + title_band / 2) / height,
                                               yanchor="middle"))
    return fig
