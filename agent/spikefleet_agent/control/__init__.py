"""The agent's side of the control channel: one stream to the server, and program installs."""
