# Channels deployment kit: thin wrappers around the operators' scripts (scripts/), the engines'
# (deploy/), the load tests and benchmarks (loadtest/bin/) and docker compose.
# `make` (or `make help`) lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

N ?= 8
SERVICE ?= worker

.PHONY: help up down clean ps logs status scale native-up native-down deploy restart swarm-nodes \
	swarm-nodes-down swarm-up swarm-deploy swarm-down build base-images lint test bench-layer \
	bench-relay bench-routing loadtest loadtest-ui loadtest-down scaling bench-broadcast bench-sockets \
	bench

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

up: ## Build and start the stack (installs Docker if needed), wait until healthy, print the URL
	@scripts/up

down: ## Stop and remove the stack's containers (data volumes are kept)
	@scripts/down

clean: ## Like down, and also delete the data volumes
	@scripts/down --volumes

ps: ## Show the stack's containers and their health
	@docker compose ps

logs: ## Follow the logs of every service
	@docker compose logs --follow --tail=100

status: ## Queue depth, oldest message age and busy workers of the running stack, e.g. STATUS_ARGS=--json
	@scripts/status $(STATUS_ARGS)

scale: ## Run N replicas of SERVICE (default: worker), e.g. `make scale N=8`
	@docker compose up --detach --no-recreate --wait --scale $(SERVICE)=$(N) $(SERVICE)

native-up: ## The stack without Docker, in the foreground (Ctrl-C stops it), e.g. NATIVE_MODE=one-process
	@deploy/native/up

native-down: ## Stop what `make native-up` runs (from another terminal); no process is left
	@deploy/native/down

deploy: ## Roll the workers onto new code one at a time, dropping nothing, e.g. `make deploy TAG=v2 CANARY=0.25`
	@scripts/rollout $(if $(TAG),--tag $(TAG)) $(if $(CANARY),--canary $(CANARY)) $(DEPLOY_ARGS)

restart: ## Restart the containers that run your code one at a time on the image they run (after a settings change), dropping nothing
	@scripts/rollout --no-build $(DEPLOY_ARGS)

swarm-nodes: ## Try Docker Swarm on this one machine: N nodes in containers (default 3) holding the kit's images, e.g. `make swarm-nodes N=3`
	@deploy/swarm/nodes up $(N)

swarm-nodes-down: ## Remove the nodes `make swarm-nodes` started
	@deploy/swarm/nodes down

swarm-up: ## Deploy the stack to the Docker Swarm the docker CLI talks to (DOCKER_HOST; docs/several-machines.md)
	@deploy/swarm/up

swarm-deploy: ## Roll the Swarm stack's workers onto a new image; Swarm rolls a failing one back, e.g. `make swarm-deploy TAG=v2`
	@deploy/swarm/deploy $(if $(TAG),--tag $(TAG))

swarm-down: ## Remove the Swarm stack and the secrets it made (volumes stay on their nodes)
	@deploy/swarm/down

build: ## Build the kit's images (base images first, when missing)
	@scripts/build

base-images: ## Build local stand-ins for the base images when no registry answers
	@scripts/build-base-images

lint: ## ruff over the Python code: lint rules, then formatting
	@scripts/lint

test: ## Run the whole test suite: lint, the package and docs, unit tests in the image, end-to-end against the real stack
	@scripts/test

bench-layer: ## Channel backends side by side, then the Redis layer vs stock channels_redis (~6 min), e.g. BENCH_ARGS='--part backends'
	@loadtest/bin/bench-layer $(BENCH_ARGS)

bench-relay: ## Benchmark relay mode against direct mode side by side: HTTP, WebSocket echo, fan-out (~10 min)
	@loadtest/bin/bench-relay $(BENCH_ARGS)

bench-routing: ## Benchmark uWSGI vs Daphne pages behind nginx, and nginx vs direct Daphne (~2.5 min, printed)
	@loadtest/bin/bench-routing

loadtest: ## Headless Locust run against the running stack, e.g. `make loadtest USERS=500 DURATION=2m SCENARIO=chat`
	@loadtest/bin/loadtest $(LOCUST_ARGS)

loadtest-ui: ## Locust's web UI (master + LOCUST_WORKERS=2 workers) on 127.0.0.1:8089 (LOCUST_PORT)
	@loadtest/bin/loadtest-ui

loadtest-down: ## Stop Locust's web UI and its workers
	@loadtest/bin/loadtest-ui --down

scaling: ## Scaling report: tasks/s and relay-mode req/s vs workers 1-8, pages vs Daphne 1-2, fan-out vs shards 1-4 (~12 min)
	@loadtest/bin/scaling

bench-broadcast: ## The field's broadcast benchmark: the kit (direct, relay) vs a reference server, clients at p95 <= 500 ms
	@loadtest/bin/bench-broadcast $(BENCH_ARGS)

bench-sockets: ## Idle WebSockets per Daphne process (direct, relay) vs a reference server: count, KB each, limits
	@loadtest/bin/bench-sockets $(BENCH_ARGS)

bench: ## The kit's promised ratios side by side: routing, layer, workers, relay/direct, broadcast, sockets (~27 min)
	@loadtest/bin/bench
