"""``bench plot``: a faceted comparison from any results folder, readable at 1 run or 5000.

What it draws. One panel per (row value, col value); in each panel one line per setting of the other
varying axes, the seeds aggregated. ``y`` is a per-step trace column (loss, lr, grad_norm, val_acc, ...;
``x`` is then a trace column, usually step) or a per-run column of runs.parquet (final_loss, best_loss,
wall_time_s, ...; ``x`` is then a run column, usually lr). An MLP's width, depth and activation are axes
like the lr (``grid.summary.axis_frame``), so ``--hue width`` works.

Defaults from the data (every one can be named instead):

- panels: ``col`` = optimizer, ``row`` = problem, else scheduler, else loss (where they vary);
- ``hue`` = the remaining axis with the most values (colour); the other remaining axes set the line style
  (a marker shape instead where every line is one point, e.g. a per-run y at one lr);
- colours from ``style.PALETTE`` in sorted order (``style.distinct_colors``; registry names keep their own
  colour where it stays apart): every two colours of the figure differ by ``style.MIN_COLOUR_DISTANCE`` in
  CIELAB and none is the grey of the context lines; a value has one colour in every panel;
- ``logy`` for losses and norms, ``logx`` for an lr axis spanning 10x or more;
- at most ``top`` lines per panel in colour: the best by final loss (mean over seeds where every seed
  finished; a diverged setting ranks last); the other settings are drawn thin and grey, and the legend
  says how many. Legend entries never exceed ``MAX_LEGEND`` (``top`` shrinks, and the title says so).

Aggregation over seeds, honest on a log axis. On a linear axis the line is the mean and the band
``std`` is ±1 standard deviation, ``ci95`` the 95 % interval of the mean (± t·sd/√n, Student's t with n - 1
degrees of freedom). On a log axis both are computed on log y: the line is the geometric mean and the
bands are ×/÷ the geometric standard deviation (``std``) or exp(mean log ± t·sd log/√n) (``ci95``), so a
band never reaches zero or below. ``range`` spans min to max over the seeds; ``none`` draws no band.
Bands need two seeds; values ≤ 0 are left out on a log axis.

Limits. One y range for every panel, from all plotted lines, except where the rows (cols) are problems or
losses, whose values are not comparable: then one range per row (col). The top sits x3 (log) or 10 %
(linear) above the highest line of a setting that finished; a diverging line is cut where it crosses the
top and marked there with a black x (one neutral colour: overlapping marks claim no line's colour). Figures stay within ``style.MAX_FIGSIZE`` however many panels; more than
``MAX_PANELS`` panels, or a hue that is also a panel axis, is refused with one line.
"""

from optbench.figures.facets.choices import (
    BANDS,
    LOG_Y,
    MAX_LEGEND,
    MAX_PANELS,
    TOP_DEFAULT,
    TRACE_COLUMNS,
    FacetResult,
    FacetSpec,
    apply_where,
    check_columns,
    default_name,
    parse_where,
    resolve,
)
from optbench.figures.facets.draw import facet_figure, facet_plot, legend, select_panel
from optbench.figures.facets.lines import aggregate, t975

__all__ = [
    "BANDS",
    "LOG_Y",
    "MAX_LEGEND",
    "MAX_PANELS",
    "TOP_DEFAULT",
    "TRACE_COLUMNS",
    "FacetResult",
    "FacetSpec",
    "aggregate",
    "apply_where",
    "check_columns",
    "default_name",
    "facet_figure",
    "facet_plot",
    "legend",
    "parse_where",
    "resolve",
    "select_panel",
    "t975",
]
