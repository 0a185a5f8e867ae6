"""The chain engine: what moves a message from queue to queue — ingest of an upload, the runner
and the context it gives a step, compute slots, the claim check for large messages, the stall
sweep, the sync path of the API, completion events and the operator actions that requeue."""
