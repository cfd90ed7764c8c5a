"""The agent stays light: importing it (and the agent client) never imports torch."""

from __future__ import annotations

import subprocess
import sys


def test_agent_and_its_client_never_import_torch() -> None:
    code = (
        "import sys\n"
        "import spikefleet_agent.cli, spikefleet_agent.daemon, spikefleet.client.agent\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
