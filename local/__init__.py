"""The laptop side of Darkroom: never deployed (see .funcignore).

- `local.host`: a stand-in for the Functions host that runs the same decorated functions of
  function_app.py against the emulators, with host.json's queue semantics and Event Grid.
- `local.emulators`: Azurite and the Cosmos DB emulator, started and stopped.
- `local.cli`: `python -m pipeline …`, its parser: the commands are in `local.stack` (up, down,
  host) and `local.operator_client` (the operator commands; they work against Azure too).
- `local.provision`: creates what Bicep creates on Azure, for the emulators.
- `local.package`: builds the deployment zip.
"""
