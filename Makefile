# Channels deployment kit: thin wrappers around scripts/ and docker compose.
# `make` (or `make help`) lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

N ?= 8
SERVICE ?= worker

.PHONY: help up down clean ps logs scale build base-images lint test

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

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

scale: ## Run N replicas of SERVICE (default: worker), e.g. `make scale N=8`
	@docker compose up --detach --no-recreate --wait --scale $(SERVICE)=$(N) $(SERVICE)

build: ## Build the kit's images (base images first, when missing)
	@scripts/build

base-images: ## Build local stand-ins for the base images when no registry answers
	@scripts/build-base-images

lint: ## ruff over the Python code
	@scripts/lint

test: ## Run the whole test suite: lint, unit tests in the image, end-to-end against the real stack
	@scripts/test
