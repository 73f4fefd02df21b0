"""The contracts every costlaw package shares, each stated once. Standard library only (rich, if installed,
draws progress bars on a terminal), so the worker on a torch-only GPU host, the store and the CLI all use it.

| module | holds |
|---|---|
| errors.py | `CostlawError` / `ConfigError`: one-line user errors (`field: problem; fix`) |
| validate.py | the field checks every config uses: types, ranges, finite numbers, no bools as numbers |
| files.py | the one atomic write (unique temp name, fsync, os.replace), strict JSON, JSON lines |
| rundir.py | the run directory: file names, format, statuses, run id, `RunDir` writers and readers |
| runlock.py | one trainer per run directory: the trainer's `trainer.lock`, `trainer_alive` |
| env.py | environment and code provenance of a run (versions, GPU, git, source hashes) |
| units.py | SI / binary units, token and byte parsing, terminal tables |
| progress.py | progress on long work: a bar on a terminal, log lines otherwise |
"""
