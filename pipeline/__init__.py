"""Darkroom's framework: message contract, routing, settings, Azure clients, results store,
local host and CLI. Steps (in `steps/`) never import from Azure; this package does."""
