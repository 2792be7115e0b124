"""`ear eval`: placeholder until the benchmark lands."""
def add_arguments(parser):
    parser.add_argument("--catalog")


def run(config, args):
    return 0
