# otad — see README.md. Every target runs from a fresh clone on Debian 12.
GO        ?= go
BIN       := bin
LDFLAGS   := -s -w
GOFLAGS_B := -trimpath
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
export CGO_ENABLED ?= 0

.PHONY: all build cross test unit fuzz lint bench bench-delta bench-fleet demo deps deps-check vmtest vmtest-quick vmtest-rpi powercut clean

all: build

build:
	$(GO) build $(GOFLAGS_B) -o $(BIN)/otad ./cmd/otad
	ln -sf otad $(BIN)/otactl

# Device binaries must stay within 8 MiB each (issue 6).
CROSS_BUDGET := 8388608
cross:
	GOOS=linux GOARCH=arm GOARM=7 $(GO) build $(GOFLAGS_B) -tags otad_device,nethttpomithttp2 -ldflags '$(LDFLAGS)' -o $(BIN)/linux-armv7/otad ./cmd/otad
	GOOS=linux GOARCH=arm64 $(GO) build $(GOFLAGS_B) -tags otad_device,nethttpomithttp2 -ldflags '$(LDFLAGS)' -o $(BIN)/linux-arm64/otad ./cmd/otad
	@for f in $(BIN)/linux-armv7/otad $(BIN)/linux-arm64/otad; do \
	  s=$$(stat -c %s $$f); printf '%-26s %9d bytes (%.2f MiB)\n' $$f $$s $$(echo "$$s/1048576" | bc -l); \
	  if [ $$s -gt $(CROSS_BUDGET) ]; then echo "$$f is over the $(CROSS_BUDGET)-byte budget (issue 6)"; exit 1; fi; done
	@# A reachable reflect.Value.Method/Type.Method (godbus conn.Export, text/template, ...) makes the linker keep
	@# every exported method of every reachable type: +1.2 MiB on armv7. -dumpdep shows the chain.
	@out=$$(GOOS=linux GOARCH=arm GOARM=7 $(GO) build $(GOFLAGS_B) -tags otad_device,nethttpomithttp2,otad_reflectcheck -ldflags '$(LDFLAGS) -dumpdep' -o $(BIN)/.reflectcheck ./cmd/otad 2>&1 | grep -F '<ReflectMethod>' | head -5); \
	  rm -f $(BIN)/.reflectcheck; if [ -n "$$out" ]; then echo "device build reaches a reflect method call (dead method elimination off):"; echo "$$out"; exit 1; fi

# The README's test command: installs what the tests need, then the default suite.
test: deps unit lint fuzz

unit: build
	# yocto's gomod-list check hashes every go.sum module's zip in the
	# module cache, which a fresh machine's build alone does not fetch.
	$(GO) mod download all
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 15m ./...

fuzz:
	scripts/fuzz.sh 5s

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

bench: build deps
	scripts/bench.sh

bench-delta: build deps
	scripts/bench-delta.sh

# 100,000 simulated channel devices against nginx on loopback, and serve's RSS with [channel] on/off.
bench-fleet: build deps
	scripts/bench-fleet.sh

demo: build deps
	scripts/demo.sh

deps:
	@scripts/deps.sh

# Every package in scripts/deps.list installed and every command it lists on
# PATH; names the missing one. First step of .ci/run.
deps-check:
	@scripts/deps-check.sh

vmtest: build deps
	test/vm/run.sh all

vmtest-quick: build deps
	test/vm/run.sh quick

# The Raspberry Pi tier (QEMU raspi3b, Pi U-Boot with its env on FAT): the
# good update, rollback and commit, and 2x20 power cuts (redundant and stock
# FAT env side by side). ~26 min measured on 2 cores shared with three other
# jobs; its CPU time puts it near 12 min alone (test/vm/README.md). .ci/run
# calls it after vmtest.
vmtest-rpi: build deps
	test/vm/run.sh rpi-update,rpi-power-cuts

powercut: deps
	OTAD_POWERCUT=full $(GO) test -count=1 -timeout 30m -run PowerCut -v ./internal/powercut/

clean:
	rm -rf $(BIN)
