"""costlaw's exit codes: one table for every verb, so a script (or Slurm's afterok) can tell the outcomes apart.

0 only when all that was asked succeeded. Usage errors (the command line itself) and input errors (a value a
user can fix) differ, as do failures of the work (a run that failed or diverged) and interruptions (preemption
or Ctrl-C, after which the work resumes from its checkpoints). The numbers for usage and internal errors are
BSD sysexits' (EX_USAGE, EX_SOFTWARE), which shells and schedulers already know.
"""

OK = 0
FAILED = 1  # the work ran and some of it failed: a run failed or diverged, a run directory was reported corrupt
INPUT = 2  # bad input a user can fix: a flag's value, a config field, a spec, a data file (one line: field; fix)
INTERRUPTED = 3  # preempted or interrupted (Ctrl-C, SIGTERM): checkpointed, resumable, nothing lost
USAGE = 64  # the command line itself: an unknown verb or flag, a missing argument
INTERNAL = 70  # a bug in costlaw: the traceback is printed; please report it

TABLE = ((OK, "all that was asked succeeded"),
         (FAILED, "the work ran and some of it failed (a run failed or diverged, a run directory was corrupt)"),
         (INPUT, "bad input: a flag's value, a config field, a spec or a data file (the line names it and the fix)"),
         (INTERRUPTED, "preempted or interrupted (Ctrl-C, SIGTERM); checkpointed, resubmit or --resume continues"),
         (USAGE, "usage: an unknown verb or flag, or a missing argument"),
         (INTERNAL, "a bug in costlaw (the traceback is printed)"))
