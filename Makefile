# mosemu — see README.md. `make run` starts a default ESP32 device, `make test`
# runs the whole suite (installing the interop peers it needs first).
GO       ?= go
STATE    ?= state/default
ARCH     ?= esp32
HTTP     ?= 127.0.0.1:8080
BROKER   ?= 127.0.0.1:1883
UI       ?= 127.0.0.1:9090
BIN      := bin/mosemu
# staticcheck 2025.1.1 as the Go module proxy serves it (works with Go 1.26).
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.6.1

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

# FLEET: fleet sizes measured (make bench FLEET=1000,10000 adds the 10,000-device run).
FLEET ?= 1000
bench:
	$(GO) run ./cmd/mosemu bench --out BENCHMARKS.md --fleet $(FLEET)

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# Short fuzzing pass over every fuzz target (FUZZTIME per target). Only the
# packages that have fuzz targets are built.
FUZZTIME ?= 10s
fuzz:
	@for dir in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -h '^func Fuzz' $$dir/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    echo "== $$dir $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$dir || exit 1; \
	  done; \
	done

clean:
	rm -rf bin
