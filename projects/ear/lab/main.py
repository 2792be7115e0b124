"""`ear eval` and `ear train`: their options, parsed here so that the CLI needs none of the lab."""
from __future__ import annotations

import argparse

from ..config import load_config
from ..runtime import configure_threads


def run(command: str, argv: list[str], data_dir: str | None) -> int:
    """Run `ear eval` or `ear train` with their own arguments (errors: the CLI's)."""
    parser = argparse.ArgumentParser(prog=f"ear {command}")
    if command == "eval":
        from . import eval as lab_eval
        lab_eval.add_arguments(parser)
        args = parser.parse_args(argv)
        config = load_config(data_dir=data_dir)
        configure_threads(config.torch_threads, config.torch_interop_threads)
        return lab_eval.run(config, args)
    from . import train
    train.add_arguments(parser)
    return train.run(parser.parse_args(argv))
