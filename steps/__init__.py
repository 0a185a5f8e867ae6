"""Pipeline steps: one module per step, pure image work, no Azure SDK imports.

A step module defines `manifest` (a `pipeline.framework.step_api.StepManifest` whose `name` equals
the
module's name) and `run(ctx: StepContext) -> dict`, returning the document fields it produced.
Drop a module here and add its name to `PIPELINE_STEPS`; the pipeline registers a queue-triggered
function for it, derives its queue name and records its result. Nothing else needs editing.
"""
