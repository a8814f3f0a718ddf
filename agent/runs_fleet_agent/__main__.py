"""``python -m runs_fleet_agent``: run the agent with the command line's arguments."""

import sys

from runs_fleet_agent.cli import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
