"""Streamlit entrypoint: `streamlit run app.py` (or `make run`).

The frame around every page: page config, the stylesheet, the process-wide
JobManager, and the navigation. Each page lives in pages/ and reads the
manager from st.session_state["jobs"] (set here on every run, so every page,
in every session, talks to the same registry of background runs).

Environment: TWOPHASE_RUNS (runs folder, default ./runs), TWOPHASE_DATA
(dataset folder, default ./data).
"""

from pathlib import Path

import streamlit as st

from pages.shared import common
from twophase import runs, settings
from twophase.errors import TwophaseError

HERE = Path(__file__).resolve().parent

# The icon is a file of the project: an emoji or material icon would be fetched from a font host, which fails offline.
st.set_page_config(page_title="twophase: Adam, then conjugate gradient", page_icon=str(HERE / "assets" / "favicon.png"),
                   layout="wide")
st.html(HERE / "assets" / "style.css")


# TWOPHASE_JOBS=thread trains in the server's own threads instead of worker processes (debugging).
try:
    jobs_mode = settings.jobs_mode()
except TwophaseError as err:
    st.error(f"{err}. Fix the environment variable and restart the app.")
    st.stop()
# Keyed by the runs folder and mode, so a change of TWOPHASE_RUNS (tests) gets its own registry.
st.session_state["jobs"] = common.job_manager(str(runs.default_runs_dir()), jobs_mode)

pages = [
    st.Page("pages/train.py", title="Train", icon=":material/model_training:", default=True),
    st.Page("pages/compare.py", title="Compare", icon=":material/stacked_line_chart:", url_path="compare"),
    st.Page("pages/runs.py", title="Runs", icon=":material/history:", url_path="runs"),
    st.Page("pages/learn.py", title="Learn", icon=":material/school:", url_path="learn"),
    st.Page("pages/paper.py", title="Paper", icon=":material/menu_book:", url_path="paper"),
]
navigation = st.navigation(pages)
# a page first visited in Streamlit's legacy pages/ mode (a fresh server) came here to get this
# navigation: back to it, with the query parameters of its URL
wanted = st.session_state.pop(common.AFTER_APP_KEY, None)
if wanted is not None:  # url_path None: the default page, Train (its url_path is "")
    page = next(p for p in pages if p.url_path == (wanted["url_path"] or ""))
    st.switch_page(page, query_params=wanted["query_params"] or None)
navigation.run()
