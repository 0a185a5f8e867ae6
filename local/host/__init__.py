"""A local stand-in for the Azure Functions host, running the same decorated functions.

Core Tools cannot be installed offline; `azure-functions` lets us index `function_app.app` the
way the real worker does and drive each trigger against the local emulators. It is a dev/test
harness: production scale-out is Azure Functions.
"""
