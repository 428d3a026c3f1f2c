"""`python -m optiq ARGS...` runs the optiq command with ARGS (e.g. `python -m optiq
serve --model DIR --port 8080`): the command bundled with the package, or the one
OPTIQ_CLI / OPTIQ_LIB point at (optiq._native.cli_path)."""
import os
import sys


def main(argv=None):
    from ._native import cli_path
    from .errors import OptiqError

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        cli = cli_path()
    except OptiqError as e:
        print("optiq: %s" % e, file=sys.stderr)
        return 127
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cli, [cli] + args)


if __name__ == "__main__":
    sys.exit(main())
