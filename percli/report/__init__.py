"""The table engine behind `percli table`: collect (run dirs -> evaluations), select (rows, lr selection,
cells, deltas), layout (blocks and footnotes), render (md / csv / tex), plot (loss curves)."""
