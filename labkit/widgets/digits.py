"""The first widget of the lab: browse the digits with a slider."""
from __future__ import annotations

import ipywidgets as widgets
import plotly.graph_objects as go

from labkit.data import Split
from labkit.figures import rounded, style
from labkit.widgets import leave_room_for_toolbar, redraw, sync_state


class DigitBrowser(widgets.VBox):
    """A slider over the images of a split and a heatmap of the chosen image."""

    def __init__(self, split: Split):
        if not isinstance(split, Split):
            raise TypeError(f"split must be a labkit.data.Split (e.g. data.digits().test), got {type(split).__name__}")
        if split.x.shape[-1] != 64 and tuple(split.x.shape[-2:]) != (8, 8):
            raise ValueError(f"split must hold 8x8 digit images, got x of shape {tuple(split.x.shape)}")
        # Precompute every image once: moving the slider is then a list lookup.
        self._images = [rounded(img.reshape(8, 8).flip(0), 3) for img in split.x]
        self._labels = split.y.tolist()
        self.slider = widgets.IntSlider(value=0, min=0, max=len(self._labels) - 1, description="image",
                                        continuous_update=True)
        self.figure = go.FigureWidget(go.Heatmap(z=self._images[0], colorscale="gray_r", showscale=False))
        style(self.figure, self._title(0), height=300)
        self.figure.update_layout(width=320)
        leave_room_for_toolbar(self.figure)
        self.figure.update_xaxes(visible=False)
        self.figure.update_yaxes(visible=False)
        sync_state(self.figure)  # the styled figure is what a view drawn later starts from
        self.slider.observe(self._on_change, names="value")
        super().__init__([self.slider, self.figure])

    def _title(self, i: int) -> str:
        return f"image {i}: label {self._labels[i]}"

    def _on_change(self, change) -> None:
        i = change["new"]
        with redraw(self.figure):
            self.figure.data[0].z = self._images[i]
            self.figure.layout.title.text = self._title(i)

    def label_of_current(self) -> int:
        """The label of the image the slider points at."""
        return self._labels[self.slider.value]


def digit_browser(split: Split) -> DigitBrowser:
    """A slider-and-heatmap browser over ``split`` (for example ``data.digits().test``)."""
    return DigitBrowser(split)
