"""One module per chapter: its config, runs, ablations and claims."""
