# syntax=docker/dockerfile:1
# decnet-events as a container: built on Debian with the pinned toolchain,
# run on distroless as a non-root user, the binary and nothing else.
#
#   docker build -t decnet-events .
#   docker run -p 8000:8000 decnet-events            # the embedded demo
#   docker run -p 8000:8000 --env-file /opt/decnet/.env.local \
#       -v /run/decnet:/run/decnet -v /opt/decnet:/opt/decnet \
#       -e DECNET_BUS_SOCKET=/run/decnet/bus.sock -e DECNET_DB_PATH=/opt/decnet/decnet.db \
#       decnet-events                                 # on a DECNET host (docs/DEPLOY.md)

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# SQLite compiled in (sqlite-bundled): distroless has no libsqlite3.
RUN cargo build --release --locked -p decnet-events --features sqlite-bundled \
    && install -D -m 0755 target/release/decnet-events /out/decnet-events

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/decnet-events /usr/local/bin/decnet-events
ENV DECNET_BIND=0.0.0.0:8000
EXPOSE 8000
USER nonroot:nonroot
# distroless has no curl: the binary probes its own /readyz.
HEALTHCHECK --interval=10s --timeout=6s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/decnet-events", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/decnet-events"]
CMD ["serve"]
