"""Many runs: spec file -> run configs -> submitit (slurm | local | debug) -> status."""
