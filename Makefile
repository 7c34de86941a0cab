# Export service. `make run` shows it working; `make test` proves it.
GO ?= go

.PHONY: run test build vet bench redis-server

## run: the demo: an embedded Redis and worker export a 384 KiB sample in about 4 s
run:
	$(GO) run ./cmd/enqueuer demo

## test: every test, under the race detector (installs redis-server if missing)
test: redis-server
	$(GO) test -race -count=1 -timeout 14m ./...

## build: bin/enqueuer and bin/worker
build:
	$(GO) build -o bin/enqueuer ./cmd/enqueuer
	$(GO) build -o bin/worker ./cmd/worker

## bench: performance targets as ratios measured in one run: a 1 GiB export
## against raw RPUSH, 10,000 small exports against asynq no-op tasks, cancel
## latency over 250 running exports, worker RSS (a few minutes)
bench: redis-server
	$(GO) run ./internal/benchmark

## vet: go vet
vet:
	$(GO) vet ./...

## chaos: kill, freeze and stop workers and restart Redis while exports run; check every export byte for byte (15-25 min)
.PHONY: chaos
chaos: redis-server
	$(GO) run ./internal/chaos

# The tests start real redis-server processes of their own (never a running
# service). Install it with apt-get when we may; otherwise say how.
redis-server:
	@if ! command -v redis-server >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "redis-server not found: installing it with apt-get"; \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server && command -v redis-server >/dev/null; \
		else \
			echo "redis-server not found: install it first, e.g. 'sudo apt-get install -y redis-server' (or 'brew install redis')" >&2; \
			exit 1; \
		fi; \
	fi
