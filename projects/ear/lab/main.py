"""`ear eval` (`--hum`: query by humming; `--listen`: growing prefixes), `ear train`
(`--from-catalog`: the learning loop), `ear ingest-memory`, `ear busy`, `ear libraries` and
`ear speed`: their options, parsed here so that the CLI needs none of the lab."""
from __future__ import annotations

import argparse

from ..config import load_config
from ..runtime import configure_threads


def run(command: str, argv: list[str], data_dir: str | None) -> int:
    """Run a lab command with its own arguments (errors: the CLI's)."""
    parser = argparse.ArgumentParser(prog=f"ear {command}")
    if command == "eval":
        if "--hum" in argv:
            from . import hum_eval as chosen
        elif "--listen" in argv:
            from . import listen_eval as chosen
        else:
            from . import eval as chosen
        chosen.add_arguments(parser)
        args = parser.parse_args(argv)
        config = load_config(data_dir=data_dir)
        configure_threads(config.torch_threads, config.torch_interop_threads)
        return chosen.run(config, args)
    if command == "ingest-memory":
        from . import ingest_memory
        ingest_memory.add_arguments(parser)
        return ingest_memory.run(parser.parse_args(argv))
    if command == "busy":
        from . import busy
        busy.add_arguments(parser)
        return busy.run(parser.parse_args(argv))
    if command == "speed":
        from . import speed
        speed.add_arguments(parser)
        return speed.run(parser.parse_args(argv))
    if command == "libraries":
        from . import libraries
        libraries.add_arguments(parser)
        return libraries.run(parser.parse_args(argv))
    if "--from-catalog" in argv:
        from . import learn
        learn.add_arguments(parser)
        return learn.run(load_config(data_dir=data_dir), parser.parse_args(argv))
    from . import train
    train.add_arguments(parser)
    return train.run(parser.parse_args(argv))
