# sms-relay image: `docker build -t sms-relay .`
# The migrations are embedded in the binary at build time; the runtime image needs no SQL files.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY build.rs ./
COPY migrations ./migrations
RUN cargo build --release --locked --bin sms-relay

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sms-relay
COPY --from=builder /src/target/release/sms-relay /usr/local/bin/sms-relay
# Defaults only; mount your own file over it or point SMS_RELAY_CONFIG elsewhere.
COPY config/sms-relay.example.toml /etc/sms-relay/sms-relay.toml
ENV SMS_RELAY_CONFIG=/etc/sms-relay/sms-relay.toml
USER sms-relay
# Exec form: sms-relay is PID 1 and receives SIGTERM itself (graceful shutdown).
ENTRYPOINT ["sms-relay"]
CMD ["run"]
