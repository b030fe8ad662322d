# syntax=docker/dockerfile:1
# Multi-stage build: the release binary on a distroless base, run as a non-root user. Only
# buffered request bodies are written at run time, under /tmp (a volume in deploy/), so the root
# filesystem can be mounted read-only.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ostium --bin ostium

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/ostium /usr/local/bin/ostium
USER nonroot:nonroot
EXPOSE 8080 8443 10254
ENTRYPOINT ["/usr/local/bin/ostium"]
