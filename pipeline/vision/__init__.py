"""Vision analyzers: one interface (base.py), local offline providers and Azure AI Vision."""
