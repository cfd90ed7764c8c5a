"""Library advice in CLI words: an error or note naming an argument names its flag."""

from __future__ import annotations

# Library errors name the argument that would change the outcome; on the command
# line the same advice names the flag.
ARGUMENT_FLAGS = (
    (
        "pass trusted keys to check it (or verify=False to skip it)",
        "pass --trusted KEY.pub (or a directory of .pub files) to check it",
    ),
    ("pass allow_beta=True", "pass --allow-beta"),
    ("pass allow_shift=True", "pass --allow-shift"),
    ("pass input_spec= (or --input-spec FILE)", "pass --input-spec FILE"),
    # the server's messages name request fields
    ("(Client(token=...))", "(pass --token or SPIKEFLEET_TOKEN)"),
    ("a state_dict with arch=", "a state_dict with --arch"),
    ("(canary_count or canary_percent)", "(--canary N or --canary P%)"),
    ("set force=true", "pass --force"),
)


def cli_advice(message: str) -> str:
    """``message`` with library arguments replaced by the flags that set them."""
    for argument, flag in ARGUMENT_FLAGS:
        message = message.replace(argument, flag)
    return message
