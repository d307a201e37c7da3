# The two commands of the README: `make demo` and `make test`. Each installs what it needs first.
.PHONY: demo test unit integration lint bootstrap cluster-up cluster-down

VENV := .venv/bin

bootstrap:
	dev/bootstrap

demo: bootstrap
	$(VENV)/hegui demo

# The whole suite: lint, unit tests, then the integration tests on the local control plane.
test: bootstrap
	dev/run-tests

unit: bootstrap
	$(VENV)/pytest -m "not cluster and not triton and not prometheus and not profiles and not images and not realnode" -q

lint: bootstrap
	$(VENV)/ruff check .
	$(VENV)/mypy
	$(VENV)/lint-imports

cluster-up: bootstrap
	$(VENV)/hegui cluster up

cluster-down:
	$(VENV)/hegui cluster down
