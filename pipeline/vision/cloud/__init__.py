"""Providers that call a cloud vision service (today Azure AI Vision Image Analysis 4.0)."""
