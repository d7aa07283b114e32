"""``cflight benchmark``: several counterfactual methods on the same images, models and targets, one table.

:mod:`~cflight.benchmark.runner` runs each method as an explanation job (Lightning ``predict`` with a
:class:`~cflight.lit.CounterfactualWriter`); :mod:`~cflight.benchmark.table` collects the jobs' metrics.json
into ``table.md``, ``table.csv`` and ``results.json``; :mod:`~cflight.benchmark.plots` draws the trade-offs.
"""
from cflight.benchmark.plots import plot_all
from cflight.benchmark.runner import BenchmarkConfig, load_config, run_benchmark
from cflight.benchmark.table import COLUMNS, REGRESSION_COLUMNS, table_rows, write_tables

__all__ = ["COLUMNS", "REGRESSION_COLUMNS", "BenchmarkConfig", "load_config", "plot_all", "run_benchmark", "table_rows",
           "write_tables"]
