"""`python -m parley.serve [daphne options] parley.asgi:application`: daphne on uvloop's event loop.

Daphne creates its event loop when `daphne.server` is imported (it installs Twisted's asyncio
reactor on it), so the uvloop policy has to be set before that import; this launcher does that and
then runs daphne's own command line unchanged. Without uvloop installed it is plain daphne.
Measured with bench/load.py: see docs/benchmarks.md.
"""

import asyncio


def main() -> None:
    try:
        import uvloop
    except ImportError:
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # Imports daphne.server, which creates the event loop: only now, with the policy set.
    from daphne.cli import CommandLineInterface

    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
