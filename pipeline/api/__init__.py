"""The HTTP API that web and mobile apps use: uploads, results, the sync path, the page.

A FastAPI application (`pipeline.api.app`) run by the Functions host through one catch-all
HTTP function (see function_app.py), so routing, request validation and the OpenAPI 3.1
document all come from one library and from the same pydantic models the code uses.
"""
