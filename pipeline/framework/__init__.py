"""The step framework: what a step author sees — the message contract, the step API a step
imports, the image document and the registry that finds steps and checks a route."""
