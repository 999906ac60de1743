"""The page `dvc plots show` writes, offline: a template with the chart libraries inlined (`build`), and a check in
headless Chromium that every image and chart on it rendered (`browser`; `python -m pipeline.plots_page`)."""
