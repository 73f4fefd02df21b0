"""costlaw's command line. Only parsing and printing lives here; the work is in the packages."""
