"""The command line: click commands and the renderers of their reports."""
