"""weightmapper's command line: one subcommand per module, dispatched by main.py."""
