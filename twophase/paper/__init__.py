"""The source paper beside our runs: its published figures, and the reproduction of its Table 1.

    published.py  the paper's Table 1 as data (twophase/data_files/paper_table1.csv), its budgets
    plan.py       the reproduction's protocol, scales and cells, and which cells are done on disk
    runner.py     run the cells not done yet, one after another (python -m twophase reproduce), or
                  queue, resume and stop them on a JobManager (the Paper page)
    report.py     our figures in the layout of Table 1, the comparison, the files written

Every cell is an ordinary run in the runs folder, tagged reproduce:<reproduction id>. No streamlit.
"""

from twophase.paper.plan import (ALGORITHM_LABELS, ALGORITHMS, PAPER_MODELS, SCALES, TIE_TOLERANCE, VARIANTS, Cell,
                                 CellState, Plan, Scale, cell_states, check_datasets, make_plan,
                                 plan_from_runs, reproduction_ids, tag_for, tagged_runs)
from twophase.paper.published import (BUDGETS, figures_for, final_loss, measured_long, measured_long_sweep, measured_small,
                                      small_run_minutes, switch_study, table)
from twophase.paper.report import collect, comparison, markdown, status_table, sweep_table, table1, write_outputs
from twophase.paper.runner import resumable, run_plan, start_cells, stop_cells

__all__ = ["ALGORITHM_LABELS", "ALGORITHMS", "PAPER_MODELS", "SCALES", "TIE_TOLERANCE", "VARIANTS", "Cell", "CellState",
           "Plan", "Scale", "cell_states", "check_datasets", "make_plan", "plan_from_runs",
           "reproduction_ids", "tag_for", "tagged_runs", "BUDGETS", "figures_for", "final_loss", "table", "collect",
           "comparison", "markdown", "status_table", "sweep_table", "table1", "write_outputs", "run_plan", "measured_small", "measured_long", "measured_long_sweep", "switch_study", "small_run_minutes", "resumable",
           "start_cells", "stop_cells"]
