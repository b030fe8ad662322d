# syntax=docker/dockerfile:1
# Multi-stage build: the dist binary (fat LTO, see Cargo.toml) on a distroless base, run as a
# non-root user. Only buffered request bodies are written at run time, under /tmp (a volume in
# deploy/), so the root filesystem can be mounted read-only.
FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependencies first, in layers that change only with the manifests: the workspace's Cargo.toml
# files and Cargo.lock, with every crate's sources replaced by empty stubs (each target Cargo
# expects must exist), so that `cargo build` compiles all dependencies and nothing of ours. A
# change to the sources alone starts from the next COPY, with the dependencies already built.
COPY Cargo.toml Cargo.lock ./
COPY crates/model/Cargo.toml crates/model/
COPY crates/translate/Cargo.toml crates/translate/
COPY crates/test-support/Cargo.toml crates/test-support/
COPY proxy/Cargo.toml proxy/
COPY controller/Cargo.toml controller/
COPY e2e/Cargo.toml e2e/
RUN for crate in crates/model crates/translate crates/test-support proxy controller e2e; do \
      mkdir -p "$crate/src" && touch "$crate/src/lib.rs"; \
    done \
 && mkdir -p crates/test-support/src/bin crates/model/benches crates/translate/benches \
 && for main in controller/src/main.rs crates/test-support/src/bin/echo.rs \
      crates/model/benches/route.rs crates/translate/benches/translate.rs; do \
      echo 'fn main() {}' > "$main"; \
    done
RUN cargo build --profile dist --locked -p ostium --bin ostium

# The sources. COPY keeps their modification times, which may be older than the stubs' build:
# touching them makes Cargo rebuild the workspace's crates (and only those).
COPY . .
RUN find crates proxy controller e2e -name '*.rs' -exec touch {} + \
 && cargo build --profile dist --locked -p ostium --bin ostium

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/dist/ostium /usr/local/bin/ostium
USER nonroot:nonroot
EXPOSE 8080 8443 10254
ENTRYPOINT ["/usr/local/bin/ostium"]
