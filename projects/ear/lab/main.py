"""`ear eval` and `ear train`: their options, parsed here so that the CLI needs none of the lab."""
from __future__ import annotations

import argparse

from ..config import load_config
from ..errors import EarError
from ..runtime import configure_threads


def run(command: str, argv: list[str], data_dir: str | None) -> int:
    parser = argparse.ArgumentParser(prog=f"ear {command}")
    if command == "eval":
        from . import eval as lab_eval
        lab_eval.add_arguments(parser)
        args = parser.parse_args(argv)
        config = load_config(data_dir=data_dir)
        configure_threads(config.torch_threads, config.torch_interop_threads)
        try:
            return lab_eval.run(config, args)
        except EarError as exc:
            parser.exit(1, f"ear: {exc.message}\n")
    from . import train
    train.add_arguments(parser)
    return train.run(parser.parse_args(argv))
