# The two commands of the quick start: `make run` and `make test`. Both do all set-up first.
.PHONY: setup run test lint bench down status package

PY := .venv/bin/python

setup:
	@bash scripts/setup.sh

run: setup
	@$(PY) -m pipeline up --detach
	@$(PY) -m pipeline submit samples --wait --download .darkroom/published
	@$(PY) -m pipeline status
	@echo
	@echo "Results: python -m pipeline show <id or name>  (e.g. .venv/bin/python -m pipeline show dog-bicycle.jpg)"
	@echo "Published derivatives (faces anonymised, no GPS): .darkroom/published/ (blobs: container 'published')"
	@echo "Web page and its key: the 'web page:' line status printed above (from the running host)"
	@echo "Stop: .venv/bin/python -m pipeline down   (health: the URL status printed above)"

test: setup
	@bash scripts/test.sh

# The deployment zip (dist/darkroom-<version>.zip): what `az functionapp deploy --type zip` uploads.
package: setup
	@$(PY) -m local.package

lint: setup
	@.venv/bin/ruff check .

down:
	@$(PY) -m pipeline down

status:
	@$(PY) -m pipeline status
