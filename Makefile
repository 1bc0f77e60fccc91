# mosemu — see README.md. `make run` starts a default ESP32 device, `make test`
# runs the whole suite (installing the interop peers it needs first).
GO       ?= go
STATE    ?= state/default
ARCH     ?= esp32
HTTP     ?= 127.0.0.1:8080
BROKER   ?= 127.0.0.1:1883
UI       ?= 127.0.0.1:9090
BIN      := bin/mosemu
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@2025.1.1

.PHONY: build install run test test-deps test-short bench lint fuzz clean

build:
	$(GO) build -o $(BIN) ./cmd/mosemu

# Installs mosemu into $(go env GOBIN), or $(go env GOPATH)/bin when GOBIN
# is unset: put that directory on PATH (see README).
install:
	$(GO) install ./cmd/mosemu

run: build
	./$(BIN) run --arch $(ARCH) --state $(STATE) --http $(HTTP) --broker-addr $(BROKER) --ui $(UI)

# Interop peers: esptool-js (npm) for the ROM loader, mosquitto, openssl and
# curl (Debian) for MQTT and TLS. Installed only when missing.
test-deps:
	@./.ci/deps.sh

test: test-deps
	$(GO) vet ./...
	$(GO) test -race -timeout 15m ./...

test-short:
	$(GO) test -short ./...

bench:
	$(GO) run ./cmd/mosemu bench --out BENCHMARKS.md

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# Short fuzzing pass over every fuzz target (FUZZTIME per target).
FUZZTIME ?= 10s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf bin
