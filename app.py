"""Streamlit entrypoint: `streamlit run app.py` (or `make run`)."""

import streamlit as st

st.set_page_config(page_title="twophase", layout="wide")
st.title("twophase")
st.write("Two-phase training: Adam while the loss surface is non-convex, then conjugate gradient.")
