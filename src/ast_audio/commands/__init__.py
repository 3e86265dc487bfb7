"""Sub-commands of the `ast-audio` command line, one module each."""
