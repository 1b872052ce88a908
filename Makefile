# The README's two commands are `make demo` and `make test`; both set up from nothing.
.PHONY: setup up demo test lint down status bench

setup:
	@bash scripts/setup.sh

demo: setup        ## bring the local stack up and run the month-of-meetings demo
	@.venv/bin/chibo demo

test: setup        ## lint and type-check, then every test against the real Kafka and PostgreSQL
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@.venv/bin/mypy shared services ops generator bench tests
	@.venv/bin/pytest

lint: setup
	@.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy shared services ops generator bench tests

up: setup          ## start the local stack without running the demo
	@.venv/bin/chibo stack up

down:              ## stop the local stack (data stays in .local/)
	@.venv/bin/chibo stack down

status:
	@.venv/bin/chibo stack status

bench: setup       ## run the benchmarks on a throw-away local stack
	@.venv/bin/python -m bench
