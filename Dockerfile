# syntax=docker/dockerfile:1
# One image with every Flywheel service binary; compose picks the binary per service.
# Dependencies are built in their own cached layer (cargo-chef), so code changes rebuild fast.

FROM rust:1.95-slim-bookworm AS chef
RUN apt-get update && apt-get install -y --no-install-recommends gcc g++ make pkg-config \
    && rm -rf /var/lib/apt/lists/* \
    && cargo install cargo-chef --locked --version 0.1.73
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked \
      --bin flywheel-registry --bin flywheel-scheduler --bin flywheel-trainer-runner \
      --bin flywheel-monitor --bin flywheel-deployer

FROM debian:bookworm-slim AS runtime
# procps: the runner ends an external trainer's whole process group with /bin/kill.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates procps \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/flywheel --create-home flywheel
COPY --from=builder /src/target/release/flywheel-registry /src/target/release/flywheel-scheduler \
     /src/target/release/flywheel-trainer-runner /src/target/release/flywheel-monitor \
     /src/target/release/flywheel-deployer /usr/local/bin/
USER flywheel
WORKDIR /var/lib/flywheel
EXPOSE 8080 8081 8082 8083 8084
CMD ["flywheel-registry"]
