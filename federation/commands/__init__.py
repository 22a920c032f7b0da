"""One module per `fedgate` command, each with ``run(args) -> int``."""
