"""The collector's web UI: server-rendered Jinja pages, one small script each, uPlot charts."""
