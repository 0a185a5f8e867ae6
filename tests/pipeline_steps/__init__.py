"""Custom steps that live outside steps/: named in PIPELINE_STEPS by their dotted module path."""
