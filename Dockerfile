# mosemu as a container: a static binary on an empty base image.
#   docker build -t mosemu .
#   docker run --rm -p 127.0.0.1:1883:1883 mosemu fleet --count 100 --broker-addr 0.0.0.0:1883 --http 0.0.0.0:20000
# deploy/k8s/fleet.yaml runs a sharded fleet as a StatefulSet.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO off: a static binary that needs no libc in the final image.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/mosemu ./cmd/mosemu \
 && mkdir -p /out/state /out/tmp

FROM scratch
COPY --from=build /out/mosemu /mosemu
# Writable directories for a non-root user: device state and temp files.
COPY --from=build --chown=65532:65532 /out/state /state
COPY --from=build --chown=65532:65532 /out/tmp /tmp
USER 65532:65532
ENV HOME=/state
VOLUME /state
# 1883: embedded MQTT broker; 9100: Prometheus metrics (--metrics);
# device HTTP/WebSocket servers from the --http base port up.
EXPOSE 1883 9100
ENTRYPOINT ["/mosemu"]
CMD ["fleet", "--state", "/state/fleet", "--broker-addr", "0.0.0.0:1883", "--http", "0.0.0.0:20000", "--metrics", "0.0.0.0:9100"]
