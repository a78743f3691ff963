"""Explorers keep their figures' stored state current (the first-Run-All race), leave room for the toolbar,
and the deployment calculator's carbon chart resolves small deployments."""
import plotly.graph_objects as go
import pytest

from labkit import carbon
from labkit.figures import significant
from labkit.widgets import energy as we
from labkit.widgets import leave_room_for_toolbar, redraw, sync_state


def test_redraw_stores_the_whole_figure_in_the_widget_state():
    """A view drawn after the update must draw the updated figure: the stored state holds it, not only a message."""
    fig = go.FigureWidget(go.Bar(x=[], y=[]))
    with redraw(fig):
        fig.data[0].x, fig.data[0].y = ["a", "b"], [1.0, 2.0]
        fig.layout.title.text = "now"
    assert fig._widget_data[0]["y"] == [1.0, 2.0] and fig._widget_data[0]["x"] == ["a", "b"]
    assert fig._widget_layout["title"]["text"] == "now"
    fig.update_layout(height=222)  # changed outside redraw: stale until synced
    assert fig._widget_layout.get("height") != 222
    sync_state(fig)
    assert fig._widget_layout["height"] == 222
    with pytest.raises(TypeError, match="FigureWidget"):
        sync_state(go.Figure())
    with pytest.raises(TypeError, match="FigureWidget"):
        with redraw(go.Figure()):
            pass


def test_toolbar_room():
    fig = leave_room_for_toolbar(go.Figure(layout=dict(height=300, title_text="t")))
    assert fig.layout.margin.t >= 60 and fig.layout.title.yref == "container"
    # the title's middle sits below the 30-pixel toolbar strip
    assert (1 - fig.layout.title.y) * 300 > 30
    assert leave_room_for_toolbar(go.Figure(), subplot_title_lines=2).layout.margin.t > fig.layout.margin.t
    with pytest.raises(ValueError, match="subplot_title_lines"):
        leave_room_for_toolbar(go.Figure(), subplot_title_lines=-1)


def test_significant():
    assert significant([0.0, 1234.5, 0.00012345, -2.5]) == [0.0, 1230.0, 0.000123, -2.5]
    with pytest.raises(ValueError, match="finite"):
        significant([float("nan")])
    with pytest.raises(ValueError, match="digits"):
        significant([1.0], 0)


def test_carbon_chart_resolves_a_small_model():
    """A digits model (about 0.1 mJ per inference) used to show 0 tCO2e in the cleanest regions."""
    calc = we.deployment_calculator(1e-4, requests_per_day=1e6, region="USA")
    y = list(calc.figure.data[0].y)
    assert min(y) > 0  # NOR, CHE and SWE included
    exact = [calc._calc(c).tco2e_per_year for c in carbon.regions()]
    unit, tonnes = we.carbon_unit(max(exact))
    assert unit in calc.figure.layout.yaxis.title.text and unit in calc.figure.layout.title.text
    assert all(v == pytest.approx(e / tonnes, rel=5e-3) for v, e in zip(y, exact, strict=True))  # 3 significant figures
    assert len(set(y)) == len(set(round(e / tonnes, 12) for e in exact))  # distinct regions stay distinct
    calc.joules.value = 1e3  # a large deployment switches the unit to tonnes
    assert calc.figure.layout.yaxis.title.text.startswith("tCO2e")
    assert we.carbon_unit(0.5) == ("kg CO2e", 1e-3) and we.carbon_unit(0.0) == ("mg CO2e", 1e-9)
    with pytest.raises(ValueError, match="tonnes_max"):
        we.carbon_unit(-1.0)
